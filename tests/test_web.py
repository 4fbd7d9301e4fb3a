"""The web page of `segdl serve` in a real browser (issue 20): Debian's
Chromium, headless, driven by Playwright (which never downloads a browser
here: ``executable_path`` is Debian's), against a real `segdl serve` and a
real paced mirror on 127.0.0.1.

* test_the_page_drives_a_collection_from_review_to_verify: log in through
  the printed URL; add URLs; review and deselect two; start; pause one and
  see its bytes stop in the mirror's log; resume; limits; cancel; retry a
  404 once the mirror has the file; re-verify after a byte is damaged on
  disk, then fetch it again.  Screenshots of the three views on the way
  (into docs/ when SEGDL_SCREENSHOTS=docs).
* test_the_speed_chart_the_keys_and_a_notification_when_the_job_ends.
* test_slow_mode_is_the_services: ticked or not, and the limit it puts
  back, after a reload, in a second page and after a PATCH from elsewhere.
* test_the_chart_spans_from_its_first_sample.
* test_a_login_link_on_another_local_page_logs_in: the printed URL opened
  from a link on a page of another local origin (same site, and cross-site).
* test_another_local_origin_can_neither_read_nor_change_anything: a page
  on another port of 127.0.0.1 (the same *site*, so the browser sends the
  session cookie) tries fetch, a form post, an image and an EventSource.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from helpers import cut_short
from servers import PacedMirror
from segdl.cli.fileserver import SEND_STEP
from segdl.engine.rules.ranges import KiB, MiB

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from serving import Serve, serve_with_hub  # noqa: E402
from test_serve_api import until  # noqa: E402
from test_web_api import login_urls  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
RATE = 256 * KiB  # bytes/s per connection
DOCS = Path(__file__).resolve().parent.parent / "docs"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's Chromium is needed: apt-get install -y chromium (test.sh installs it)"
    return path


@pytest.fixture
def browser(tmp_path):
    """A fresh Chromium profile (its own --user-data-dir) at 1280x800."""
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(30000)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    for i in range(2):
        (root / f"big{i}.bin").write_bytes(os.urandom(8 * MiB))
    for i in range(4):
        (root / f"small{i}.bin").write_bytes(os.urandom(64 * KiB))
    with PacedMirror(root, rate=RATE) as m:
        m.root = root
        yield m


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path / "serve", "-x", "1", "--max-connections", "16", "-j", "8")
    s.start()
    until(lambda: login_urls(s), 10, why="segdl serve prints a login URL")
    yield s
    s.stop()


# Each Notification the page makes, recorded (the real one is still made):
# a desktop notification is out of the page's reach to read back.
NOTES = """window.notes = [];
const Real = window.Notification;
window.Notification = class extends Real {
  constructor(title, options) { super(title, options); window.notes.push([title, (options || {}).body]); }
};"""
# Whether the chart has ink in its upper half (an idle chart is a flat line at the bottom).
RISEN = """() => { const c = document.getElementById('chart');
  const d = c.getContext('2d').getImageData(0, 0, c.width, Math.floor(c.height / 2)).data;
  for (let i = 3; i < d.length; i += 4) if (d[i]) return true;
  return false; }"""


def log_in(page, serve: Serve) -> None:
    url = login_urls(serve)[-1]
    with page.expect_response(f"http://{serve.host}:{serve.port}/") as home:
        page.goto(url)  # (its answer's own refresh goes on to /)
    page.wait_for_url(f"http://{serve.host}:{serve.port}/")  # the code is gone from the address bar
    response = home.value
    assert response.status == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("#conn")).to_have_text("live")


def logged_in_page(browser, serve: Serve, init_script: str | None = None):
    """A new page of ``browser``, logged in to ``serve``, and the list its
    script errors go to (a test ends by asserting it empty)."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if init_script:
        page.add_init_script(init_script)
    log_in(page, serve)
    return page, errors


def service_limits(serve: Serve) -> dict:
    """The service's limits as GET /service tells them."""
    return serve.call("GET", "/service")[1]["limits"]


