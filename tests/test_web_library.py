"""The web page's Library in a real browser (issue 20): Debian's Chromium
through Playwright (fixtures of test_web.py) against a real `segdl serve`,
a real paced mirror and the hub stand-in.

A hub collection done here, one of whose files the hub then changes, and
a job of URLs with one file cancelled and one a 404: the tabs count and
filter them (here, not here, failed, changed upstream: the page reviews
the hub collection again, and a file fetched since as the hub has it
leaves that tab); a file is deleted from disk and the journal after its
dialog; one click on the job fetches what of it is not here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segdl.engine.rules.ranges import KiB

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from serving import serve_with_hub  # noqa: E402
from test_serve_api import until  # noqa: E402
from test_web import browser, files_by_name, log_in, mirror, shot  # noqa: E402,F401 (fixtures)
from test_web_api import login_urls  # noqa: E402


def test_library_tabs_count_and_filter_then_delete_and_fetch_what_is_missing(browser, mirror, tmp_path, monkeypatch):
    hub_files = {"config.json": (b'{"v": 1}\n', False), "w-00001.safetensors": (os.urandom(100 * KiB), True),
                 "w-00002.safetensors": (os.urandom(100 * KiB), True)}
    with serve_with_hub(tmp_path, monkeypatch, hub_files, "-x", "2", "-j", "4") as (repo, serve):
        until(lambda: login_urls(serve), 10)
        status, hub_job = serve.call("POST", "/jobs", {"ref": "hf://org/model"})
        assert status == 201, hub_job
        serve.wait_files(hub_job["job"])
        urls = [mirror.url(n) for n in ("small0.bin", "big0.bin", "late.bin")]
        status, job = serve.call("POST", "/jobs", {"urls": urls})
        big0 = files_by_name(serve)["big0.bin"]["id"]
        assert serve.call("DELETE", f"/files/{big0}")[0] == 200  # cancelled: not here
        until(lambda: serve.call("GET", f"/jobs/{job['job']}")[1]["state"] == "finished", 30,
              why="the job ends (late.bin: 404)")
        changed = {**hub_files, "w-00001.safetensors": (os.urandom(100 * KiB), True),
                   "w-00002.safetensors": (os.urandom(100 * KiB), True)}
        repo.commit(changed)  # the hub's branch moves: both weights are other content now
        ids = {n: f["id"] for n, f in files_by_name(serve).items()}

        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        log_in(page, serve)
        page.click("button[data-view=library]")
        count = lambda tab: page.locator(f"button.lib-tab[data-tab={tab}] .count")  # noqa: E731
        shown = lambda: sorted(int(i) for i in page.locator("#lib-rows tr").evaluate_all(  # noqa: E731
            "rows => rows.map(r => r.dataset.id)"))
        for tab, n in (("here", "4"), ("missing", "1"), ("failed", "1"), ("changed", "?")):
            expect(count(tab)).to_have_text(n)
        expect(page.locator("#lib-rows tr")).to_have_count(4)
        assert shown() == sorted(ids[n] for n in ("config.json", "w-00001.safetensors", "w-00002.safetensors",
                                                  "small0.bin"))
        page.click("button.lib-tab[data-tab=missing]")
        expect(page.locator("#lib-rows tr")).to_have_count(1)
        assert shown() == [big0]
        page.click("button.lib-tab[data-tab=failed]")
        expect(page.locator("#lib-rows tr")).to_have_count(1)
        expect(page.locator(f'#lib-rows tr[data-id="{ids["late.bin"]}"]')).to_contain_text("404")

        # Changed upstream: the hub collection reviewed again (POST /review {job}).
        page.click("button.lib-tab[data-tab=changed]")
        expect(page.locator("#message")).to_have_text("checked 1 collection(s) upstream: 2 file(s) changed")
        expect(count("changed")).to_have_text("2")
        expect(page.locator("#lib-rows tr")).to_have_count(2)
        assert shown() == sorted([ids["w-00001.safetensors"], ids["w-00002.safetensors"]])
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
        expect(count("changed")).to_have_text("1")
        expect(count("here")).to_have_text("3")
        # w-00001 fetched as the hub has it now: no longer what changed.
        status, update = serve.call("POST", "/jobs", {"ref": "hf://org/model", "select": ["w-00001.safetensors"]})
        assert status == 201, update
        serve.wait_files(update["job"])
        assert (serve.out / "w-00001.safetensors").read_bytes() == changed["w-00001.safetensors"][0]
        expect(count("changed")).to_have_text("0")
        expect(page.locator("#lib-rows tr")).to_have_count(0)
        expect(count("here")).to_have_text("3")

        # One click on the job of URLs: the cancelled and the failed file again.
        (mirror.root / "late.bin").write_bytes(b"late" * 1000)
        page.locator(f'#job-rows tr[data-job="{job["job"]}"] button[data-act=fetch-missing]').click()
        expect(page.locator("#message")).to_have_text(f"job {job['job']}: fetching 2 file(s) that were not here")
        until(lambda: serve.file(ids["late.bin"])["state"] == "done", 30, why="late.bin is fetched")
        assert (serve.out / "late.bin").read_bytes() == b"late" * 1000
        assert serve.file(big0)["state"] in ("queued", "downloading")
        expect(count("failed")).to_have_text("0")
        expect(count("here")).to_have_text("4")
        expect(count("missing")).to_have_text("1")  # big0, on its way
        assert errors == []
    assert Path(serve.out / "config.json").exists()
