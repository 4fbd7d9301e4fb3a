"""The Add view of the web page (issue 20) in a real browser (Debian's
Chromium through Playwright, as tests/test_web.py) against a real `segdl
serve` and a paced mirror on 127.0.0.1: the ways a list comes in and what
the review says of it.  One serve, one mirror and one logged-in page are
shared by the module's tests (each starts from an empty Add form).

* a refused review (Folder ``../outside``) clears the previous review, so
  Start cannot launch the earlier review's job (audit bug B6);
* a manifest picked with the file picker, and one dropped on the drop
  target (a synthetic drop with a DataTransfer built in the page);
* an aria2 input list with ``out=`` names: the review shows them, and the
  job writes them;
* a file partly here (a paused download's ``.segdl-part`` and journal
  bytes): the review says "partly here";
* the Folder field: the job lands in that folder under the root;
* a manifest larger than the free space: NOT ENOUGH SPACE, and Start asks
  before it starts anything (Back starts nothing).
* a ``civitai://`` reference against the CivitAI stand-in: reviewed,
  started, fetched; the hub's token never reaches the page.

And, without a browser: `segdl get` never imports starlette, uvicorn or
the web routes (``-X importtime`` of a real small download).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from helpers import SEGDL
from servers import PacedMirror
from segdl.engine.rules.ranges import KiB, MiB

def until(what, timeout: float = 30, why: str = ""):
    """``what()`` once it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, why or "timed out"
        time.sleep(0.1)
    return got


WEB_MODULES = ("starlette", "uvicorn", "sse_starlette", "segdl.cli.webroutes", "segdl.cli.server")