def shot(page, tmp_path: Path, name: str, docs: bool = True) -> Path:
    out = tmp_path / f"web-{name}.png"
    page.screenshot(path=str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if docs and os.environ.get("SEGDL_SCREENSHOTS") == "docs":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(out, DOCS / out.name)
    return out


def files_by_name(serve: Serve) -> dict[str, dict]:
    """The newest file of each name, as the API lists them."""
    status, page = serve.call("GET", "/files?limit=10000")
    assert status == 200
    return {Path(f["path"]).name: f for f in page["files"]}


def sent(mirror, name: str) -> int:
    """Body bytes the mirror's log says it sent of ``name`` (requests that ended)."""
    return sum(e["body_bytes_sent"] for e in mirror.access_log_entries() if e["path"] == f"/{name}")


def row(page, name: str):
    return page.locator("#rows tr", has=page.locator(f'td.name[title$="/{name}"]'))


def test_the_page_drives_a_collection_from_review_to_verify(browser, serve, mirror, tmp_path):
    page, errors = logged_in_page(browser, serve)

    # Add: paste the URLs, review, leave two out, start.
    names = ["big0.bin", "big1.bin", "small0.bin", "small1.bin", "small2.bin", "small3.bin", "late.bin"]
    page.click("button[data-view=add]")
    page.fill("#add-text", "\n".join(mirror.url(n) for n in names))
    page.click("#review-btn")
    expect(page.locator("#review-rows tr")).to_have_count(7)
    for n in names:
        # (late.bin is a 404 until later: its server says so at the review)
        expect(page.locator(f'#review-rows tr[data-path="{n}"] td').nth(4)).to_have_text(
            "unavailable: HTTP 404 (not found)" if n == "late.bin" else "not here")
    for n in ("small2.bin", "small3.bin"):
        page.locator(f'#review-rows tr[data-path="{n}"] input').uncheck()
    expect(page.locator("#review-total")).to_contain_text("5 of 7 files selected")
    expect(page.locator("#review-total")).to_contain_text("free in")
    shot(page, tmp_path, "add", docs=False)
    page.click("#start")
    expect(page.locator("#message")).to_contain_text("5 file(s)")
    status, jobs = serve.call("GET", "/jobs")
    assert [j["requested"] for j in jobs["jobs"]] == [5]
    until(lambda: set(files_by_name(serve)) == {"big0.bin", "big1.bin", "small0.bin", "small1.bin", "late.bin"}, 20)

    # Downloads: live rows.  Pause big0 and see its bytes stop at the mirror.
    expect(row(page, "big0.bin").locator("td").nth(2)).to_have_text("downloading")
    until(lambda: files_by_name(serve)["big0.bin"]["received"] > 0, 20, why="big0 moves")
    until(lambda: page.evaluate(RISEN), 10, why="the chart has a sample of it")
    shot(page, tmp_path, "downloads")
    row(page, "big0.bin").locator("button[data-act=toggle]").click()
    expect(row(page, "big0.bin").locator("td").nth(2)).to_have_text("paused")
    big0 = files_by_name(serve)["big0.bin"]["id"]
    assert serve.file(big0)["paused"] is True
    # None of big0's requests is left at the mirror (each one logs what it
    # sent when it ends).
    until(lambda: "/big0.bin" not in mirror.server.serving(), 20, why="the paused file's request ends at the mirror")
    stopped = sent(mirror, "big0.bin")

    def settled():
        """What the engine counts as arrived stops moving (bytes in flight
        when the request ended are still counted, a moment later)."""
        before = serve.file(big0)["received"]
        time.sleep(0.5)
        return before if serve.file(big0)["received"] == before else None

    received = until(settled, 20, why="big0's bytes stop arriving")
    time.sleep(2)  # (a paused file must not move: nothing to wait for)
    # (A request cut mid-body logs what it sent to within a step: the last
    # sendfile call's bytes are lost with its error, fileserver.py.)
    cut = cut_short([e for e in mirror.access_log_entries() if e["path"] == "/big0.bin"])
    assert sent(mirror, "big0.bin") == stopped
    assert serve.file(big0)["received"] == received <= stopped + cut * SEND_STEP
    row(page, "big0.bin").locator("button[data-act=toggle]").click()
    until(lambda: serve.file(big0)["received"] > received, 20, why="big0 moves again once resumed")
    expect(row(page, "big0.bin").locator("td").nth(2)).to_have_text("downloading")

    # A file's limit: the rate follows.  The global limit, and slow mode.
    big1 = files_by_name(serve)["big1.bin"]["id"]
    row(page, "big1.bin").locator("button[data-act=limit]").click()
    page.fill("#ask-input", "48K")
    page.click("#ask-ok")
    expect(row(page, "big1.bin").locator("td").nth(6)).to_have_text("48.0 KiB/s")
    assert serve.file(big1)["max_speed"] == 48 * KiB
    until(lambda: 0 < serve.file(big1)["speed"] <= 48 * KiB * 1.5, 30, step=0.3,
          why="big1's speed comes down to its limit")
    page.fill("#global-limit", "20M")
    page.click("#limits button[type=submit]")
    until(lambda: serve.call("GET", "/service")[1]["limits"]["max_speed"] == 20 * MiB, 10)
    page.check("#slow-mode")
    until(lambda: serve.call("GET", "/service")[1]["limits"]["max_speed"] == 256 * KiB, 10)
    page.uncheck("#slow-mode")
    until(lambda: serve.call("GET", "/service")[1]["limits"]["max_speed"] == 20 * MiB, 10,
          why="slow mode off restores the limit before it")

    # Cancel big1, without keeping its partial data.
    row(page, "big1.bin").locator("button[data-act=cancel]").click()
    page.click("#ask-ok")
    until(lambda: serve.file(big1)["state"] == "removed", 15)
    expect(row(page, "big1.bin").locator("td").nth(2)).to_have_text("removed")
    assert not [p for p in serve.out.rglob("big1.bin*")]

    # late.bin is a 404 until the mirror has it; then retry fetches it.
    until(lambda: files_by_name(serve)["late.bin"]["state"] == "failed", 30)
    expect(row(page, "late.bin").locator("button[data-act=retry]")).to_be_visible()
    (mirror.root / "late.bin").write_bytes(b"late" * 1000)
    row(page, "late.bin").locator("button[data-act=retry]").click()
    until(lambda: files_by_name(serve)["late.bin"]["state"] == "done", 30)
    expect(row(page, "late.bin").locator("td").nth(2)).to_have_text("done")
    assert (serve.out / "late.bin").read_bytes() == b"late" * 1000

    # Verify: a damaged byte is found from the Library, recorded, fetched again.
    until(lambda: files_by_name(serve)["small0.bin"]["state"] == "done", 30)
    small0 = files_by_name(serve)["small0.bin"]["id"]
    with open(serve.out / "small0.bin", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x55]))
    page.click("button[data-view=library]")
    lib_row = page.locator(f'#lib-rows tr[data-id="{small0}"]')
    lib_row.locator("input").check()
    page.click("#reverify")
    expect(page.locator("#message")).to_contain_text("1 corrupt")
    assert serve.file(small0)["state"] == "hash_mismatch"
    page.click("button.lib-tab[data-tab=failed]")
    expect(page.locator(f'#lib-rows tr[data-id="{small0}"]')).to_contain_text("corrupt on disk")
    shot(page, tmp_path, "library")
    # (A path stays its job's until that job ends: end it, with a bulk
    # cancel of the file still running, keeping its partial data.)
    page.click("button[data-view=downloads]")
    row(page, "big0.bin").locator("td").first.locator("input").check()
    row(page, "small1.bin").locator("td").first.locator("input").check()
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.click("button[data-bulk=cancel]")
    page.check("#ask-keep")
    page.click("#ask-ok")
    expect(page.locator("#message")).to_contain_text("1 changed, 1 not")  # small1 is done: not cancelled
    until(lambda: serve.file(big0)["state"] == "removed", 15)
    assert [p.name for p in serve.out.glob("big0.bin*")] != []  # its partial data kept
    until(lambda: serve.call("GET", "/jobs")[1]["jobs"][0]["state"] == "finished", 30, why="the first job ends")
    page.click("button[data-view=library]")
    page.click("#lib-retry")
    expect(page.locator("#message")).to_contain_text("1 job(s) fetching")
    until(lambda: files_by_name(serve)["small0.bin"]["state"] == "done", 30, why=str(files_by_name(serve)["small0.bin"]))
    assert (serve.out / "small0.bin").read_bytes() == (mirror.root / "small0.bin").read_bytes()
    page.click("button[data-view=downloads]")
    row(page, "small0.bin").locator("button[data-act=verify]").click()
    expect(page.locator("#message")).to_have_text("small0.bin: ok")
    page.click("button[data-view=library]")
    # A finished file, downloaded through the browser from the Library.
    page.click("button.lib-tab[data-tab=here]")
    small1 = files_by_name(serve)["small1.bin"]["id"]
    with page.expect_download() as got:
        page.locator(f'#lib-rows tr[data-id="{small1}"] a').click()
    assert got.value.suggested_filename == "small1.bin"
    assert Path(got.value.path()).read_bytes() == (mirror.root / "small1.bin").read_bytes()
    assert errors == []


