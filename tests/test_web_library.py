"""The web page's Library in a real browser (issue 20): Debian's Chromium
through Playwright (fixtures of test_web.py) against a real `segdl serve`,
a real paced mirror and the hub stand-in.

A hub collection done here, one of whose files the hub then changes, and
a job of URLs with one file cancelled and one a 404: the tabs count and
filter them (here, not here, failed, changed upstream: the page reviews
the hub collection again, and a file fetched since as the hub has it
leaves that tab); a file is deleted from disk and the journal after its
dialog; one click on the job fetches what of it is not here.

Thousands of done files: every one reachable through the pager, rows
patched in place, so a click held while the rows update still lands.  A
done file deleted from disk counts as not here after a reload; the
Verified column is the journal's (it stays after a reload).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from segdl.engine.rules.ranges import KiB

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from serving import Serve, serve_with_hub  # noqa: E402
from test_serve_api import until  # noqa: E402
from test_web import browser, files_by_name, logged_in_page, mirror, serve, shot  # noqa: E402,F401 (fixtures)
from test_web_api import login_urls  # noqa: E402


def test_library_tabs_count_and_filter_then_delete_and_fetch_what_is_missing(browser, mirror, tmp_path, monkeypatch):
    hub_files = {"config.json": (b'{"v": 1}\n', False), "w-00001.safetensors": (os.urandom(100 * KiB), True),
                 "w-00002.safetensors": (os.urandom(100 * KiB), True)}
    with serve_with_hub(tmp_path, monkeypatch, hub_files, "-x", "2", "-j", "4") as (repo, serve):
        until(lambda: login_urls(serve), 10)
        status, hub_job = serve.call("POST", "/jobs", {"ref": "hf://org/model"})
        assert status == 201, hub_job
        serve.wait_files(hub_job["job"])
        (mirror.root / "drift.bin").write_bytes(os.urandom(40 * KiB))
        urls = [mirror.url(n) for n in ("small0.bin", "big0.bin", "late.bin", "drift.bin")]
        status, job = serve.call("POST", "/jobs", {"urls": urls})
        big0 = files_by_name(serve)["big0.bin"]["id"]
        assert serve.call("DELETE", f"/files/{big0}")[0] == 200  # cancelled: not here
        until(lambda: serve.call("GET", f"/jobs/{job['job']}")[1]["state"] == "finished", 30,
              why="the job ends (late.bin: 404)")
        changed = {**hub_files, "w-00001.safetensors": (os.urandom(100 * KiB), True),
                   "w-00002.safetensors": (os.urandom(100 * KiB), True)}
        repo.commit(changed)  # the hub's branch moves: both weights are other content now
        (mirror.root / "drift.bin").write_bytes(os.urandom(50 * KiB))  # and a plain URL's file changes on its server
        ids = {n: f["id"] for n, f in files_by_name(serve).items()}

        page, errors = logged_in_page(browser, serve)
        page.click("button[data-view=library]")
        count = lambda tab: page.locator(f"button.lib-tab[data-tab={tab}] .count")  # noqa: E731
        shown = lambda: sorted(int(i) for i in page.locator("#lib-rows tr").evaluate_all(  # noqa: E731
            "rows => rows.map(r => r.dataset.id)"))
        for tab, n in (("here", "5"), ("missing", "1"), ("failed", "1"), ("changed", "?")):
            expect(count(tab)).to_have_text(n)
        expect(page.locator("#lib-rows tr")).to_have_count(5)
        assert shown() == sorted(ids[n] for n in ("config.json", "w-00001.safetensors", "w-00002.safetensors",
                                                  "small0.bin", "drift.bin"))
        page.click("button.lib-tab[data-tab=missing]")
        expect(page.locator("#lib-rows tr")).to_have_count(1)
        assert shown() == [big0]
        page.click("button.lib-tab[data-tab=failed]")
        expect(page.locator("#lib-rows tr")).to_have_count(1)
        expect(page.locator(f'#lib-rows tr[data-id="{ids["late.bin"]}"]')).to_contain_text("404")

        # Changed upstream: the hub collection reviewed again (POST /review
        # {job}), and the job of URLs against what their server says now.
        page.click("button.lib-tab[data-tab=changed]")
        expect(page.locator("#message")).to_have_text("checked 2 collection(s) upstream: 3 file(s) changed")
        expect(count("changed")).to_have_text("3")
        expect(page.locator("#lib-rows tr")).to_have_count(3)
        assert shown() == sorted([ids["w-00001.safetensors"], ids["w-00002.safetensors"], ids["drift.bin"]])
        shot(page, tmp_path, "library-changed", docs=False)

        # Delete the changed file with its entry: the dialog first; Back keeps it.
        target = serve.out / "w-00002.safetensors"
        page.locator(f'#lib-rows tr[data-id="{ids["w-00002.safetensors"]}"] button[data-act=erase]').click()
        expect(page.locator("#ask-text")).to_contain_text("Delete w-00002.safetensors from disk")
        page.click("#ask button[value=cancel]")
        expect(page.locator("#ask")).not_to_be_visible()
        assert target.exists() and serve.call("GET", f"/files/{ids['w-00002.safetensors']}")[0] == 200
        page.locator(f'#lib-rows tr[data-id="{ids["w-00002.safetensors"]}"] button[data-act=erase]').click()
        page.click("#ask-ok")
        expect(page.locator("#message")).to_have_text("w-00002.safetensors: deleted")
        assert not target.exists() and serve.call("GET", f"/files/{ids['w-00002.safetensors']}")[0] == 404
        expect(count("changed")).to_have_text("2")
        expect(count("here")).to_have_text("4")
        # w-00001 fetched as the hub has it now: no longer what changed.
        status, update = serve.call("POST", "/jobs", {"ref": "hf://org/model", "select": ["w-00001.safetensors"]})
        assert status == 201, update
        serve.wait_files(update["job"])
        assert (serve.out / "w-00001.safetensors").read_bytes() == changed["w-00001.safetensors"][0]
        expect(count("changed")).to_have_text("1")
        expect(page.locator("#lib-rows tr")).to_have_count(1)
        expect(count("here")).to_have_text("4")

        # One click on the job of URLs: the cancelled and the failed file again.
        (mirror.root / "late.bin").write_bytes(b"late" * 1000)
        page.locator(f'#job-rows tr[data-job="{job["job"]}"] button[data-act=fetch-missing]').click()
        expect(page.locator("#message")).to_have_text(f"job {job['job']}: fetching 2 file(s) that were not here")
        until(lambda: serve.file(ids["late.bin"])["state"] == "done", 30, why="late.bin is fetched")
        assert (serve.out / "late.bin").read_bytes() == b"late" * 1000
        assert serve.file(big0)["state"] in ("queued", "downloading")
        expect(count("failed")).to_have_text("0")
        expect(count("here")).to_have_text("5")
        expect(count("missing")).to_have_text("1")  # big0, on its way
        assert errors == []
    assert Path(serve.out / "config.json").exists()


def test_thousands_of_done_files_page_and_a_click_during_live_updates_lands(browser, mirror, tmp_path):
    """2,500 done files (on disk as the journal says) and one file
    downloading (paced), so events keep coming: the Library shows 200 rows a
    page and every file is on one of them; a row stays the same element
    while the rows update, and a press on its button held 150 ms (mouse
    down, then up) opens its dialog every time."""
    from segdl.engine.journal.writer import Journal

    n = 2500
    serve = Serve(tmp_path / "serve", "-x", "1")
    out = serve.out.resolve()
    out.mkdir(parents=True)
    j = Journal(serve.journal)
    try:
        with j.atomic():
            job = j.create_job(out, {"origin": "serve", "requests": []}, collection="many")
            for i in range(n):
                path = out / f"f-{i:05d}.bin"
                path.write_bytes(b"%d" % i)
                st = path.stat()
                j.put_file(job, f"http://127.0.0.1:9/f-{i:05d}.bin", path, state="done", size=st.st_size,
                           mtime=st.st_mtime)
        j.finish_job(job)
    finally:
        j.close()
    serve.start()
    try:
        until(lambda: login_urls(serve), 10)
        done = {f["id"] for f in serve.call("GET", "/files?limit=10000")[1]["files"]}
        assert len(done) == n
        status, live = serve.call("POST", "/jobs", {"urls": [mirror.url("big0.bin")]})
        assert status == 201, live
        big0 = live["files"][0]
        until(lambda: serve.file(big0)["state"] == "downloading", 20, why="big0 downloads (events keep coming)")

        page, errors = logged_in_page(browser, serve)
        page.click("button[data-view=library]")
        expect(page.locator("button.lib-tab[data-tab=here] .count")).to_have_text(str(n))
        expect(page.locator("#lib-page")).to_have_text(f"page 1 of 13 ({n} files)")
        seen: set[int] = set()
        for p in range(13):
            expect(page.locator("#lib-page")).to_have_text(f"page {p + 1} of 13 ({n} files)")
            expect(page.locator("#lib-rows tr")).to_have_count(200 if p < 12 else n - 12 * 200)
            seen |= {int(i) for i in page.locator("#lib-rows tr").evaluate_all("rows => rows.map(r => r.dataset.id)")}
            page.click("#lib-next")
        assert seen == done
        expect(page.locator("#lib-page")).to_have_text(f"page 13 of 13 ({n} files)")  # (no page past the last)
        page.click("#lib-prev")
        expect(page.locator("#lib-page")).to_have_text(f"page 12 of 13 ({n} files)")

        # Live: big0's progress keeps the page drawing; the rows stay put.
        first = page.locator("#lib-rows tr").first
        first.evaluate("tr => { tr.dataset.mark = 'kept'; }")
        time.sleep(1.5)
        assert serve.file(big0)["state"] == "downloading"
        expect(first).to_have_attribute("data-mark", "kept")
        button = first.locator("button[data-act=erase]")
        button.scroll_into_view_if_needed()
        for _ in range(12):
            box = button.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.wait_for_timeout(150)
            page.mouse.up()
            expect(page.locator("#ask")).to_be_visible(timeout=2000)
            expect(page.locator("#ask-text")).to_contain_text("from disk and forget it in the journal?")
            page.click("#ask button[value=cancel]")
            expect(page.locator("#ask")).not_to_be_visible()
        assert serve.file(big0)["state"] == "downloading"  # (the updates went on throughout)
        assert len(serve.call("GET", "/files?limit=10000")[1]["files"]) == n + 1  # nothing deleted
        assert errors == []
    finally:
        serve.stop()


def test_a_file_gone_from_disk_is_not_here_and_verified_stays_after_a_reload(browser, serve, mirror):
    status, job = serve.call("POST", "/jobs", {"urls": [mirror.url(n) for n in ("small0.bin", "small1.bin",
                                                                                   "small2.bin")]})
    assert status == 201, job
    serve.wait_files(job["job"])
    ids = {n: f["id"] for n, f in files_by_name(serve).items()}
    page, errors = logged_in_page(browser, serve)
    page.click("button[data-view=library]")
    count = lambda tab: page.locator(f"button.lib-tab[data-tab={tab}] .count")  # noqa: E731
    lib_row = lambda n: page.locator(f'#lib-rows tr[data-id="{ids[n]}"]')  # noqa: E731
    expect(count("here")).to_have_text("3")

    # Re-verify small0: ok, in the journal (the column after a reload too).
    lib_row("small0.bin").locator("input").check()
    page.click("#reverify")
    expect(page.locator("#message")).to_have_text("verified: 1 ok, 0 corrupt, 0 missing")
    expect(lib_row("small0.bin").locator("td").nth(5)).to_have_text("ok")
    assert serve.file(ids["small0.bin"])["checked"]["result"] == "ok"

    # small1 deleted behind segdl's back: not here (no download link) once reloaded.
    (serve.out / "small1.bin").unlink()
    page.reload()
    expect(page.locator("#conn")).to_have_text("live")
    page.click("button[data-view=library]")
    expect(count("here")).to_have_text("2")
    expect(count("missing")).to_have_text("1")
    expect(page.locator("#lib-rows tr")).to_have_count(2)
    expect(lib_row("small1.bin")).to_have_count(0)
    expect(lib_row("small0.bin").locator("td").nth(5)).to_have_text("ok")
    expect(lib_row("small2.bin").locator("td").nth(5)).to_have_text("")
    page.click("button.lib-tab[data-tab=missing]")
    expect(page.locator("#lib-rows tr")).to_have_count(1)
    expect(lib_row("small1.bin")).to_contain_text("no longer at its path")
    expect(lib_row("small1.bin").locator("a")).to_be_hidden()
    assert errors == []
