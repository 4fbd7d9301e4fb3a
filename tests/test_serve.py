"""segdl serve, for real: a `segdl serve` process over HTTP on 127.0.0.1,
files from a paced local mirror, and every security refusal."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from helpers import SEGDL
from servers import PacedMirror
from serving import Serve, read_events
from segdl.engine.rules.ranges import MiB

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")

SIZE = 6 * MiB


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-mirror")
    for i in range(4):
        (root / f"f{i}.bin").write_bytes(os.urandom(SIZE))
    with PacedMirror(root, rate=1 * MiB) as m:
        m.root = root
        yield m


@pytest.fixture(scope="module")
def big_mirror(tmp_path_factory):
    """Files long enough (32 MiB, nginx at 1 MiB/s per connection) to watch
    one file's connections move to another.  (Kernel pacing does not bind
    on requests of a few MiB: the socket buffers take them at once.)"""
    from servers import Nginx

    root = tmp_path_factory.mktemp("serve-big")
    for i in range(3):
        (root / f"b{i}.bin").write_bytes(os.urandom(32 * MiB))
    with Nginx(root=root, limit_rate="1m") as m:
        m.root = root
        yield m


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path, "-x", "4", "--max-connections", "4", "-j", "2")
    s.start()
    yield s
    s.stop()


def test_a_job_runs_and_its_events_stream_in_order(serve, mirror):
    status, body = serve.call("POST", "/jobs", {"urls": [mirror.url("f0.bin"), mirror.url("f1.bin")]})
    assert status == 201 and len(body["files"]) == 2, body
    job = body["job"]
    events = read_events(serve, lambda evs: any(e["event"] == "job_ended" and e["job"] == job for e in evs))
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    kinds = [e["event"] for e in events if e.get("job") == job]
    assert kinds.count("added") == 2 and kinds.count("finished") == 2
    assert "progress" in kinds and "state" in kinds and kinds[-1] == "job_ended"
    for f in serve.wait_files(job):
        assert Path(f["path"]).read_bytes() == (mirror.root / Path(f["path"]).name).read_bytes()
    status, jobs = serve.call("GET", "/jobs")
    assert [j for j in jobs["jobs"] if j["id"] == job][0]["state"] == "finished"


def test_pause_gives_its_connections_to_the_other_file_then_resume_limit_and_cancel(serve, big_mirror, tmp_path):
    mirror = big_mirror
    status, body = serve.call("POST", "/jobs", {"urls": [mirror.url(f"b{i}.bin") for i in (0, 1)]})
    a, b = body["files"]
    deadline = time.monotonic() + 20
    while serve.file(a)["state"] != "downloading" or serve.file(b)["state"] != "downloading":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)
    rate = lambda fid, dt=2.0: (lambda x0: (time.sleep(dt), (serve.file(fid)["bytes_done"] - x0) / dt)[1])(
        serve.file(fid)["bytes_done"])
    before = rate(b)
    status, answer = serve.call("PATCH", f"/files/{a}", {"paused": True})
    assert status == 200 and answer["paused"] and answer["state"] == "paused"
    time.sleep(1.5)  # its connections end; the other file's next units take them
    held = serve.file(a)["bytes_done"]
    after = rate(b)
    assert serve.file(a)["bytes_done"] == held and serve.file(a)["state"] == "paused"
    assert after >= 1.4 * before, (before / MiB, after / MiB)  # 2 -> 4 connections at 1 MiB/s each
    status, _ = serve.call("PATCH", f"/files/{a}", {"paused": False})
    assert status == 200
    # A second job meanwhile: its file is cancelled while it downloads.
    status, other = serve.call("POST", "/jobs", {"urls": [mirror.url("b2.bin")]})
    c = other["files"][0]
    deadline = time.monotonic() + 20
    while serve.file(c)["bytes_done"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status, gone = serve.call("DELETE", f"/files/{c}")
    assert status == 200 and gone["state"] == "removed"
    assert serve.wait_files(other["job"], states=("removed",))[0]["state"] == "removed"
    assert not Path(serve.file(c)["path"]).exists() and not Path(serve.file(c)["path"] + ".segdl-part").exists()
    files = {f["id"]: f for f in serve.wait_files(body["job"])}
    for fid in (a, b):
        p = Path(files[fid]["path"])
        assert files[fid]["state"] == "done" and p.read_bytes() == (mirror.root / p.name).read_bytes()


def test_limit_holds_while_it_is_set(serve, mirror):
    serve.call("PATCH", "/limits", {"max_speed": 1 * MiB})
    status, body = serve.call("POST", "/jobs", {"urls": [mirror.url("f3.bin")]})
    fid = body["files"][0]
    deadline = time.monotonic() + 20
    while serve.file(fid)["state"] != "downloading":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.0)
    x0 = serve.file(fid)["bytes_done"]
    time.sleep(2.0)
    got = (serve.file(fid)["bytes_done"] - x0) / 2.0
    assert got <= 1.35 * MiB, got / MiB  # paced 2 x 1 MiB/s without the limit
    serve.call("PATCH", "/limits", {"max_speed": 0})
    serve.wait_files(body["job"])


def test_a_restarted_service_continues_the_job_and_keeps_its_history(tmp_path, mirror):
    s = Serve(tmp_path, "-x", "2", "--max-connections", "4", "-j", "2").start()
    try:
        status, body = s.call("POST", "/jobs", {"urls": [mirror.url("f0.bin"), mirror.url("f1.bin")]})
        job, ids = body["job"], body["files"]
        deadline = time.monotonic() + 20
        while sum(s.file(i)["bytes_done"] for i in ids) < 2 * MiB:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        seen = read_events(s, lambda evs: any(e["event"] == "progress" for e in evs))
        last = seen[-1]["id"]
        s.stop()
        assert s.proc.returncode == 0, s.log()
        s.start()
        files = s.wait_files(job)
        assert sorted(f["id"] for f in files) == sorted(ids)  # the same files, the same job
        for f in files:
            assert Path(f["path"]).read_bytes() == (mirror.root / Path(f["path"]).name).read_bytes()
        status, jobs = s.call("GET", "/jobs")
        assert [j["id"] for j in jobs["jobs"]] == [job]
        # What happened while the client was away, from where it left off.
        missed = read_events(s, lambda evs: any(e["event"] == "job_ended" for e in evs), last_id=last)
        assert missed[0]["id"] == last + 1
        assert {e["file"] for e in missed if e["event"] == "finished"} == set(ids)
    finally:
        s.stop()


# ------------------------------------------------------------ security


def test_every_request_needs_the_token(serve):
    import http.client

    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {serve.token()}"}):
        conn = http.client.HTTPConnection(serve.host, serve.port, timeout=10)
        conn.request("GET", "/jobs", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 401 and b"Bearer" in resp.read()
        conn.close()
    assert serve.call("GET", "/jobs")[0] == 200


def test_token_file_is_private_strong_and_never_on_a_command_line(serve):
    path = Path(serve.info["token_file"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((serve.journal.parent / "serve.json").stat().st_mode) == 0o600
    token = serve.token()
    assert len(token) >= 22  # >= 128 bits, urlsafe base64 (it is 256)
    cmdline = Path(f"/proc/{serve.proc.pid}/cmdline").read_bytes()
    assert token.encode() not in cmdline
    assert token not in serve.log() and str(path) in serve.log()


def test_a_foreign_host_header_is_refused(serve):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1."""
    token = serve.token()
    status, _ = serve.raw(f"GET /jobs HTTP/1.1\r\nHost: evil.example:{serve.port}\r\n"
                          f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
    assert status == 400
    status, _ = serve.raw(f"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1:{serve.port}\r\n"
                          f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
    assert status == 200


def test_a_foreign_origin_cannot_change_anything_and_no_cors(serve):
    token = serve.token()
    body = b'{"max_speed": 1000}'

    def patch(origin: str) -> tuple[int, bytes]:
        return serve.raw(f"PATCH /limits HTTP/1.1\r\nHost: 127.0.0.1:{serve.port}\r\n"
                         f"Authorization: Bearer {token}\r\nOrigin: {origin}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)

    status, _ = patch("http://evil.example")
    assert status == 403
    status, _ = patch(f"http://127.0.0.1:{serve.port}")
    assert status == 200
    with socket.create_connection((serve.host, serve.port), timeout=10) as s:
        s.sendall(f"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
                  f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert b"access-control-allow-origin" not in answer.lower()


def test_bad_bodies_and_destinations_are_refused(serve, mirror, tmp_path):
    token = serve.token()
    assert serve.call("POST", "/jobs", {"urls": [mirror.url("f0.bin")], "dest": "/etc"})[0] == 400
    assert serve.call("POST", "/jobs", {"urls": [mirror.url("f0.bin")], "dest": "../../escape"})[0] == 400
    assert serve.call("POST", "/jobs", {"urls": ["file:///etc/passwd"]})[0] == 400
    assert serve.call("POST", "/jobs", {"urls": [mirror.url("f0.bin")], "log_file": "/tmp/x"})[0] == 400
    assert serve.call("PATCH", "/files/999999", {"paused": True})[0] == 404
    # A 2 MiB body is refused on its Content-Length, before it is read.
    status, _ = serve.raw(f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {2 << 20}\r\n"
                          f"Connection: close\r\n\r\n".encode())
    assert status == 413
    status, _ = serve.raw(f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                          f"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi".encode())
    assert status == 415
    assert not (tmp_path / "escape").exists()


def test_it_listens_on_loopback_by_default_and_warns_otherwise(serve, tmp_path):
    assert serve.host == "127.0.0.1"
    assert "warning" not in serve.log()
    other = Serve(tmp_path / "wide", "--listen", "0.0.0.0:0").start()
    try:
        assert "not loopback" in other.log()
    finally:
        other.stop()


def test_get_changes_nothing(serve, mirror):
    before = serve.call("GET", "/jobs")[1]
    for path in ("/jobs", "/files", "/events?since=999999999"):
        if path.startswith("/events"):
            continue
        assert serve.call("GET", path)[0] == 200
    assert serve.call("GET", "/jobs")[1] == before
    import sqlite3

    con = sqlite3.connect(serve.journal)
    n = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    con.close()
    assert n == 0  # no job yet: reads made no event


def test_openapi_is_served_and_matches_the_routes(serve):
    from segdl.cli.server import OPENAPI, build_app

    status, doc = serve.call("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert doc == json.loads(OPENAPI.read_text())
    app = build_app(None, token="t" * 32, hosts=["127.0.0.1"], origins=set())
    routes = {(r.path.replace(":int", ""), m.lower()) for r in app.routes for m in r.methods if m != "HEAD"}
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented


def test_cli_pause_goes_through_the_running_service(serve, mirror):
    status, body = serve.call("POST", "/jobs", {"urls": [mirror.url("f2.bin")]})
    fid = body["files"][0]
    deadline = time.monotonic() + 20
    while serve.file(fid)["state"] != "downloading":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = subprocess.run([*SEGDL, "pause", str(fid), "--journal", str(serve.journal)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "(segdl serve)" in " ".join(r.stderr.split()), r.stderr
    assert serve.file(fid)["state"] == "paused"  # at once: no journal polling in between
    r = subprocess.run([*SEGDL, "resume", str(fid), "--journal", str(serve.journal)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "(segdl serve)" in " ".join(r.stderr.split())
    r = subprocess.run([*SEGDL, "limit", "--max-speed", "0", "--journal", str(serve.journal)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "segdl serve" in " ".join(r.stderr.split())
    serve.wait_files(body["job"])


def test_service_says_where_jobs_may_go(serve):
    status, info = serve.call("GET", "/service")
    assert status == 200
    assert info["dest"] == os.path.realpath(serve.out) and info["roots"] == [info["dest"]]
    assert info["pid"] == serve.proc.pid and info["limits"] == {"max_speed": 0, "max_file_speed": 0, "slow": False, "slow_before": None}