EVIL = """<!doctype html><html><body><pre id=out></pre>
<iframe name=sink></iframe>
<form id=f method=post enctype=text/plain target=sink action="TARGET/jobs">
<input name='{"urls": ["http://127.0.0.1:9/x"], "pad": "' value='"}'></form>
<script>
const T = "TARGET", out = {};
const done = (k, v) => { out[k] = v; document.getElementById('out').textContent = JSON.stringify(out); };
fetch(T + '/service', {credentials: 'include'}).then(r => r.text()).then(t => done('read', t), e => done('read', 'blocked'));
fetch(T + '/limits', {method: 'PATCH', credentials: 'include', mode: 'no-cors', headers: {'Content-Type': 'text/plain'},
      body: '{"max_speed": 1}'}).then(() => done('nocors', 'sent'), () => done('nocors', 'blocked'));
fetch(T + '/limits', {method: 'PATCH', credentials: 'include', headers: {'Content-Type': 'application/json',
      'X-Segdl-Request': '1'}, body: '{"max_speed": 2}'}).then(() => done('cors', 'sent'), () => done('cors', 'blocked'));
const img = new Image(); img.onload = () => done('img', 'loaded'); img.onerror = () => done('img', 'error');
img.src = T + '/service';
const es = new EventSource(T + '/events'); es.onopen = () => done('es', 'open');
es.onerror = () => { done('es', 'error'); es.close(); };
document.getElementById('f').submit(); done('form', 'submitted');
</script></body></html>"""


