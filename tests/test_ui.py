"""segdl ui, headless: Textual's ``App.run_test()`` and Pilot key presses
against the real engine (in this process, or a ``segdl serve`` process
for --attach) and a kernel-paced local mirror, slow enough that a file is
mid-download when a key is pressed.  What each key did is read back from
the journal.  Plus SVG snapshots of the picker and the live screen, taken
when nothing moves (files done, no speeds, no times)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("textual")

from helpers import SEGDL, journal_rows  # noqa: E402
from servers import PacedMirror, write_deterministic_file  # noqa: E402
from segdl.cli.ui import fmt, sources  # noqa: E402
from segdl.cli.ui.app import SegdlUI  # noqa: E402
from segdl.cli.ui.client import attach, local_engine  # noqa: E402
from segdl.engine.inputs.naming import part_path  # noqa: E402
from segdl.engine.rules.ranges import KiB, MiB  # noqa: E402
from segdl.engine.values.request import Settings  # noqa: E402

SLOW = 512 * KiB  # bytes/s per connection: an 8 MiB file takes ~8 s over 2 connections
SIZE = 8 * MiB
SMALL = 256 * KiB  # the fast mirror's files
TIMEOUT = 15.0  # seconds any one wait may take
TERMINAL = (120, 14)


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    root = tmp_path_factory.mktemp("slow")
    for i, name in enumerate(("a.bin", "b.bin")):
        write_deterministic_file(root / name, SIZE, 10 + i)
    with PacedMirror(root, rate=SLOW) as m:
        yield m


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast")
    for i, name in enumerate(("a.bin", "b.bin", "c.bin")):
        write_deterministic_file(root / name, SMALL, 20 + i)
    with PacedMirror(root, rate=64 * MiB) as m:
        yield m


@pytest.fixture
def where(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    return dest, tmp_path / "journal.sqlite"


def settings(dest: Path, journal: Path) -> Settings:
    return Settings(dest=dest, journal=journal, workers=1, connections=2)


def rows(journal: Path, sql: str) -> list[tuple]:
    return journal_rows(journal, sql)


def one(journal: Path, sql: str):
    got = rows(journal, sql)
    return got[0][0] if got else None


async def until(pilot, what, timeout: float = TIMEOUT, step: float = 0.1):
    """Wait (bounded) until ``what()`` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what.__doc__ or what}"
        await pilot.pause(step)


def durable(journal: Path, fid: int) -> int:
    return one(journal, f"SELECT COALESCE(SUM(done), 0) FROM segments WHERE file_id = {fid}") or 0


def state(journal: Path, fid: int) -> tuple:
    got = rows(journal, f"SELECT state, paused, priority, max_speed FROM files WHERE id = {fid}")
    return got[0] if got else (None, None, None, None)


def mid_download(journal: Path, fid: int):
    def check():
        """the file is downloading with bytes on disk"""
        return state(journal, fid)[0] == "downloading" and durable(journal, fid) > 0
    return check


def run(scenario) -> None:
    asyncio.run(scenario())


# ------------------------------------------------------------ the keys, in-process