def test_segdl_get_never_imports_the_web_service(mirror, tmp_path):
    """A real `segdl get` of one file, ``-X importtime``: every module the
    process imported is listed on stderr, and none of the web's is."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-X", "importtime", *SEGDL[1:], "get", mirror.url("small0.bin"),
                        "-d", str(out), "-q"], capture_output=True, text=True, timeout=60, check=False,
                       env={**os.environ, "SEGDL_JOURNAL": str(tmp_path / "j.sqlite")})
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "small0.bin").read_bytes() == (mirror.root / "small0.bin").read_bytes()
    imported = {m.group(1).strip() for m in re.finditer(r"^import time:\s*\d+ \|\s*\d+ \|(.*)$", p.stderr, re.M)}
    assert {"segdl.cli", "segdl.engine", "segdl.cli.console"} <= imported  # (the listing is read right)
    web = sorted(m for m in imported if any(m == w or m.startswith(w + ".") for w in WEB_MODULES))
    assert web == [], f"segdl get imported {web}"


try:  # (the browser tests skip without Playwright; the test above runs anyway)
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None

RATE = 256 * KiB  # bytes/s per connection: the big file takes 32 s, the small ones a quarter of a second


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    (root / "big.bin").write_bytes(os.urandom(8 * MiB))
    for i in range(4):
        (root / f"small{i}.bin").write_bytes(os.urandom(64 * KiB))
    with PacedMirror(root, rate=RATE) as m:
        m.root = root
        yield m


@pytest.fixture(scope="module")
def web(tmp_path_factory, mirror):
    """One `segdl serve`, one Chromium and one logged-in page for the module."""
    if sync_playwright is None:
        pytest.skip("the browser tests need playwright")
    for extra in ("starlette", "uvicorn", "sse_starlette"):
        pytest.importorskip(extra)
    from serving import Serve
    from test_web import CHROMIUM_FLAGS, chromium_path, log_in
    from test_web_api import login_urls

    tmp = tmp_path_factory.mktemp("web-inputs")
    serve = Serve(tmp / "serve", "-x", "1").start()
    try:
        until(lambda: login_urls(serve), 10, why="segdl serve prints a login URL")
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                str(tmp / "profile"), executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 800})
            ctx.set_default_timeout(20000)
            try:
                page = ctx.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                log_in(page, serve)
                yield types.SimpleNamespace(serve=serve, page=page, errors=errors, tmp=tmp,
                                            out=Path(os.path.realpath(serve.out)))
                assert errors == []
            finally:
                ctx.close()
    finally:
        serve.stop()


def add_form(web, text: str = "", dest: str = ""):
    """The Add view with an empty form (as the user leaves it: no message)."""
    page = web.page
    page.click("button[data-view=add]")
    page.fill("#add-text", text)
    page.fill("#add-dest", dest)
    page.fill("#add-collection", "")
    return page


def jobs(web) -> list[dict]:
    status, body = web.serve.call("GET", "/jobs")
    assert status == 200
    return body["jobs"]


def review_paths(page) -> list[str]:
    rows = page.locator("#review-rows tr")
    return [rows.nth(i).get_attribute("data-path") for i in range(rows.count())]


def expect_review(page, paths: list[str]) -> None:
    """The review lists ``paths`` (this review's, not an earlier one's)."""
    until(lambda: review_paths(page) == paths, 10, why=f"the review lists {paths}, not {review_paths(page)}")


def state_cell(page, path: str):
    return page.locator(f'#review-rows tr[data-path="{path}"] td').nth(4)


def test_a_refused_review_clears_the_previous_one_and_start_launches_nothing(web, mirror):
    page = add_form(web, mirror.url("small3.bin"), dest="b6/first")
    page.click("#review-btn")
    expect_review(page, ["small3.bin"])
    expect(page.locator("#start")).to_be_visible()
    before = len(jobs(web))

    page.fill("#add-dest", "../outside")
    page.click("#review-btn")
    expect(page.locator("#message")).to_contain_text("outside the folders")
    expect(page.locator("#message")).to_have_class("bad")
    expect(page.locator("#review")).to_be_hidden()
    expect(page.locator("#start")).to_be_hidden()
    expect(page.locator("#review-rows tr")).to_have_count(0)
    # Even a click that reaches the hidden button (a script, a stale
    # keyboard focus) has no earlier review to start.
    page.evaluate("document.getElementById('start').click()")
    expect(page.locator("#message")).to_have_text("review a list first")
    assert len(jobs(web)) == before
    assert not (web.out / "b6").exists()

    # A list the page itself refuses (before asking the service) clears it too.
    page.fill("#add-dest", "b6/first")
    page.click("#review-btn")
    expect_review(page, ["small3.bin"])
    page.fill("#add-text", "hf://a/b hf://c/d")
    page.click("#review-btn")
    expect(page.locator("#message")).to_have_text("one hub reference at a time")
    expect(page.locator("#review")).to_be_hidden()
    page.evaluate("document.getElementById('start').click()")
    expect(page.locator("#message")).to_have_text("review a list first")
    assert len(jobs(web)) == before


def test_a_manifest_picked_with_the_file_picker(web, mirror):
    manifest = {"files": [{"url": mirror.url("small2.bin"), "path": "picked/small2.bin", "size": 64 * KiB},
                          {"url": mirror.url("small1.bin"), "path": "picked/other.bin", "size": 64 * KiB}]}
    path = web.tmp / "picked.json"
    path.write_text(json.dumps(manifest, indent=1))
    page = add_form(web)
    page.set_input_files("#add-file", str(path))
    expect(page.locator("#add-text")).to_have_value(path.read_text())
    page.click("#review-btn")
    expect_review(page, ["picked/small2.bin", "picked/other.bin"])
    expect(page.locator('#review-rows tr[data-path="picked/small2.bin"] td').nth(3)).to_have_text("64.0 KiB")
    expect(state_cell(page, "picked/other.bin")).to_have_text("not here")
    expect(page.locator("#review-total")).to_contain_text("2 of 2 files selected · 128.0 KiB")

    # A file larger than one request takes is refused with its name, and
    # leaves the text as it was.
    page.set_input_files("#add-file", {"name": "huge.json", "mimeType": "application/json",
                                       "buffer": b" " * (1024 * KiB)})
    expect(page.locator("#message")).to_contain_text("huge.json is larger than the API takes")
    expect(page.locator("#add-text")).to_have_value(path.read_text())


DROP = """([text, name]) => {
  const dt = new DataTransfer();
  dt.items.add(new File([text], name, { type: 'application/json' }));
  const drop = document.getElementById('drop');
  const over = new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true });
  drop.dispatchEvent(over);
  const lit = drop.classList.contains('over');
  const ev = new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true });
  drop.dispatchEvent(ev);
  return [over.defaultPrevented, lit, ev.defaultPrevented, drop.classList.contains('over')];
}"""


def test_a_manifest_dropped_on_the_drop_target(web, mirror):
    manifest = {"files": [{"url": mirror.url("small0.bin"), "path": "dropped/a.bin", "size": 64 * KiB},
                          {"url": mirror.url("small1.bin"), "path": "dropped/b.bin"}]}
    text = json.dumps(manifest)
    page = add_form(web, "left over")
    # (dragover accepted and lit; the drop taken by the page, not the browser; the light off)
    assert page.evaluate(DROP, [text, "dropped.json"]) == [True, True, True, False]
    expect(page.locator("#add-text")).to_have_value(text)
    page.click("#review-btn")
    expect_review(page, ["dropped/a.bin", "dropped/b.bin"])
    # (b.bin's size is not in the manifest: its server says it, 64 KiB.)
    expect(page.locator("#review-total")).to_contain_text("2 of 2 files selected · 128.0 KiB · to fetch 128.0 KiB")


def test_an_aria2_list_names_its_files_by_out(web, mirror):
    text = (f"{mirror.url('small0.bin')}\n  out=first-renamed.bin\n"
            f"{mirror.url('small1.bin')}\n\tout=second-renamed.bin\n")
    page = add_form(web, text, dest="aria")
    page.click("#review-btn")
    expect_review(page, ["first-renamed.bin", "second-renamed.bin"])
    expect(page.locator('#review-rows tr[data-path="first-renamed.bin"] td.name')).to_have_attribute(
        "title", mirror.url("small0.bin"))
    page.click("#start")
    expect(page.locator("#message")).to_contain_text("2 file(s)")
    job = jobs(web)[-1]["id"]
    web.serve.wait_files(job, timeout=30)
    for name, src in (("first-renamed.bin", "small0.bin"), ("second-renamed.bin", "small1.bin")):
        assert (web.out / "aria" / name).read_bytes() == (mirror.root / src).read_bytes()
    assert not (web.out / "aria" / "small0.bin").exists()


def test_the_folder_field_puts_the_job_under_the_root(web, mirror):
    page = add_form(web, mirror.url("small2.bin"), dest="sub/dir")
    expect(page.locator("#root")).to_have_text(str(web.out))
    page.click("#review-btn")
    expect(page.locator("#review-total")).to_contain_text(f"free in {web.out / 'sub' / 'dir'}: ")
    # Editing the folder after the review takes the review away: Start
    # would launch the folder shown no more.
    page.fill("#add-dest", "sub/other")
    expect(page.locator("#review")).to_be_hidden()
    expect(page.locator("#message")).to_contain_text("review it again")
    page.fill("#add-dest", "sub/dir")
    page.click("#review-btn")
    expect(page.locator("#review-total")).to_contain_text(f"free in {web.out / 'sub' / 'dir'}: ")
    page.click("#start")
    expect(page.locator("#message")).to_contain_text("1 file(s)")
    job = jobs(web)[-1]
    assert Path(job["dest"]) == web.out / "sub" / "dir"
    (f,) = web.serve.wait_files(job["id"], timeout=30)
    assert Path(f["path"]) == web.out / "sub" / "dir" / "small2.bin"
    assert Path(f["path"]).read_bytes() == (mirror.root / "small2.bin").read_bytes()
    assert not (web.out / "small2.bin").exists()


def test_a_file_partly_here_says_so(web, mirror):
    serve = web.serve
    status, body = serve.call("POST", "/jobs", {"urls": [mirror.url("big.bin")], "dest": "partial"})
    assert status in (200, 201), body
    (fid,) = body["files"]
    until(lambda: serve.file(fid)["received"] >= 512 * KiB, 20, why="big.bin moves")
    assert serve.call("PATCH", f"/files/{fid}", {"paused": True})[0] == 200
    until(lambda: (web.out / "partial" / "big.bin.segdl-part").exists(), 10, why="its part file is on disk")

    page = add_form(web, mirror.url("big.bin"), dest="partial")
    page.click("#review-btn")
    expect_review(page, ["big.bin"])
    expect(state_cell(page, "big.bin")).to_have_text(re.compile(r"^partly here \(\d+(\.\d)? (KiB|MiB)\)$"))
    # A manifest that gives the size: what is here is not counted again.
    page.fill("#add-text", json.dumps({"files": [{"url": mirror.url("big.bin"), "path": "big.bin", "size": 8 * MiB}]}))
    page.click("#review-btn")
    expect(page.locator("#review-total")).to_contain_text(re.compile(r"8\.0 MiB · to fetch [\d.]+ MiB"))
    expect(state_cell(page, "big.bin")).to_contain_text("partly here")
    here = re.fullmatch(r"partly here \(([\d.]+) (KiB|MiB)\)", state_cell(page, "big.bin").text_content())
    total = page.locator("#review-total").text_content()
    left = re.search(r"to fetch ([\d.]+) MiB", total)
    assert here and left, total
    here_mib = float(here[1]) / (1024 if here[2] == "KiB" else 1)
    assert 0 < float(left[1]) < 8 and abs(float(left[1]) + here_mib - 8) <= 0.1, (total, here[0])
    # The same list in another folder is not here at all.
    page.fill("#add-dest", "elsewhere")
    page.click("#review-btn")
    expect(state_cell(page, "big.bin")).to_have_text("not here")
    assert serve.call("DELETE", f"/files/{fid}")[0] == 200  # (nothing left moving)


def test_not_enough_space_is_shown_and_start_asks_first(web):
    huge = 2 ** 52  # 4 PiB
    manifest = {"files": [{"url": "http://127.0.0.1:9/huge.bin", "path": "space/huge.bin", "size": huge},
                          {"url": "http://127.0.0.1:9/tiny.bin", "path": "space/tiny.bin", "size": 10}]}
    page = add_form(web, json.dumps(manifest))
    page.click("#review-btn")
    total = page.locator("#review-total")
    expect(total).to_contain_text("NOT ENOUGH SPACE")
    expect(total).to_have_class(re.compile(r"\bbad\b"))
    before = len(jobs(web))

    page.click("#start")
    dialog = page.locator("#ask")
    expect(dialog).to_be_visible()
    expect(page.locator("#ask-text")).to_contain_text(f"Not enough space in {web.out}")
    expect(page.locator("#ask-text")).to_contain_text("Start anyway?")
    dialog.locator("button[value=cancel]").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#message")).to_contain_text("not started: not enough space")
    assert len(jobs(web)) == before
    expect(page.locator("#review")).to_be_visible()  # (the review stays, to pick fewer files)

    # Without the huge file the warning goes, and Start asks nothing.
    page.locator('#review-rows tr[data-path="space/huge.bin"] input').uncheck()
    expect(total).to_contain_text("1 of 2 files selected")
    expect(total).not_to_contain_text("NOT ENOUGH SPACE")
    expect(total).not_to_have_class(re.compile(r"\bbad\b"))


def test_a_civitai_reference_is_reviewed_with_its_files(web, tmp_path, monkeypatch):
    """``civitai://model/ID`` pasted: the review lists the model's file
    from the CivitAI stand-in (its size from the listing; the hub's token
    is the service's only: it never reaches the page), and Start fetches
    it, verified."""
    from hubserver import HubServer
    from serving import Serve
    from test_hubs_civitai import CONTENT, KEY, _file, _model
    from test_web import log_in
    from test_web_api import login_urls

    with HubServer() as hub:
        hub.add_model(_model(1, "Cute LoRA", [
            (12, "v2", [_file(121, "cute-v2.safetensors", primary=True), _file(123, "cute-vae.safetensors", "VAE")])]),
            CONTENT)
        monkeypatch.setenv("CIVITAI_ENDPOINT", hub.hub_url)
        monkeypatch.setenv("CIVITAI_TOKEN", KEY)
        serve = Serve(tmp_path / "serve", "-x", "1").start()
        try:
            until(lambda: login_urls(serve), 10, why="segdl serve prints a login URL")
            page = web.page.context.new_page()
            log_in(page, serve)
            page.click("button[data-view=add]")
            page.fill("#add-text", "civitai://model/1")
            page.click("#review-btn")
            # (its latest version's primary file, by default, in the model's folder)
            main = "Cute LoRA/cute-v2.safetensors"
            expect_review(page, [main])
            expect(page.locator(f'#review-rows tr[data-path="{main}"] td').nth(3)).to_have_text(
                f"{len(CONTENT[121]) / 1024:.1f} KiB")
            assert KEY not in page.content()
            page.click("#start")
            expect(page.locator("#message")).to_contain_text("1 file(s)")
            job = serve.call("GET", "/jobs")[1]["jobs"][0]["id"]
            (f,) = serve.wait_files(job, timeout=30)
            assert f["state"] == "done" and Path(f["path"]).read_bytes() == CONTENT[121]
            page.close()
        finally:
            serve.stop()