class OtherOrigin(http.server.BaseHTTPRequestHandler):
    """Another local web server (a notebook, say), reachable as 127.0.0.1 and
    as localhost: ``/links`` is a page with a link to ``server.login``, any
    other path the EVIL page aimed at ``server.target``."""

    def do_GET(self):
        if self.path == "/links":
            body = f'<!doctype html><a id="login" href="{self.server.login}">segdl</a>'.encode()
        else:
            body = EVIL.replace("TARGET", self.server.target).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def other_origin(serve):
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtherOrigin)
    other.target = f"http://{serve.host}:{serve.port}"
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        yield other
    finally:
        other.shutdown()
        other.server_close()


def test_a_login_link_on_another_local_page_logs_in(browser, serve, other_origin):
    """The printed URL opened from a link on another local page: from
    127.0.0.1:OTHER (the same site, another origin) and from
    localhost:OTHER (another site).  The navigation stays foreign through
    any redirect, so the cookie would not count on it (and, cross-site, not
    be sent): the login answers with a page whose own navigation goes on."""
    home = f"http://{serve.host}:{serve.port}/"
    page = browser.new_page()
    for n, host in enumerate(("127.0.0.1", "localhost")):
        until(lambda: len(login_urls(serve)) == n + 1, 10, why="a fresh code follows each login")
        other_origin.login = login_urls(serve)[-1]
        page.goto(f"http://{host}:{other_origin.server_address[1]}/links")
        page.click("#login")
        page.wait_for_url(home)
        expect(page.locator("#conn")).to_have_text("live")  # the page's own requests carry the session
        expect(page.locator("#message")).to_be_hidden()
        page.click("#logout")
        expect(page.locator("#message")).to_contain_text("logged out")
    assert page.goto(home).status == 401  # logged out: what was live was the session's


