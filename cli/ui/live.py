"""The live screen: the job's total, a table of its files (name, size,
state, progress, speed, ETA, limit, priority, mirror, error) refreshed from
the engine a few times a second, and the keys that change a file or the
job while it runs."""

from __future__ import annotations

import asyncio
import os

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from segdl.engine.rules.lifecycle import COMPLETE, DOWNLOADING, FAILURES, FINAL, PAUSED, VERIFIED, VERIFYING

from ..console import shown
from . import fmt
from .client import ClientError
from .dialogs import ConfirmDialog, LimitDialog, UrlDialog

# A job of more files than BIG shows its moving files, its first failures
# and the RECENT files that finished last, not every file: a table of
# 100,000 rows, refreshed twice a second, would freeze the screen.
BIG = 2000
RECENT = 100
MOVING = (DOWNLOADING, VERIFYING, VERIFIED, PAUSED)

COLUMNS = ("name", "size", "state", "progress", "speed", "eta", "limit", "prio", "mirror", "error")
STYLES = {"done": "green", "skipped": "green", "failed": "red", "hash_mismatch": "red", "paused": "yellow",
          "removed": "dim", "downloading": "cyan"}


def shown_state(f: dict) -> str:
    return "paused" if f.get("paused") and f["state"] not in FINAL else f["state"]


def cells(f: dict, name: str) -> dict[str, object]:
    """One file's row of the table."""
    state = shown_state(f)
    done = fmt.done_bytes(f)
    speed = fmt.live_speed(f)
    size = f.get("size")
    eta = fmt.eta(None if size is None else size - done, speed)
    return {
        "name": Text(shown(name)),
        "size": Text(fmt.size(size), justify="right"),
        "state": Text(state, style=STYLES.get(state, "")),
        "progress": Text("" if state == "removed" else fmt.bar(done, size)),
        "speed": Text(fmt.rate(speed), justify="right"),
        "eta": Text(fmt.duration(eta), justify="right"),
        "limit": Text(fmt.rate(f.get("max_speed")), justify="right"),
        "prio": Text(str(f.get("priority") or 0), justify="right"),
        "mirror": Text(shown(fmt.mirror(f))),
        "error": Text(shown(f.get("error") or ""), style="red"),
    }


class FileTable(DataTable):
    """A DataTable that repaints when its columns change width.

    DataTable measures updated cells when it is idle; a column that grows
    while another shrinks by as much leaves the table's size unchanged,
    so it neither clears its line caches nor repaints, and shows rows cut
    at the old widths (seen as "256." for "256.0 KiB").  This repaints
    then.  It uses DataTable's own cache-clearing step, a private name,
    (as of textual 8.2)."""

    async def _on_idle(self, event) -> None:
        before = [c.content_width for c in self.ordered_columns] if self._updated_cells else None
        await super()._on_idle(event)
        if before is not None and before != [c.content_width for c in self.ordered_columns]:
            self._update_count += 1
            self._clear_caches()
            self.refresh()


