"""Turning engine snapshots and results into rich output.  The engine never
imports this."""

from __future__ import annotations

from collections import Counter

from rich.console import Console, Group, RenderableType
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
from rich.text import Text

from segdl.engine.rules.lifecycle import ACTIVE, COMPLETE, FAILURES
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


#: A job of more files than this ends with its counts and its failures, not a row per file.
SUMMARY_ROWS = 50


def print_summary(console: Console, results: Results, nodes: list[str] | None = None) -> None:
    """Print :func:`summary`: its line of counts as one line, which the
    terminal wraps for show and a pipe gets whole."""
    for part in summary(results, nodes):
        console.print(part, soft_wrap=isinstance(part, Text))


def summary(results: Results, nodes: list[str] | None = None) -> list[RenderableType]:
    """A job's end: one row per file; ``nodes``: where each landed
    (``--ray``).  A job of more than :data:`SUMMARY_ROWS` files gets a line
    of counts by state and a row for each file that failed (up to that
    many): 20,000 rows took rich 10 s to draw, after a 10 s download, and
    nobody reads them (``segdl status --files`` lists the journal's files)."""
    if len(results) <= SUMMARY_ROWS:
        return [_table(results, range(len(results)), nodes)]
    failed = [i for i, r in enumerate(results) if r.status in FAILURES]
    counts = Counter(r.status for r in results)
    states = ", ".join(f"{n:,} {state}" for state, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    size = sum(r.size or 0 for r in results if r.status in COMPLETE)
    what = "results (a file on each node it went to)" if nodes else "files"
    line = f"{len(results):,} {what}: {states} ({size / 1e6:,.1f} MB complete)."
    listing = "`segdl status --files` lists the journal's files (`--limit N` past 1,000"
    if not failed:
        return [Text(f"{line} {listing}).")]
    which = "The failed ones" if len(failed) <= SUMMARY_ROWS else f"The first {SUMMARY_ROWS} failed"
    flags = " ".join(f"--state {state}" for state in sorted({results[i].status for i in failed}))
    return [Text(f"{line} {which} below; {listing}, `{flags}` for these)."),
            _table(results, failed[:SUMMARY_ROWS], nodes)]


def _table(results: Results, rows, nodes: list[str] | None) -> Table:
    t = Table(title=None, show_lines=False)
    for col in ("status", "path", "size", "seconds", "detail") + (("node",) if nodes else ()):
        t.add_column(col, overflow="fold")
    colours = {"done": "green", "skipped": "cyan", "failed": "red", "hash_mismatch": "magenta"}
    for i in rows:
        r = results[i]
        t.add_row(
            cell(r.status, colours.get(r.status, "white")),
            cell(r.path),
            "" if r.size is None else f"{r.size:,}",
            f"{r.seconds:.1f}",
            cell(r.error or (f"blake3 {r.blake3[:16]}…" if r.blake3 else "")),
            *((cell(nodes[i]),) if nodes else ()),
        )
    return t