def test_another_local_origin_can_neither_read_nor_change_anything(browser, serve, other_origin):
    page = browser.new_page()
    log_in(page, serve)
    # After login: no token and no code anywhere the page's scripts or a URL can reach.
    token = serve.token()
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.evaluate("document.cookie") == ""  # HttpOnly
    assert token not in page.content() and "code=" not in page.url
    for asset in ("/web/app.js", "/web/util.js", "/web/downloads.js", "/web/add.js", "/web/library.js",
                  "/web/formats.js", "/web/store.js", "/web/app.css"):
        assert token not in page.request.get(f"http://{serve.host}:{serve.port}{asset}").text()

    # A file name with markup is shown as text.
    page.click("button[data-view=add]")
    evil_name = '<img src=x onerror="document.title=1">.bin'
    page.fill("#add-text", json.dumps({"files": [{"url": "http://127.0.0.1:9/a", "path": evil_name}]}))
    page.click("#review-btn")
    expect(page.locator("#review-rows td.name")).to_have_text(evil_name)
    assert page.locator("#review-rows img").count() == 0 and page.title() == "segdl"

    evil = browser.new_page()
    evil.goto(f"http://127.0.0.1:{other_origin.server_address[1]}/")
    until(lambda: len(json.loads(evil.locator("#out").text_content() or "{}")) == 6, 20,
          why="the other origin's attempts all end")
    got = json.loads(evil.locator("#out").text_content())
    assert got["read"] == "blocked" and got["cors"] == "blocked" and got["img"] == "error" and got["es"] == "error"
    time.sleep(1)  # (the form post and the no-cors fetch were sent: let them land, if they could)
    status, svc = serve.call("GET", "/service")
    assert svc["limits"]["max_speed"] == 0  # not 1, not 2
    assert serve.call("GET", "/jobs")[1]["jobs"] == []  # the form added no job
    # The page itself still works with its session.
    page.click("button[data-view=downloads]")
    expect(page.locator("#conn")).to_have_text("live")


def test_review_of_a_hub_repo_shows_sizes_filters_and_what_changed_upstream(browser, tmp_path, monkeypatch):
    files = {"README.md": (b"# model\n", False), "config.json": (b'{"v": 1}\n', False),
             "w-00001.safetensors": (os.urandom(300 * KiB), True), "w-00002.safetensors": (os.urandom(200 * KiB), True)}
    with serve_with_hub(tmp_path, monkeypatch, files, "-x", "2", "-j", "4") as (repo, serve):
        until(lambda: login_urls(serve), 10)
        page = browser.new_page()
        log_in(page, serve)
        page.click("button[data-view=add]")
        page.fill("#add-text", "hf://org/model")
        page.click("#review-btn")
        expect(page.locator("#review-rows tr")).to_have_count(4)
        big = page.locator('#review-rows tr[data-path="w-00001.safetensors"] td')
        expect(big.nth(2)).to_have_text("safetensors")
        expect(big.nth(3)).to_have_text("300.0 KiB")
        page.click("#sel-none")
        expect(page.locator("#review-total")).to_contain_text("0 of 4 files selected")
        page.fill("#glob", "*.safetensors")
        page.click("#glob-apply")
        expect(page.locator("#review-total")).to_contain_text("2 of 4 files selected · 500.0 KiB")
        page.click("#start")
        expect(page.locator("#message")).to_contain_text("2 file(s)")
        job = serve.call("GET", "/jobs")[1]["jobs"][0]["id"]
        serve.wait_files(job)

        changed = dict(files)
        changed["w-00002.safetensors"] = (os.urandom(200 * KiB), True)
        repo.commit(changed)
        page.click("button[data-view=add]")
        page.click("#review-btn")
        states = {n: page.locator(f'#review-rows tr[data-path="{n}"] td').nth(4) for n in files}
        expect(states["w-00001.safetensors"]).to_have_text("here")
        expect(states["w-00002.safetensors"]).to_have_text("changed upstream")
        expect(states["README.md"]).to_have_text("not here")
        page.click("#sel-missing")
        expect(page.locator("#review-total")).to_contain_text("3 of 4 files selected")
        shot(page, tmp_path, "review")


