"""Turning engine snapshots and results into rich output.  The engine never
imports this."""

from __future__ import annotations

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from segdl.engine.rules.lifecycle import ACTIVE
from segdl.engine.rules.progress import Snapshot
from segdl.engine.values.results import Results

from .console import cell, shown


class LiveView:
    """A rich live view: one row per active file plus the job total."""

    MAX_ROWS = 12

    def __init__(self, console: Console) -> None:
        self.console = console
        cols = (
            TextColumn("{task.description}", markup=False, table_column=None),
            BarColumn(bar_width=None),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        self.files = Progress(*cols, console=console, expand=True)
        self.total = Progress(*cols, console=console, expand=True)
        self.total_task = self.total.add_task("total", total=None)
        self.tasks: dict[int, TaskID] = {}
        self.live = Live(Group(self.total, self.files), console=console, refresh_per_second=8, transient=False)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)

    def update(self, snap: Snapshot) -> None:
        self.total.update(
            self.total_task,
            description=f"total [{snap.finished}/{snap.total_files} files]",
            completed=snap.done,
            total=snap.size or None,
        )
        active = [f for f in snap.files if f.state in ACTIVE]
        rows = {f.id for f in active[: self.MAX_ROWS]}
        for fid in list(self.tasks):
            if fid not in rows:
                self.files.remove_task(self.tasks.pop(fid))
        for f in active[: self.MAX_ROWS]:
            name = f.path.rsplit("/", 1)[-1]
            label = shown(name[:40]) + (" (verifying)" if f.state == "verifying" else "")
            if f.id not in self.tasks:
                self.tasks[f.id] = self.files.add_task(label, total=f.size)
            self.files.update(self.tasks[f.id], description=label, completed=f.done, total=f.size)


def summary_table(results: Results, nodes: list[str] | None = None) -> Table:
    """One row per file; ``nodes``: where each landed (``--ray``)."""
    t = Table(title=None, show_lines=False)
    for col in ("status", "path", "size", "seconds", "detail") + (("node",) if nodes else ()):
        t.add_column(col, overflow="fold")
    colours = {"done": "green", "skipped": "cyan", "failed": "red", "hash_mismatch": "magenta"}
    for i, r in enumerate(results):
        t.add_row(
            cell(r.status, colours.get(r.status, "white")),
            cell(r.path),
            "" if r.size is None else f"{r.size:,}",
            f"{r.seconds:.1f}",
            cell(r.error or (f"blake3 {r.blake3[:16]}…" if r.blake3 else "")),
            *((cell(nodes[i]),) if nodes else ()),
        )
    return t
