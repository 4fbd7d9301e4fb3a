"""The live screen of a big job (issue 19 §4): past ``big`` files it shows
the moving files, the failures and the ``recent`` files that finished
last, not every file, and its total comes from the journal's counts.
Against the real engine in this process and a kernel-paced local mirror;
``big`` and ``recent`` are made small so that 40 files are a big job."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("textual")

from servers import PacedMirror, write_deterministic_file  # noqa: E402
from segdl.cli.ui.client import local_engine  # noqa: E402
from segdl.cli.ui.live import LiveScreen  # noqa: E402
from segdl.engine.rules.ranges import KiB  # noqa: E402
from segdl.engine.values.request import Settings  # noqa: E402
from textual.app import App  # noqa: E402
from textual.widgets import DataTable  # noqa: E402

FILES = 40
BIG, RECENT = 10, 5
TIMEOUT = 60.0


class OneScreen(App):
    def __init__(self, screen: LiveScreen) -> None:
        super().__init__()
        self.live = screen

    def on_mount(self) -> None:
        self.push_screen(self.live)


def test_a_big_jobs_live_screen_shows_moving_and_recent_files_and_counts_them_all(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    for i in range(FILES):
        write_deterministic_file(root / f"f{i:02d}.bin", 256 * KiB, i)
    dest = tmp_path / "out"
    dest.mkdir()
    settings = Settings(dest=dest, journal=tmp_path / "j.sqlite", workers=1, connections=1, concurrent_files=3)

    async def scenario():
        with PacedMirror(root, rate=256 * KiB) as mirror, local_engine(settings, [dest]) as client:
            job = client.add_job({"urls": [mirror.url(f"f{i:02d}.bin") for i in range(FILES)]})["job"]
            app = OneScreen(LiveScreen(client, {job}, poll=0.2, big=BIG, recent=RECENT))
            async with app.run_test(size=(120, 30)) as pilot:
                live = app.live
                saw_moving = False
                most = 0
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    await pilot.pause(0.2)
                    table = live.query_one(DataTable)
                    most = max(most, table.row_count)
                    saw_moving = saw_moving or any(f["state"] == "downloading" for f in live.rows.values())
                    if f"{FILES}/{FILES} files done" in str(live.query_one("#totals").render()):
                        break
                else:
                    pytest.fail(f"the job did not end: {live.query_one('#totals').render()}")
                await pilot.pause(0.5)  # one more refresh after the last file
                table = live.query_one(DataTable)
                assert saw_moving
                # Never every file: the moving ones (3 at a time, a few
                # more just ended) and the recent; at the end, the recent.
                assert most < FILES, most
                assert table.row_count == len(live.rows) == RECENT, (table.row_count, len(live.rows))
                assert all(f["state"] == "done" for f in live.rows.values())
                # The recent: files the screen showed moving, then done,
                # the last RECENT of them (a file that starts and ends
                # between two looks is counted, not shown).
                assert sorted(live.rows) == sorted(live.finished), (live.rows.keys(), live.finished)

    asyncio.run(scenario())
