"""One output boundary (issue 18 §2, issue 21 #9): text from outside goes
through every command's output as it is.  File names come from a real
server (a URL's path, Content-Disposition) or a manifest's path, collection
and folder names from the command line; rich or Textual markup in them
(``[v2]``, ``[/]``, ``[bold]x``) is never read as markup, and terminal
control characters (ESC) are written visibly, as ``\\x1b``.

No raw ESC may reach a pipe: segdl writes no colour there, so any ESC in
piped output came from a name.  In a forced terminal (the live views), rich
writes ESC of its own; there the names are looked for whole."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SEGDL, json_lines, run_segdl
from servers import FaultServer

KiB = 1 << 10

URL_NAME = "style [v2].safetensors"  # named by the URL's path
CD_NAME = "missing[red]x.bin"  # named by Content-Disposition
MANIFEST_PATH = "[bold]x/[bold]y.bin"  # the manifest's path
FAILED_PATH = "[/]gone.bin"  # its URL answers 404
NAMES = (URL_NAME, CD_NAME, MANIFEST_PATH, FAILED_PATH)
COLLECTION = "\x1b[2J\x1b[31mPWNED [v2]"  # issue 21 #9
COLLECTION_SHOWN = "\\x1b[2J\\x1b[31mPWNED [v2]"
WIDE = {"COLUMNS": "400"}  # rich folds nothing
# The live views: rich takes stderr for an interactive terminal (TTY_* since
# rich 14, FORCE_TERMINAL before).
TERMINAL = {**WIDE, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "FORCE_TERMINAL": "1", "TERM": "xterm-256color"}


def shown(text: str) -> str:
    """What a terminal must show of ``text``: ESC escaped."""
    return text.replace("\x1b", "\\x1b")


def test_shown_escapes_every_control_character_and_keeps_the_rest():
    from segdl.cli.console import shown as door

    assert door("a\x1b[31mb\x9b2Jc\u202ed\ne\tf\x7f") == "a\\x1b[31mb\\x9b2Jc\\u202ed\\x0ae\\x09f\\x7f"
    kept = "style [v2] ünï 模型 🙂.safetensors"
    assert door(kept) == kept


@pytest.fixture(scope="module")
def server():
    with FaultServer() as srv:
        for name in ("style [v2].safetensors", "cd.bin", "plain.bin"):
            srv.add(name, os.urandom(256 * KiB))
        srv.add("b[v2].bin", os.urandom(256 * KiB))
        yield srv


def manifest_of(server: FaultServer, folder: Path, rate: int = 96 * KiB) -> Path:
    """A manifest named with ESC and brackets (``ls`` shows its name) of
    the four files, each paced (~3 s) so the live view shows them."""
    files = [{"url": server.url(f"style%20%5Bv2%5D.safetensors?rate={rate}")},
             {"url": server.url(f"disposition/cd.bin?fn=missing%5Bred%5Dx.bin&rate={rate}")},
             {"url": server.url(f"plain.bin?rate={rate}"), "path": MANIFEST_PATH},
             {"url": server.url("nothere.bin"), "path": FAILED_PATH}]
    path = folder / "m\x1b[31m[v2].json"
    path.write_text(json.dumps({"files": files}))
    return path


@pytest.fixture(scope="module")
def job(server, tmp_path_factory):
    """``get`` of the manifest with the live view (a forced terminal): the
    job every other command then shows."""
    tmp = tmp_path_factory.mktemp("output")
    manifest = manifest_of(server, tmp)
    journal, out = tmp / "journal.sqlite", tmp / "out"
    p = run_segdl(["get", "-i", manifest, "--collection", COLLECTION, "-d", out, "-x", "1"], journal, env=TERMINAL)
    return p, manifest, journal, out


def test_get_shows_names_in_the_live_view_and_the_table(job):
    p, _, _, out = job
    assert p.returncode == 3, p.stderr  # the 404 one failed, alone
    for name in (URL_NAME, CD_NAME, MANIFEST_PATH):
        assert (out / name).stat().st_size == 256 * KiB
    live = p.stderr
    for name in (URL_NAME, CD_NAME, "[bold]y.bin"):  # the live view shows base names
        assert name in live, (name, live)
    for name in NAMES:
        assert name in p.stdout, (name, p.stdout)


def test_get_json_keeps_names_exactly(job):
    _, manifest, journal, out = job
    p = run_segdl(["get", "-i", manifest, "--collection", COLLECTION, "-d", out, "--json"], journal)
    assert p.returncode == 3, p.stderr
    paths = [r["path"] for r in json_lines(p)]
    for name in NAMES:
        assert any(path.endswith(name) for path in paths), (name, paths)


def test_status_escapes_control_characters_of_a_collection_name(job):
    _, _, journal, _ = job
    p = run_segdl(["status"], journal, env=WIDE)
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout + p.stderr
    assert f"{COLLECTION_SHOWN}: 3 done, 1 failed" in p.stdout, p.stdout
    for name in NAMES:
        assert name in p.stdout, (name, p.stdout)
    rows = json_lines(run_segdl(["status", "--json"], journal))
    assert {r["collection"] for r in rows} == {COLLECTION}


def test_ls_shows_the_input_file_and_its_paths(job):
    _, manifest, journal, out = job
    p = subprocess.run([*SEGDL, "ls", "-i", manifest.name, "-d", out, "--journal", journal], cwd=manifest.parent,
                       capture_output=True, text=True, timeout=60, env={**os.environ, **WIDE})
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout + p.stderr
    assert shown(manifest.name) + ": 1 here, 1 missing" in p.stdout, p.stdout  # the title
    for name in (MANIFEST_PATH, FAILED_PATH):
        assert name in p.stdout, (name, p.stdout)
    assert "no path" in p.stderr  # the two the server names


def test_retry_pause_and_resume_show_paths(job):
    _, _, journal, _ = job
    p = run_segdl(["retry"], journal, env=WIDE)
    assert p.returncode == 3, p.stderr
    assert FAILED_PATH in p.stdout and "\x1b" not in p.stdout + p.stderr
    for command in ("pause", "resume"):
        p = run_segdl([command, COLLECTION], journal, env=WIDE)
        assert p.returncode == 0, p.stderr
        assert "\x1b" not in p.stderr
        for name in NAMES:
            assert name in p.stderr, (command, name, p.stderr)


def test_demo_shows_its_folder(tmp_path):
    keep = tmp_path / "demo [v2] \x1b[31m"
    p = subprocess.run([*SEGDL, "demo", "--keep", str(keep), "--rate", "64M"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, **WIDE})
    assert p.returncode == 0, p.stderr
    assert "\x1b" not in p.stdout + p.stderr
    assert f"in {shown(str(keep / 'files' / 'demo'))}" in p.stderr, p.stderr
    assert f"--journal {shown(str(keep / 'journal.sqlite'))}" in p.stderr, p.stderr


def test_bench_shows_mirror_urls(server):
    good, bad = server.url("b[v2].bin"), server.url("[/]nothere.bin")
    p = subprocess.run([*SEGDL, "bench", good, bad, "-b", "64K", "-c", "1,2", "--rounds", "1"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, **TERMINAL})
    assert p.returncode == 0, p.stderr
    assert good in p.stdout and bad in p.stdout, p.stdout
    assert f"use this mirror: {good}" in p.stdout, p.stdout
    assert f"{bad}: " in p.stderr, p.stderr  # said while measuring


def test_serve_says_where_its_token_is(tmp_path):
    pytest.importorskip("uvicorn")
    from serving import Serve

    state = tmp_path / "state [v2] \x1b[31m"
    serve = Serve(tmp_path, journal=state / "j.sqlite", env=WIDE).start()
    serve.stop()
    text = serve.log()
    assert "\x1b" not in text
    assert f"token in {shown(str(state / 'serve.token'))}" in text, text


def test_a_message_keeps_a_long_path_and_url_whole(tmp_path):
    """segdl's messages are never broken into lines by segdl (a terminal
    wraps them for show): a token file's path, a login URL or the demo's
    folder longer than the terminal is copied whole.  (They were cut at
    80 columns in a pipe.)"""
    deep = "/".join(["a-rather-long-folder-name"] * 6) + "/serve.token"
    url = "http://127.0.0.1:8080/login?code=" + "x" * 60
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    p = subprocess.run([sys.executable, "-c", "from segdl.cli.console import err, say; import sys; "
                        "say(f'token in {sys.argv[1]}; open the page: {sys.argv[2]}'); "
                        "err.print(f'segdl demo: 4 of 4 files verified by blake3, in {sys.argv[1]}')", deep, url],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert f"token in {deep}; open the page: {url}" in p.stderr, p.stderr
    assert f"verified by blake3, in {deep}" in p.stderr, p.stderr


@pytest.mark.parametrize("args, module, extra", [
    (["serve"], "uvicorn", "segdl[serve]"),
    (["ui"], "textual", "segdl[ui]"),
    (["bench", "--local", "--plot", "chart.png"], "matplotlib", "segdl[bench]"),
])
def test_a_missing_extra_is_named_with_its_brackets(tmp_path, args, module, extra):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / f"{module}.py").write_text("raise ImportError('hidden by the test')\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")])), **WIDE}
    p = run_segdl(args, tmp_path / "j.sqlite", env=env)
    assert p.returncode == 2, p.stderr
    assert f"pip install '{extra}'" in p.stderr, p.stderr


# ------------------------------------------------------------ the terminal UI


def test_the_ui_shows_names_verbatim(server, tmp_path):
    """The picker's title (an input file named with ESC), the table's
    names, the limit and drop dialogs, a refusal's notification."""
    pytest.importorskip("textual")
    from textual.widgets import DataTable, Label, Static

    from segdl.cli.ui import sources
    from segdl.cli.ui.app import SegdlUI
    from segdl.cli.ui.client import local_engine
    from segdl.engine.values.request import Settings

    dest, journal = tmp_path / "out", tmp_path / "journal.sqlite"
    dest.mkdir()
    slow = server.url(f"plain.bin?rate={32 * KiB}")  # 8 s: still downloading while the dialogs open
    aria2 = tmp_path / "in \x1b[31m[v2].txt"
    aria2.write_text(f"{slow}\n  out={MANIFEST_PATH}\n{server.url('b%5Bv2%5D.bin')}\n  out={URL_NAME}\n")
    c = sources.from_file(aria2, dest, journal, attached=False)

    def texts(screen, selector) -> list[str]:
        return [str(w.render()) for w in screen.query(selector)]

    async def until(pilot, what, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while not what():
            assert time.monotonic() < deadline, what.__doc__
            await pilot.pause(0.1)

    async def scenario():
        settings = Settings(dest=dest, journal=journal, workers=1, connections=1)
        with local_engine(settings, [dest]) as client:
            app = SegdlUI(client, collection=c, poll=0.2)
            async with app.run_test(size=(140, 20), notifications=True) as pilot:
                await pilot.pause()
                title = app.screen.query_one("#title", Static)
                assert str(title.render()) == f"{shown(str(aria2))}: 2 missing"
                picked = app.screen.query_one(DataTable)
                assert [str(picked.get_row(k)[1]) for k in ("0", "1")] == [MANIFEST_PATH, URL_NAME]
                await pilot.press("enter")

                def started():
                    """the live screen shows both files"""
                    return app.live is not None and len(app.live.rows) == 2
                await until(pilot, started)
                table = app.live.query_one(DataTable)
                assert [str(table.get_row(k)[0]) for k in ("1", "2")] == [MANIFEST_PATH, URL_NAME]

                await pilot.press("l")  # the cursor is on the slow file
                await pilot.pause()
                assert f"for {MANIFEST_PATH} or the whole job" in texts(app.screen, Label)[0]
                await pilot.press(*"[bold]", "enter")
                await pilot.pause()
                assert "not a rate: '[bold]'" in str(app.screen.query_one("#problem", Label).render())
                await pilot.press("escape")
                await pilot.press("d")
                await pilot.pause()
                assert texts(app.screen, Label)[0] == f"Drop {MANIFEST_PATH} and delete its partial data?"
                await pilot.press("n")
                await pilot.press("a", *"http://[/]x/", "enter")

                def refused():
                    """a notification quotes the refused URL"""
                    return any("'http://[/]x/'" in t for t in texts(app.screen, "Toast"))
                await until(pilot, refused)
                await pilot.press("q")

    asyncio.run(scenario())
