"""Secrets go where they belong (issue 21, findings 4-6): the service's
token only to a service that proves it holds it, a custom header only to
the origin it was given for, and credentials in URLs in no answer, event
or output, and in a journal only its owner reads.  Each against a real
``segdl serve`` or ``segdl get`` and servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers import SEGDL, json_lines, run_segdl
from servers import FaultServer

KEY = "k3y-0f-the-api"
PASSWORD = "pw-s3cr3t-1n-url"


@pytest.fixture
def two_origins():
    """Two servers: ``a`` redirects /redirect/x.bin to ``b`` (another port:
    another origin), which serves it."""
    data = os.urandom(3 * 1024 * 1024 + 5)
    with FaultServer() as a, FaultServer() as b:
        a.add("x.bin", data)
        b.add("x.bin", data)
        yield a, b


def _has(rec: dict, name: str) -> str | None:
    return next((v for k, v in rec["headers"].items() if k.lower() == name.lower()), None)


# ------------------------------------------------- 5. custom headers and redirects


def test_a_custom_header_does_not_follow_a_redirect_to_another_origin(two_origins, tmp_path):
    a, b = two_origins
    url = a.url(f"redirect/x.bin?n=2&to_host=127.0.0.1&to_port={b.port}")
    p = run_segdl(["get", url, "-d", tmp_path / "out", "--json", "-x", "4", "-H", f"X-Api-Key: {KEY}",
                   "-H", "Authorization: Bearer t0ken"], tmp_path / "j.sqlite")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "x.bin").read_bytes() == b._get_blob("x.bin").data
    first = a.requests("x.bin")
    assert first and all(_has(r, "X-Api-Key") == KEY for r in first)  # the origin it was given for: every hop
    there = b.requests("x.bin")
    assert len(there) >= 2, there  # the probe's last hop, and the segments fetched from there
    assert [r for r in there if _has(r, "X-Api-Key") or _has(r, "Authorization")] == []

    # Asked for: --location-trusted sends them on, as curl does.
    b_before = len(b.requests("x.bin"))
    p = run_segdl(["get", url, "-d", tmp_path / "trusted", "--json", "-H", f"X-Api-Key: {KEY}",
                   "--location-trusted"], tmp_path / "j2.sqlite")
    assert p.returncode == 0, p.stderr
    there = b.requests("x.bin")[b_before:]
    assert there and all(_has(r, "X-Api-Key") == KEY for r in there)


def test_a_header_of_one_file_never_goes_with_another_files_requests(two_origins, tmp_path):
    """A worker reuses its libcurl handles from one transfer to the next:
    a file's own header (a manifest's ``headers``) must not stay on a
    handle that then fetches another file from another server."""
    a, b = two_origins
    a.add("first.bin", os.urandom(6 * 1024 * 1024))
    b.add("second.bin", os.urandom(6 * 1024 * 1024))
    m = {"files": [{"url": a.url("first.bin"), "headers": {"X-Api-Key": KEY}},
                   {"url": b.url("second.bin")}]}
    (tmp_path / "m.json").write_text(json.dumps(m))
    p = run_segdl(["get", "-i", tmp_path / "m.json", "-d", tmp_path / "out", "--json", "-j", "1", "-x", "2",
                   "--workers", "1"], tmp_path / "j.sqlite")
    assert p.returncode == 0, p.stderr
    assert all(_has(r, "X-Api-Key") == KEY for r in a.requests("first.bin"))
    assert len(b.requests("second.bin")) >= 2
    assert [r["range"] for r in b.requests("second.bin") if _has(r, "X-Api-Key")] == []


# ------------------------------------------------- 4. the service's token


class Squatter:
    """Whatever takes a port a killed service left: it records every byte
    it is sent and answers each request 200 with a JSON body that has a
    made-up proof (a client that checks nothing would go on)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.received = bytearray()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                pending = b""
                for _ in range(20):  # requests on one connection, bounded
                    try:
                        data = conn.recv(65536)
                    except OSError:
                        break
                    if not data:
                        break
                    self.received += data
                    pending += data
                    while b"\r\n\r\n" in pending:
                        _, pending = pending.split(b"\r\n\r\n", 1)
                        body = json.dumps({"proof": "0" * 64, "files": [], "jobs": []}).encode()
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.sock.close()


