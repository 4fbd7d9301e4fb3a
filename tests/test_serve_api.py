"""segdl serve's answers and events, for a GUI that trusts them (issue 21,
findings 7-17; issue 19's paging): a real `segdl serve` over HTTP on
127.0.0.1, real mirrors on 127.0.0.1, and what each answer and event must
say.  (The service, its security and its jobs: test_serve.py.)"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import SEGDL
from servers import FaultServer, PacedMirror
from segdl.engine.ranges import KiB, MiB

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")

from test_serve import Serve, read_events  # noqa: E402

SLOW = 256 * KiB  # bytes/s per connection: a file of 8 MiB runs for half a minute


def until(what, timeout: float = 30, step: float = 0.1, why: str = ""):
    """``what()`` once it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, why or getattr(what, "__doc__", None) or "timed out"
        time.sleep(step)


def request(serve: Serve, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, str, dict]:
    """(status, content type, JSON body) of one request, sent as given."""
    conn = http.client.HTTPConnection(serve.host, serve.port, timeout=15)
    try:
        h = {"Authorization": f"Bearer {serve.token()}", **(headers or {})}
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, resp.getheader("content-type") or "", json.loads(raw) if raw else {}
    finally:
        conn.close()


def state_of(serve: Serve, fid: int, *states: str):
    def check():
        f = serve.file(fid)
        return f if f["state"] in states else None
    check.__doc__ = f"file {fid} reaches {states}"
    return check


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-slow")
    for i in range(4):
        (root / f"s{i}.bin").write_bytes(os.urandom(8 * MiB))
    with PacedMirror(root, rate=SLOW) as m:
        yield m


@pytest.fixture
def faults():
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path, "-x", "1", "--max-connections", "4", "-j", "1")
    s.start()
    yield s
    s.stop()


# ------------------------------------------------------------ finding 15


def test_one_vocabulary_in_get_patch_answers_and_events(serve, slow):
    status, body = serve.call("POST", "/jobs", {"urls": [slow.url("s0.bin"), slow.url("s1.bin")]})
    running, waiting = body["files"]
    until(state_of(serve, running, "downloading"))
    moving = {"bytes_done", "received", "speed", "updated", "mirrors"}
    for change in ({"max_speed": 0}, {"max_speed": 200_000}, {"priority": -3}):
        status, answer = serve.call("PATCH", f"/files/{running}", change)
        now = serve.file(running)
        assert status == 200 and set(answer) == set(now), answer
        assert {k: v for k, v in answer.items() if k not in moving} == {k: v for k, v in now.items() if k not in moving}
    assert (now["max_speed"], now["priority"]) == (200_000, -3)
    page = serve.call("GET", "/files")[1]
    assert {f["id"]: f["max_speed"] for f in page["files"]} == {running: 200_000, waiting: 0}
    events = read_events(serve, lambda evs: any(e["event"] == "progress" and e["file"] == running for e in evs),
                         last_id=0)
    view = set(now) | {"seq", "time", "kind", "job", "file", "previous", "previous_job", "deleted"}
    for e in (e for e in events if e["file"] is not None):
        extra = set(e) - {"id", "event"} - view
        assert not extra, (e["event"], extra)
    progress = next(e for e in events if e["event"] == "progress")
    assert {"received", "bytes_done", "size", "speed"} <= set(progress)
    status, gone = serve.call("DELETE", f"/files/{running}")
    assert status == 200 and gone["state"] == "removed" and gone["speed"] == 0
    assert set(gone) - {"kept_partial"} == set(now)
    assert serve.file(running)["speed"] == 0