def test_space_pauses_the_file_for_real_and_space_again_resumes_it(slow, where):
    dest, journal = where

    async def scenario():
        with local_engine(settings(dest, journal), [dest]) as client:
            app = SegdlUI(client, body={"urls": [slow.url("a.bin"), slow.url("b.bin")]}, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await until(pilot, mid_download(journal, 1))
                await pilot.press("space")  # the cursor is on the first file
                await until(pilot, lambda: state(journal, 1)[:2] == ("paused", 1))
                await pilot.pause(1.0)  # what was in flight lands
                held = durable(journal, 1)
                await pilot.pause(1.5)
                assert durable(journal, 1) == held, "a paused file's bytes still grow"
                assert state(journal, 2)[0] == "downloading"
                assert "paused" in str(app.live.query_one("DataTable").get_row("1"))
                await pilot.press("space")
                await until(pilot, lambda: state(journal, 1)[:2] == ("downloading", 0))
                await until(pilot, lambda: durable(journal, 1) > held)
                await pilot.press("q")

    run(scenario)


def test_priority_and_limits_from_the_keys_reach_the_engine(slow, where):
    dest, journal = where

    async def scenario():
        with local_engine(settings(dest, journal), [dest]) as client:
            app = SegdlUI(client, body={"urls": [slow.url("a.bin"), slow.url("b.bin")]}, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await until(pilot, mid_download(journal, 2))
                await pilot.press("down", "plus", "plus")  # the second file
                await until(pilot, lambda: state(journal, 2)[2] == 2)
                await pilot.press("minus")
                await until(pilot, lambda: state(journal, 2)[2] == 1)
                assert state(journal, 1)[2] == 0
                await pilot.press("l", *"100K", "enter")  # the file's limit
                await until(pilot, lambda: state(journal, 2)[3] == 100 * KiB)
                # ... and it holds: the file's speed (the engine's, in the journal) comes down to it
                await until(pilot, lambda: (one(journal, "SELECT speed FROM files WHERE id = 2") or 1e9) < 150 * KiB)
                await pilot.press("l", *"1M")
                await pilot.click("#job")  # the whole job's
                await until(pilot, lambda: one(journal, "SELECT max_speed FROM jobs WHERE id = 1") == MiB)
                await until(pilot, lambda: "limit 1.0 MiB/s" in str(app.live.query_one("#totals").render()))
                assert "100.0 KiB/s" in str(app.live.query_one("DataTable").get_row("2"))
                await pilot.press("l", *"fast", "enter")  # not a rate: the dialog says so and stays
                assert "not a rate" in str(app.screen.query_one("#problem").render())
                await pilot.press("escape")
                assert app.screen is app.live
                await pilot.press("q")

    run(scenario)


def test_d_drops_the_file_and_the_other_goes_on(slow, where):
    dest, journal = where

    async def scenario():
        with local_engine(settings(dest, journal), [dest]) as client:
            app = SegdlUI(client, body={"urls": [slow.url("a.bin"), slow.url("b.bin")]}, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await until(pilot, mid_download(journal, 2))
                await pilot.press("down", "d", "n")  # asked first: no
                await pilot.pause(0.3)
                assert state(journal, 2)[0] == "downloading"
                await pilot.press("d", "y")
                await until(pilot, lambda: state(journal, 2)[0] == "removed")
                assert not part_path(dest / "b.bin").exists() and not (dest / "b.bin").exists()
                before = durable(journal, 1)
                await until(pilot, lambda: durable(journal, 1) > before)
                assert state(journal, 1)[0] == "downloading"
                await until(pilot, lambda: "/1 files done" in str(app.live.query_one("#totals").render()))
                await pilot.press("q")

    run(scenario)


def test_q_stops_the_engine_and_a_new_ui_continues_the_job(slow, where):
    dest, journal = where

    async def first():
        with local_engine(settings(dest, journal), [dest]) as client:
            app = SegdlUI(client, body={"urls": [slow.url("a.bin")]}, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await until(pilot, mid_download(journal, 1))
                await pilot.press("q")
                await until(pilot, lambda: not app.is_running)

    run(first)
    assert one(journal, "SELECT state FROM jobs WHERE id = 1") != "finished"
    assert state(journal, 1)[0] not in ("done", "removed")
    left = durable(journal, 1)
    assert 0 < left < SIZE
    assert part_path(dest / "a.bin").exists()
    # What the picker would show of it now: partly here.
    c = sources.from_urls([slow.url("a.bin"), slow.url("b.bin")], dest, journal, attached=False)
    assert [(e.path, e.state) for e in c.entries] == [("a.bin", "partial"), ("b.bin", "missing")]
    assert c.entries[0].done == left

    async def second():  # a bare `segdl ui`: the unfinished job, continued from where it stopped
        with local_engine(settings(dest, journal), [dest]) as client:
            app = SegdlUI(client, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await until(pilot, lambda: app.live is not None and 1 in app.live.rows)
                assert app.live.jobs == {1}
                await until(pilot, lambda: durable(journal, 1) > left)
                await pilot.press("q")

    run(second)
    assert one(journal, "SELECT COUNT(*) FROM jobs") == 1


# ------------------------------------------------------------ picker, add, retry


def manifest(path: Path, mirror, names=("a.bin", "b.bin", "c.bin")) -> Path:
    path.write_text(json.dumps({"collection": "models", "files": [
        {"url": mirror.url(n), "path": f"set/{n}", "size": SMALL} for n in names]}))
    return path


def done_files(journal: Path) -> list[str]:
    return [r[0] for r in rows(journal, "SELECT path FROM files WHERE state = 'done' ORDER BY id")]


def test_the_picker_downloads_only_the_chosen_files(fast, where, tmp_path):
    dest, journal = where
    c = sources.from_file(manifest(tmp_path / "m.json", fast), dest, journal, attached=False)

    async def scenario():
        with local_engine(settings(dest, journal), [dest]) as client:
            app = SegdlUI(client, collection=c, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await pilot.pause()
                assert app.screen.chosen == {0, 1, 2}  # all missing: all taken
                await pilot.press("space")  # leave a.bin (the cursor moves to b.bin)
                await pilot.press("down", "space", "space")  # c.bin left, then taken again
                assert app.screen.chosen == {1, 2}
                await pilot.press("enter")
                await until(pilot, lambda: len(done_files(journal)) == 2)
                await pilot.pause(0.5)
                await pilot.press("q")

    run(scenario)
    assert sorted(Path(p).name for p in done_files(journal)) == ["b.bin", "c.bin"]
    assert one(journal, "SELECT COUNT(*) FROM files") == 2
    assert not (dest / "set" / "a.bin").exists()
    assert (dest / "set" / "b.bin").stat().st_size == SMALL
    # Now a.bin is missing and the others here: what the picker offers next.
    again = sources.from_file(tmp_path / "m.json", dest, journal, attached=False)
    assert [e.state for e in again.entries] == ["missing", "here", "here"]


def test_a_adds_a_url_and_r_retries_the_failures(fast, where):
    dest, journal = where

    async def scenario():
        with local_engine(settings(dest, journal), [dest]) as client:
            app = SegdlUI(client, body={"urls": [fast.url("nothere.bin")]}, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await until(pilot, lambda: state(journal, 1)[0] == "failed")
                await until(pilot, lambda: "1 failed" in str(app.live.query_one("#totals").render()))
                await pilot.press("a", *fast.url("c.bin"), "enter")
                await until(pilot, lambda: any(p.endswith("c.bin") for p in done_files(journal)))
                assert len(app.live.jobs) == 2
                await pilot.press("r")
                await until(pilot, lambda: one(journal, "SELECT COUNT(*) FROM jobs") == 3)
                assert len(app.live.jobs) == 3
                await until(pilot, lambda: one(journal, "SELECT job_id FROM files WHERE id = 1") == 3)
                await until(pilot, lambda: state(journal, 1)[0] == "failed")
                await pilot.press("q")

    run(scenario)


# ------------------------------------------------------------ --attach


def test_attach_drives_a_running_segdl_serve(slow, tmp_path):
    pytest.importorskip("uvicorn")
    from serving import Serve

    serve = Serve(tmp_path, "--workers", "1", "-x", "2").start()
    journal = serve.journal
    try:
        client = attach(journal)

        async def scenario():
            app = SegdlUI(client, body={"urls": [slow.url("a.bin")]}, poll=0.2)
            async with app.run_test(size=TERMINAL) as pilot:
                await until(pilot, mid_download(journal, 1))
                await pilot.press("space")
                await until(pilot, lambda: state(journal, 1)[:2] == ("paused", 1))
                await pilot.press("plus")
                await until(pilot, lambda: state(journal, 1)[2] == 1)
                await pilot.press("q")

        run(scenario)
        assert serve.proc.poll() is None, "quitting an attached UI stops nothing"
        assert state(journal, 1)[0] == "paused"
    finally:
        serve.stop()


# ------------------------------------------------------------ snapshots


def test_snapshot_picker(fast, where, tmp_path, snap_compare):
    dest, journal = where
    with local_engine(settings(dest, journal), [dest]) as client:  # a.bin here already
        client.add_job({"manifest": json.loads(manifest(tmp_path / "one.json", fast, ["a.bin"]).read_text())})
        deadline = time.monotonic() + TIMEOUT
        while len(done_files(journal)) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c = sources.from_file(manifest(tmp_path / "m.json", fast), dest, journal, attached=False)
        assert [e.state for e in c.entries] == ["here", "missing", "missing"]
        assert snap_compare(SegdlUI(client, collection=c), press=["down", "down", "space"],
                            terminal_size=TERMINAL)


def test_snapshot_live_screen(fast, where, snap_compare):
    dest, journal = where

    async def all_done(pilot):
        app = pilot.app
        await until(pilot, lambda: app.live is not None and len(app.live.rows) == 3
                    and all(f["state"] in ("done", "failed") for f in app.live.rows.values()))
        await pilot.pause(0.3)

    with local_engine(settings(dest, journal), [dest]) as client:
        app = SegdlUI(client, body={"urls": [fast.url("a.bin"), fast.url("b.bin"), fast.url("gone.bin")]},
                    poll=0.1)
        assert snap_compare(app, run_before=all_done, terminal_size=TERMINAL)


# ------------------------------------------------------------ pure parts, start-up


def test_totals_and_cells_of_the_live_screen():
    files = [
        {"state": "done", "size": 2 * MiB, "bytes_done": 0, "speed": 0.0, "paused": False},
        {"state": "downloading", "size": 4 * MiB, "bytes_done": MiB, "speed": float(MiB), "paused": False},
        {"state": "paused", "size": 4 * MiB, "bytes_done": 2 * MiB, "speed": 5.0, "paused": True},
        {"state": "removed", "size": 9 * MiB, "bytes_done": 0, "speed": 0.0, "paused": False},
        {"state": "failed", "size": None, "bytes_done": 0, "speed": 0.0, "paused": False},
    ]
    t = fmt.totals(files)
    assert (t.files, t.finished, t.failed, t.done, t.size, t.speed) == (4, 1, 1, 5 * MiB, 10 * MiB, MiB)
    assert t.line() == "1/4 files done · 1 failed · 5.0 MiB of 10.0 MiB (50%) · 1.0 MiB/s · ETA 5 s"
    unknown = {"state": "queued", "size": None, "bytes_done": 0, "speed": None, "paused": False}
    assert fmt.totals([*files, unknown]).line() == "1/5 files done · 1 failed · 5.0 MiB · 1.0 MiB/s"
    assert fmt.bar(MiB, 4 * MiB, width=8) == "██░░░░░░  25%"
    assert fmt.duration(3725) == "1 h 02 min" and fmt.size(1023) == "1023 B"
    assert fmt.mirror({"state": "downloading", "url": "http://h:1/x", "mirrors": json.dumps(
        [{"url": "http://m1/x", "connections": 2, "dropped": False},
         {"url": "http://m2/x", "connections": 0, "dropped": False}])}) == "m1"


def test_get_does_not_load_textual(fast, tmp_path):
    code = ("import sys; from segdl.cli.main import app\n"
            f"try: app(['get', {fast.url('a.bin')!r}, '-d', {str(tmp_path)!r}, '-q'])\n"
            "except SystemExit as e: assert e.code == 0, e.code\n"
            "assert 'textual' not in sys.modules and 'segdl.cli.ui' not in sys.modules\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                       env={**os.environ, "SEGDL_JOURNAL": str(tmp_path / "j.sqlite")})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a.bin").stat().st_size == SMALL


def test_the_segdl_ui_command_in_a_terminal_quits_with_q_and_leaves_the_job_resumable(slow, tmp_path):
    """The real command in a pseudo-terminal: it starts the job, q ends it."""
    import pty
    import select

    journal, out = tmp_path / "journal.sqlite", tmp_path / "out"
    fd, tty = pty.openpty()
    proc = subprocess.Popen([*SEGDL, "ui", slow.url("a.bin"), "-d", str(out), "--journal", str(journal),
                             "--workers", "1", "-x", "2"], stdin=tty, stdout=tty, stderr=tty,
                            env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "20"})
    os.close(tty)
    screen = b""

    def read() -> None:
        nonlocal screen
        if select.select([fd], [], [], 0.1)[0]:
            try:
                screen += os.read(fd, 65536)
            except OSError:  # the terminal closed: it has exited
                time.sleep(0.1)

    try:
        deadline = time.monotonic() + TIMEOUT
        while not mid_download(journal, 1)():
            assert proc.poll() is None and time.monotonic() < deadline, screen[-2000:]
            read()
        os.write(fd, b"q")
        while proc.poll() is None and time.monotonic() < deadline:
            read()
        read()
        assert proc.wait(5) == 0, screen[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(fd)
    assert b"a.bin" in screen and b"pause/resume" in screen
    assert b"'segdl ui' or 'segdl resume' continues" in screen
    assert one(journal, "SELECT state FROM jobs WHERE id = 1") == "running"
    assert 0 < durable(journal, 1) < SIZE


def test_segdl_ui_help_reads_well_at_80_columns():
    from test_cli import _help

    top = _help().split("Commands:", 1)[1]
    assert "segdl ui" not in top and "  ui " in top and "..." not in top
    lines = _help("ui").splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert any(line.strip().startswith("segdl ui --attach") for line in lines)


def test_the_picker_of_a_hub_reference_takes_the_chosen_files_only(where, tmp_path, monkeypatch):
    from hubserver import HubServer

    dest, journal = where
    files = {"config.json": (b'{"model_type": "test"}\n', False), "README.md": (b"# a model\n", False),
             "model.safetensors": (bytes(range(256)) * 1024, True)}
    with HubServer() as hub:
        hub.add_repo("org/model", files)
        monkeypatch.setenv("HF_ENDPOINT", hub.hub_url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        c = sources.from_ref("hf://org/model", dest, journal, attached=False)
        paths = [e.path for e in c.entries]
        assert sorted(paths) == sorted(files) and all(e.state == "missing" for e in c.entries)
        assert {e.path: e.size for e in c.entries}["model.safetensors"] == 256 * 1024
        leave = paths.index("README.md")

        async def scenario():
            with local_engine(settings(dest, journal), [dest]) as client:
                app = SegdlUI(client, collection=c, poll=0.2)
                async with app.run_test(size=TERMINAL) as pilot:
                    await pilot.pause()
                    await pilot.press(*["down"] * leave, "space", "enter")
                    await until(pilot, lambda: len(done_files(journal)) == 2)
                    await pilot.press("q")

        run(scenario)
    assert sorted(Path(p).name for p in done_files(journal)) == sorted(set(files) - {"README.md"})
    assert not (dest / "README.md").exists()
    assert (dest / "model.safetensors").read_bytes() == files["model.safetensors"][0]


def test_an_aria2_input_file_is_a_collection_too(fast, where, tmp_path):
    dest, journal = where
    text = "".join(f"{fast.url(n)}\n  out=x/{n}\n" for n in ("a.bin", "b.bin"))
    (tmp_path / "in.txt").write_text(text)
    c = sources.from_file(tmp_path / "in.txt", dest, journal, attached=False)
    assert c.body == {"aria2": text} and [e.path for e in c.entries] == ["x/a.bin", "x/b.bin"]
    assert c.job([1]) == {"aria2": text, "select": [1]} and c.job([0, 1]) == {"aria2": text}
    attached = sources.from_file(tmp_path / "in.txt", dest, journal, attached=True)
    assert attached.body["dest"] == str(dest.absolute())


def test_the_picker_shows_what_the_listing_said(where):
    """(No engine needed: the picker asks nothing of it before enter.)"""
    c = sources.Collection("loras", {"ref": "civitai://collection/1"},
                           (sources.Entry(0, "a.safetensors", "https://h/a", 10, "partial", 4),),
                           ("model 7: archived, no file to download",))

    async def scenario():
        app = SegdlUI(None, collection=c)
        async with app.run_test(size=TERMINAL) as pilot:
            await pilot.pause()
            assert [str(n.render()) for n in app.screen.query(".note")] == ["model 7: archived, no file to download"]
            assert "4 B" in str(app.screen.query_one("DataTable").get_row("0"))  # the bytes a partial one has
            await pilot.press("q")
            await until(pilot, lambda: not app.is_running)

    run(scenario)