def test_a_stale_serve_json_never_hands_the_token_to_another_listener(tmp_path):
    from serving import Serve

    with FaultServer() as mirror:
        mirror.add("a.bin", os.urandom(100_000))
        serve = Serve(tmp_path).start()
        try:
            token = serve.token()
            status, body = serve.call("POST", "/jobs", {"urls": [mirror.url("a.bin")]})
            assert status == 201, body
            fid = body["files"][0]
            serve.wait_files(body["job"])
            serve.proc.kill()  # kill -9, not reaped yet: a zombie whose pid still answers kill(pid, 0)
            time.sleep(0.2)
            squatter = Squatter(serve.port)
            try:
                r = subprocess.run([*SEGDL, "pause", str(fid), "--journal", str(serve.journal)],
                                   capture_output=True, text=True, timeout=60)
                assert r.returncode == 0 and "(segdl serve)" not in r.stderr, r.stderr  # the journal's, then
                # The pid taken by another process (this one).
                info = serve.journal.parent / "serve.json"
                info.write_text(json.dumps({**json.loads(info.read_text()), "pid": os.getpid()}))
                r = subprocess.run([*SEGDL, "resume", str(fid), "--journal", str(serve.journal)],
                                   capture_output=True, text=True, timeout=60)
                assert r.returncode == 0, r.stderr
                r = subprocess.run([*SEGDL, "limit", "--max-speed", "1M", "--journal", str(serve.journal)],
                                   capture_output=True, text=True, timeout=60)
            finally:
                squatter.close()
            assert b"GET /proof?nonce=" in squatter.received  # it was asked to prove itself ...
            assert token.encode() not in squatter.received  # ... and got no token
            assert b"authorization" not in squatter.received.lower()
        finally:
            serve.proc.wait(10)
            serve.stop()


# ------------------------------------------------- 6. credentials in URLs


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_credentials_in_urls_stay_in_a_private_journal(tmp_path):
    from serving import Serve, read_events

    with FaultServer() as mirror:
        mirror.add("y.bin", os.urandom(200_000))
        url = mirror.url("y.bin").replace("http://", f"http://user:{PASSWORD}@")
        serve = Serve(tmp_path / "serve").start()
        try:
            status, body = serve.call("POST", "/jobs", {"urls": [url]})
            assert status == 201, body
            files = serve.wait_files(body["job"])
            assert files[0]["url"] == url.replace(f"user:{PASSWORD}@", "***@")
            seen = json.dumps([files, serve.call("GET", f"/files/{files[0]['id']}")[1], serve.call("GET", "/jobs")[1],
                               read_events(serve, lambda evs: any(e["event"] == "job_ended" for e in evs))])
            assert "***@" in seen and PASSWORD not in seen
            journal = serve.journal
            for p in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm")):
                assert _mode(p) == 0o600, p  # the URL is kept whole there, for resume and retry
        finally:
            serve.stop()
        assert PASSWORD not in serve.log()

        journal = tmp_path / "j.sqlite"
        p = run_segdl(["get", url, "-d", tmp_path / "out", "--json"], journal)
        assert p.returncode == 0, p.stderr
        assert json_lines(p)[0]["url"] == url.replace(f"user:{PASSWORD}@", "***@")
        assert PASSWORD not in p.stdout + p.stderr
        assert _mode(journal) == 0o600
        assert any(_has(r, "Authorization") for r in mirror.requests("y.bin"))  # (they were used)
        # A journal an older segdl made 0644 is made private when next opened.
        os.chmod(journal, 0o644)
        p = run_segdl(["get", url, "-d", tmp_path / "out", "--json"], journal)
        assert p.returncode == 0 and json_lines(p)[0]["status"] == "skipped", p.stderr
        assert _mode(journal) == 0o600
        status = run_segdl(["status", "--json"], journal)
        assert PASSWORD not in status.stdout + status.stderr