def test_the_speed_chart_the_keys_and_a_notification_when_the_job_ends(browser, serve, mirror):
    """The job's speed drawn from the event stream; space pauses and
    resumes the focused row, Delete asks, then cancels; with notifications
    allowed, the job's end comes as one, with its counts.  Sizes read as the
    terminal UI writes them (1024 units, the same rounding)."""
    from segdl.cli.ui import fmt

    browser.grant_permissions(["notifications"], origin=f"http://{serve.host}:{serve.port}")
    page, errors = logged_in_page(browser, serve, init_script=NOTES)
    expect(page.locator("#notify")).to_be_hidden()  # allowed already: nothing to ask
    values = [0, 1, 1023, 1024, 1280, 1536, 300 * KiB, MiB - 1, 5 * 1024 * MiB + 1, 1 << 50]
    assert page.evaluate("(vs) => import('/web/util.js').then((m) => vs.map(m.size))", values) == [
        fmt.size(v) for v in values]

    status, job = serve.call("POST", "/jobs", {"manifest": {"collection": "keys", "files": [
        {"url": mirror.url("big0.bin")}, {"url": mirror.url("small0.bin")}]}})
    assert status == 201, job
    big0 = job["files"][0]
    until(lambda: page.evaluate(RISEN), 20, why="the chart draws the job's speed")
    expect(page.locator("#chart-label")).to_contain_text("now · peak")

    r = row(page, "big0.bin")
    expect(r.locator("td").nth(2)).to_have_text("downloading")
    r.focus()
    page.keyboard.press("Space")
    expect(r.locator("td").nth(2)).to_have_text("paused")
    assert serve.file(big0)["paused"] is True
    page.keyboard.press("Space")
    expect(r.locator("td").nth(2)).to_have_text("downloading")
    assert serve.file(big0)["paused"] is False
    assert page.evaluate("document.activeElement.dataset.id") == str(big0)
    page.keyboard.press("Delete")
    expect(page.locator("#ask-text")).to_have_text("Cancel big0.bin?")
    page.click("#ask-ok")
    until(lambda: serve.file(big0)["state"] == "removed", 15, why="Delete, then OK, cancels")

    until(lambda: page.evaluate("window.notes.length") > 0, 30, why="a notification when the job ends")
    assert page.evaluate("window.notes") == [["segdl: keys ended", "1 of 2 file(s) here, 1 cancelled"]]
    # Space and Delete on a row that is not running: nothing to pause or cancel.
    done = row(page, "small0.bin")
    expect(done.locator("td").nth(2)).to_have_text("done")
    done.focus()
    page.keyboard.press("Delete")
    expect(page.locator("#message")).to_have_text("small0.bin is done: nothing to cancel")
    page.keyboard.press("Space")
    expect(page.locator("#message")).to_have_text("small0.bin is done: nothing to pause or resume")
    expect(page.locator("#ask")).not_to_be_visible()
    assert serve.file(job["files"][1])["state"] == "done"
    assert errors == []


