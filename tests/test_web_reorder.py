"""Reordering the queue in the web page (issue 20), in a real browser
(fixtures of test_web.py) against a real `segdl serve` that runs one file
at a time, and a real paced mirror: while one file holds the slot, a
waiting row dragged above another, and one moved with Alt+Down or
Alt+Up, take priorities that put them there; the engine then starts them
in the order the page shows."""

from __future__ import annotations

import os

import pytest

from servers import PacedMirror
from segdl.engine.rules.ranges import KiB, MiB

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

from serving import Serve, read_events  # noqa: E402
from test_serve_api import until  # noqa: E402
from test_web import browser, files_by_name, logged_in_page, row  # noqa: E402,F401 (fixtures)
from test_web_api import login_urls  # noqa: E402

WAITING = ["q0.bin", "q1.bin", "q2.bin", "q3.bin"]


@pytest.fixture
def mirror(tmp_path):
    """One large file to hold the slot; files that take a few seconds each
    (more than a probe fetches), so each one starts as a download."""
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "hold.bin").write_bytes(os.urandom(8 * MiB))
    for name in WAITING:
        (root / name).write_bytes(os.urandom(384 * KiB))
    with PacedMirror(root, rate=256 * KiB) as m:
        yield m


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path / "serve", "-x", "1", "-j", "1")  # one file at a time: the others wait
    s.start()
    until(lambda: login_urls(s), 10, why="segdl serve prints a login URL")
    yield s
    s.stop()


def test_drag_and_alt_arrows_set_the_order_the_engine_starts_files_in(browser, serve, mirror):
    status, hold = serve.call("POST", "/jobs", {"urls": [mirror.url("hold.bin")]})
    assert status == 201, hold
    until(lambda: serve.file(hold["files"][0])["state"] == "downloading", 20, why="hold.bin takes the one slot")
    status, job = serve.call("POST", "/jobs", {"urls": [mirror.url(n) for n in WAITING]})
    assert status == 201, job
    ids = {n: f["id"] for n, f in files_by_name(serve).items()}
    page, errors = logged_in_page(browser, serve)
    order = lambda: page.locator("#rows tr td.name .n").all_text_contents()  # noqa: E731
    expect(page.locator("#rows tr")).to_have_count(5)
    assert order() == ["hold.bin", *WAITING]

    # Drag q3 above q0: it takes q0's priority + 1.
    row(page, "q3.bin").drag_to(row(page, "q0.bin"))
    expect(row(page, "q3.bin").locator("td").nth(7)).to_have_text("1")
    until(lambda: order() == ["hold.bin", "q3.bin", "q0.bin", "q1.bin", "q2.bin"], 10,
          why=f"q3 is drawn first of the queue: {order()}")
    # Alt+Down on q0: below q1 (its priority - 1); the row keeps the focus.
    row(page, "q0.bin").focus()
    page.keyboard.press("Alt+ArrowDown")
    until(lambda: order() == ["hold.bin", "q3.bin", "q1.bin", "q2.bin", "q0.bin"], 10,
          why=f"q0 is drawn last: {order()}")
    assert page.evaluate("document.activeElement.dataset.id") == str(ids["q0.bin"])
    # Alt+Up on q2: above q1 (its priority + 1, as q3's: the older goes first).
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert page.evaluate("document.activeElement.dataset.id") == str(ids["q1.bin"])
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Alt+ArrowUp")
    until(lambda: order() == ["hold.bin", "q2.bin", "q3.bin", "q1.bin", "q0.bin"], 10,
          why=f"q2 goes up: {order()}")
    assert {n: serve.file(ids[n])["priority"] for n in WAITING} == {"q0.bin": -1, "q1.bin": 0,
                                                                  "q2.bin": 1, "q3.bin": 1}
    assert row(page, "hold.bin").get_attribute("draggable") == "true"  # (a running row drags; a done one not)

    # The engine starts them in that order once hold leaves the slot.
    seq = serve.call("GET", "/service")[1]["seq"]
    assert serve.call("DELETE", f"/files/{ids['hold.bin']}")[0] == 200
    events = read_events(serve, lambda evs: sum(1 for e in evs if e.get("state") == "done") == 4, timeout=30,
                         last_id=seq)
    # A file starts downloading, or, when its probe fetched it whole, goes
    # straight to verified.
    started = [e["file"] for e in events if e["event"] == "state" and e.get("state") in ("downloading", "verified")]
    names = {v: k for k, v in ids.items()}
    assert [names[i] for i in dict.fromkeys(started)] == ["q2.bin", "q3.bin", "q1.bin", "q0.bin"]
    expect(row(page, "q0.bin").locator("td").nth(2)).to_have_text("done")
    assert row(page, "q0.bin").get_attribute("draggable") == "false"
    assert errors == []