class LiveScreen(Screen):
    """The files of ``jobs`` (more join: a URL added, a retry)."""

    BINDINGS = [
        Binding("space", "pause", "pause/resume"),
        Binding("plus", "priority(1)", "prio+", key_display="+"),
        Binding("minus", "priority(-1)", "prio-", key_display="-"),
        Binding("l", "limit", "limit"),
        Binding("d", "drop", "drop"),
        Binding("r", "retry", "retry failed"),
        Binding("a", "add", "add URL"),
        Binding("q", "quit", "quit"),
    ]
    DEFAULT_CSS = """
    LiveScreen #totals { height: 1; padding: 0 1; text-style: bold; }
    LiveScreen DataTable { height: 1fr; }
    """

    def __init__(self, client, jobs: set[int], poll: float = 0.5, job_fields: dict | None = None,
                 big: int = BIG, recent: int = RECENT) -> None:
        super().__init__()
        self.big, self.recent = big, recent
        self.finished: list[int] = []  # a big job's final files shown, oldest first
        self.counts: dict[str, int] | None = None  # a big job's files by state
        self.client = client
        self.job_fields = dict(job_fields or {})  # of a URL added with a (its dest, attached)
        self.jobs = set(jobs)
        self.poll = poll
        self.rows: dict[int, dict] = {}  # file id -> its latest view
        self.dests: dict[int, str] = {}  # job id -> its folder
        self.limit = 0  # the job's speed limit (bytes/s, 0: none)
        self._polling = False

    def compose(self) -> ComposeResult:
        yield Static("", id="totals", markup=False)
        yield FileTable(cursor_type="row", zebra_stripes=True)
        yield Footer()

    async def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key in COLUMNS:
            table.add_column(key, key=key)
        await self.refresh_files()
        self.set_interval(self.poll, self.refresh_files)

    # ------------------------------------------------------------ reading

    def label(self, f: dict) -> str:
        dest = self.dests.get(f["job"])
        path = f["path"]
        if dest and path.startswith(dest.rstrip(os.sep) + os.sep):
            return path[len(dest.rstrip(os.sep)) + 1:]
        return os.path.basename(path)

    async def refresh_files(self) -> None:
        if self._polling:
            return  # the last look is still running
        self._polling = True
        try:
            files = await asyncio.to_thread(self._files)
        except ClientError as e:
            self.query_one("#totals", Static).update(f"segdl: {shown(e.message)}")
            return
        finally:
            self._polling = False
        self._show(files)

    def _files(self) -> list[dict]:
        jobs = [j for j in self.client.jobs() if j["id"] in self.jobs]
        self.dests = {j["id"]: j["dest"] for j in jobs}
        self.limit = self.client.limits()["max_speed"]
        if sum(j["files"] for j in jobs) <= self.big:
            self.counts = None
            return [f for job in sorted(self.jobs) for f in self.client.files(job=job)]
        # A big job: its moving files and first failures, and what became
        # of the files shown as moving last time (those are the recent).
        self.counts = {}
        for j in jobs:
            for k, n in j["counts"].items():
                self.counts[k] = self.counts.get(k, 0) + n
        out = [f for job in sorted(self.jobs) for states in (MOVING, tuple(FAILURES))
               for f in self.client.some_files(job, states, self.big)]
        seen = {f["id"] for f in out}
        out += [self.client.file(fid) for fid, f in self.rows.items() if f["state"] not in FINAL and fid not in seen]
        return out

    def _show(self, files: list[dict]) -> None:
        table = self.query_one(DataTable)
        for f in files:
            row = cells(f, self.label(f))
            key = str(f["id"])
            if f["id"] in self.rows:
                old = cells(self.rows[f["id"]], self.label(self.rows[f["id"]]))
                for column, value in row.items():
                    if value != old[column]:
                        table.update_cell(key, column, value, update_width=True)
            else:
                table.add_row(*(row[c] for c in COLUMNS), key=key)
            if f["state"] in COMPLETE and f["id"] not in self.finished and f["id"] in self.rows:
                self.finished.append(f["id"])
            self.rows[f["id"]] = f
        if self.counts is not None:  # a big job: the latest RECENT finished files stay
            while len(self.finished) > self.recent:
                old_id = self.finished.pop(0)
                table.remove_row(str(old_id))
                del self.rows[old_id]
        jobs = ", ".join(str(j) for j in sorted(self.jobs)) or "none"
        limit = f" · limit {fmt.rate(self.limit)}" if self.limit else ""
        totals = fmt.totals(files) if self.counts is None else fmt.counted(self.counts, files)
        self.query_one("#totals", Static).update(f"job {jobs} · {totals.line()}{limit}")

    def current_file(self) -> dict | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value
        return self.rows.get(int(key))

    # ------------------------------------------------------------ acting

    async def _do(self, fn, *args, **kwargs):
        """A command to the engine, off the UI's thread; its refusal is a
        notification, not a crash."""
        try:
            answer = await asyncio.to_thread(fn, *args, **kwargs)
        except ClientError as e:
            self.notify(shown(e.message), severity="error", timeout=6, markup=False)
            return None
        await self.refresh_files()
        return answer

    async def action_pause(self) -> None:
        f = self.current_file()
        if f is not None:
            await self._do(self.client.set_file, f["id"], paused=not f["paused"])

    async def action_priority(self, step: int) -> None:
        f = self.current_file()
        if f is not None:
            await self._do(self.client.set_file, f["id"], priority=(f.get("priority") or 0) + step)

    def action_limit(self) -> None:
        f = self.current_file()
        if f is None:
            return

        async def chosen(answer) -> None:
            if answer is None:
                return
            scope, value = answer
            if scope == "file":
                await self._do(self.client.set_file, f["id"], max_speed=value)
            else:
                await self._do(self.client.set_limits, max_speed=value)
                self.notify(f"the job's limit: {fmt.rate(value) or 'none'}")

        self.app.push_screen(LimitDialog(self.label(f)), chosen)

    def action_drop(self) -> None:
        f = self.current_file()
        if f is None or f["state"] in FINAL:
            return

        async def confirmed(yes) -> None:
            if yes:
                await self._do(self.client.cancel, f["id"])

        self.app.push_screen(ConfirmDialog(f"Drop {self.label(f)} and delete its partial data?"), confirmed)

    async def action_retry(self) -> None:
        answer = await self._do(self.client.retry)
        if answer is not None:
            added = [j["job"] for j in answer.get("jobs", [])]
            self.jobs.update(added)
            self.notify(f"retrying the failures: job {', '.join(map(str, added))}" if added else "no failures")
            await self.refresh_files()

    def action_add(self) -> None:
        async def chosen(url) -> None:
            if url:
                answer = await self._do(self.client.add_job, {"urls": [url], **self.job_fields})
                if answer is not None:
                    self.jobs.add(answer["job"])
                    await self.refresh_files()

        self.app.push_screen(UrlDialog(), chosen)

    def action_quit(self) -> None:
        self.app.exit()