def test_slow_mode_is_the_services(browser, serve):
    """The service keeps slow mode and the limit to put back (its limits):
    the box is ticked after a reload and in a second page; unticked, the
    limit before it is back everywhere; a limit set from elsewhere while it
    is on ends it, and keeps that limit."""
    limits = lambda: service_limits(serve)  # noqa: E731
    page, errors = logged_in_page(browser, serve)
    page.fill("#global-limit", "20M")
    page.click("#limits button[type=submit]")
    until(lambda: limits()["max_speed"] == 20 * MiB, 10)
    expect(page.locator("#global-limit")).to_have_value("20M")
    page.fill("#slow-rate", "256K")
    page.check("#slow-mode")
    until(lambda: limits()["max_speed"] == 256 * KiB and limits()["slow"] is True, 10)
    assert limits()["slow_before"] == 20 * MiB
    page.reload()
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#slow-mode")).to_be_checked()
    expect(page.locator("#global-limit")).to_have_value("256K")
    other = browser.new_page()  # (the same browser: its session)
    other.goto(f"http://{serve.host}:{serve.port}/")
    expect(other.locator("#conn")).to_have_text("live")
    expect(other.locator("#slow-mode")).to_be_checked()

    page.uncheck("#slow-mode")
    until(lambda: limits()["max_speed"] == 20 * MiB and limits()["slow"] is False, 10,
          why="slow mode off puts back the limit before it")
    expect(page.locator("#global-limit")).to_have_value("20M")
    for p in (page, other):  # (the other page from the limits event)
        expect(p.locator("#slow-mode")).not_to_be_checked()
        expect(p.locator("#global-limit")).to_have_value("20M")

    # On again; then a limit from elsewhere ends it, and stays.
    other.check("#slow-mode")
    expect(page.locator("#slow-mode")).to_be_checked()
    expect(page.locator("#global-limit")).to_have_value("256K")
    status, answer = serve.call("PATCH", "/limits", {"max_speed": 5 * MiB})
    assert status == 200 and answer["slow"] is False, answer
    for p in (page, other):
        expect(p.locator("#slow-mode")).not_to_be_checked()
        expect(p.locator("#global-limit")).to_have_value("5M")
    page.check("#slow-mode")
    until(lambda: limits()["slow"] is True, 10)
    page.uncheck("#slow-mode")
    until(lambda: limits()["max_speed"] == 5 * MiB and limits()["slow"] is False, 10, why="5M, not 20M, comes back")
    assert errors == []



def test_a_slow_mode_change_on_its_way_is_not_undone_by_an_earlier_event(browser, serve):
    """While the page's request to turn slow mode on is on its way, a
    limits event (another client's change, or the answer to one made just
    before) must not untick the box the person just ticked.  (Under load,
    the event of a global limit set a moment before did.)"""
    limits = lambda: service_limits(serve)  # noqa: E731
    page, errors = logged_in_page(browser, serve)
    page.fill("#slow-rate", "256K")
    held = []
    page.route("**/limits", lambda route: held.append(route) if route.request.method == "PATCH"
               else route.continue_())
    page.check("#slow-mode")  # its PATCH is held here
    for _ in range(50):
        if held:
            break
        page.wait_for_timeout(100)
    assert held, "the page asked for slow mode"
    status, _ = serve.call("PATCH", "/limits", {"max_speed": 30 * MiB})  # another client's change
    assert status == 200
    expect(page.locator("#global-limit")).to_have_value("30M")  # its event has reached the page
    expect(page.locator("#slow-mode")).to_be_checked()
    held[0].continue_()
    until(lambda: limits()["slow"] is True and limits()["max_speed"] == 256 * KiB, 10)
    expect(page.locator("#slow-mode")).to_be_checked()
    assert errors == []

# How much of the chart's width, from the right, has ink.
INKED = """() => { const c = document.getElementById('chart');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let left = c.width;
  for (let i = 3; i < d.length; i += 4) if (d[i]) left = Math.min(left, ((i - 3) / 4) % c.width);
  return (c.width - left) / c.width; }"""


def test_the_chart_spans_from_its_first_sample(browser, serve):
    """Its time axis runs from the first sample (30 s at least) to now, up
    to five minutes: a few seconds in, the line already covers a good part
    of the width (over 300 s it was a sliver at the right edge); past five
    minutes of samples, all of it."""
    page = browser.new_page()
    log_in(page, serve)
    until(lambda: page.evaluate(INKED) > 0.08, 15, step=0.5, why="a few samples cover a tenth of the width")
    assert page.evaluate(INKED) < 0.6  # (30 s at least: not stretched over the whole width)
    page.evaluate("() => import('/web/downloads.js').then((m) => { for (let i = 0; i < 400; i++) m.sampleSpeed(); })")
    assert page.evaluate(INKED) > 0.99


def test_ten_thousand_files_come_in_pages_and_filter(browser, tmp_path):
    """10,000 files in the journal: the page loads them in one answer,
    shows 200 rows a page, pages and filters; the times are printed (-s),
    not asserted."""
    from segdl.engine.journal.writer import Journal

    serve = Serve(tmp_path / "serve", "-x", "1")
    out = serve.out.resolve()
    out.mkdir(parents=True)
    j = Journal(serve.journal)
    try:
        with j.atomic():
            job = j.create_job(out, {"origin": "serve", "requests": []}, collection="many")
            for i in range(10000):
                j.put_file(job, f"http://127.0.0.1:9/f-{i:05d}.bin", out / f"f-{i:05d}.bin", state="failed",
                           size=1 << 20, error="HTTP 404 (not found)")
        j.finish_job(job)
    finally:
        j.close()
    serve.start()
    try:
        until(lambda: login_urls(serve), 10)
        page = browser.new_page()
        began = time.monotonic()
        log_in(page, serve)
        expect(page.locator("#page")).to_have_text("page 1 of 50 (10000 files)")
        expect(page.locator("#rows tr")).to_have_count(200)
        loaded = time.monotonic() - began
        began = time.monotonic()
        page.click("#next")
        expect(page.locator("#page")).to_have_text("page 2 of 50 (10000 files)")
        expect(page.locator("#rows tr").first.locator("td.name .n")).to_have_text("f-00200.bin")
        paged = time.monotonic() - began
        page.fill("#filter", "f-09999")
        expect(page.locator("#rows tr")).to_have_count(1)
        expect(page.locator("#totals")).to_contain_text("10000 files: 10000 failed")
        print(f"\n10,000 files: logged in and first page drawn in {loaded:.2f} s, next page in {paged:.2f} s")

        # Keys: arrows move between rows; Delete on a failed file has nothing to cancel.
        page.fill("#filter", "f-0000")
        expect(page.locator("#rows tr")).to_have_count(10)
        # Next clicked twice on the last page before a redraw stays there:
        # "all on the page" then ticks its 10 rows, not an empty page's.
        page.evaluate("""() => { for (const id of ['next', 'next', 'select-all']) document.getElementById(id).click(); }""")
        expect(page.locator("#selected-count")).to_have_text("10 selected")
        page.locator("#select-all").click()
        expect(page.locator("#selected-count")).to_have_text("0 selected")
        page.locator("#rows tr").first.focus()
        page.keyboard.press("ArrowDown")
        assert page.evaluate("document.activeElement.dataset.id") == page.locator("#rows tr").nth(1).get_attribute("data-id")
        page.keyboard.press("Delete")
        expect(page.locator("#message")).to_have_text("f-00001.bin is failed: nothing to cancel")
        expect(page.locator("#ask")).not_to_be_visible()
        assert serve.file(int(page.locator("#rows tr").nth(1).get_attribute("data-id")))["state"] == "failed"

        # Dark and light, and a phone's width without sideways scrolling.
        page.emulate_media(color_scheme="dark")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(20, 23, 27)"
        page.emulate_media(color_scheme="light")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
        page.set_viewport_size({"width": 390, "height": 844})
        for view in ("downloads", "add", "library"):
            page.click(f"button[data-view={view}]")
            assert page.evaluate("document.scrollingElement.scrollWidth <= innerWidth"), view
        page.click("button[data-view=downloads]")
        reach = [page.locator("#rows tr").first.locator("button[data-act=retry]"), page.locator("#logout"),
                 page.locator("button[data-bulk=cancel]"), page.locator("#global-limit")]
        for what in reach:  # every action within the screen's width
            box = what.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, what
        page.click("button[data-view=downloads]")
        page.fill("#filter", "")
        page.emulate_media(color_scheme="dark")
        shot(page, tmp_path, "phone-dark")
    finally:
        serve.stop()
