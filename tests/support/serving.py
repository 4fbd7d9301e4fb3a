"""One way to run `segdl serve` in a test: :class:`Serve` starts the real
command, waits until it proves it is the service, and is its client
(the token read from its file, as a script would); :func:`read_events`
follows its event stream."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from helpers import SEGDL


class Serve:
    """A `segdl serve` process and a client for it."""

    def __init__(self, tmp: Path, *args: str, journal: Path | None = None, env: dict | None = None) -> None:
        self.tmp, self.args, self.env = tmp, args, env
        tmp.mkdir(parents=True, exist_ok=True)
        self.journal = journal or tmp / "state" / "journal.sqlite"
        self.out = tmp / "out"
        self.proc: subprocess.Popen | None = None

    def start(self, *extra: str) -> "Serve":
        try:
            return self._start(*extra)
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()  # a failed start leaves no service behind
                self.proc.wait(10)
            raise

    def _start(self, *extra: str) -> "Serve":
        info = self.journal.parent / "serve.json"
        if info.exists():
            info.unlink()
        self.stderr = open(self.tmp / f"serve-{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen([*SEGDL, "serve", "-d", str(self.out), "--journal", str(self.journal),
                                      *self.args, *extra], stderr=self.stderr, stdout=subprocess.DEVNULL,
                                     env=None if self.env is None else {**os.environ, **self.env})
        deadline = time.monotonic() + 30
        while not info.exists():
            assert self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, "segdl serve did not start"
            time.sleep(0.05)
        from segdl.cli.serve import find_service

        while True:  # (it may be there before its text is)
            try:
                self.info = json.loads(info.read_text())
                break
            except ValueError:
                assert time.monotonic() < deadline, "serve.json stays unreadable"
                time.sleep(0.05)
        while (remote := find_service(self.journal)) is None:
            assert time.monotonic() < deadline, "segdl serve does not answer"
            time.sleep(0.05)
        self.remote = remote
        if "url" in self.info:  # (else a Unix socket)
            host, port = self.info["url"].removeprefix("http://").rsplit(":", 1)
            self.host, self.port = host, int(port)
        return self

    def log(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        return self.remote.call(method, path, body)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def raw(self, request: bytes) -> tuple[int, bytes]:
        """A hand-written request (to send a foreign Host)."""
        with socket.create_connection((self.host, self.port), timeout=10) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return int(head.split()[1]), body

    def token(self) -> str:
        return Path(self.info["token_file"]).read_text().strip()

    def wait_files(self, job: int, states=("done",), timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            status, body = self.call("GET", f"/files?job={job}")
            assert status == 200
            if all(f["state"] in states for f in body["files"]):
                return body["files"]
            assert time.monotonic() < deadline, body
            time.sleep(0.2)

    def file(self, fid: int) -> dict:
        status, body = self.call("GET", f"/files/{fid}")
        assert status == 200, body
        return body


def read_events(serve: Serve, until, timeout: float = 60, last_id: int | None = None) -> list[dict]:
    """Events from GET /events until ``until(events)`` is true."""
    import http.client

    conn = http.client.HTTPConnection(serve.host, serve.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {serve.token()}"}
    path = "/events?since=0" if last_id is None else "/events"
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    events, current = [], {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            line = resp.fp.readline().decode().rstrip("\r\n")
            if not line:
                if "data" in current:
                    events.append({"id": int(current["id"]), "event": current["event"],
                                   **json.loads(current["data"])})
                    if until(events):
                        return events
                current = {}
                continue
            key, _, value = line.partition(":")
            current[key] = value.strip()
    finally:
        conn.close()
    raise AssertionError(f"events did not arrive in time: {[e['event'] for e in events]}")


@contextmanager
def serve_with_hub(tmp: Path, monkeypatch, files: dict, *args: str):
    """A hub stand-in (hubserver.py) holding ``org/model`` with ``files``,
    ``hf://`` pointed at it with no token, and a `segdl serve` (with
    ``args``) started there; yields the repo and the serve, and stops both."""
    from hubserver import HubServer

    with HubServer() as hub:
        repo = hub.add_repo("org/model", files)
        monkeypatch.setenv("HF_ENDPOINT", hub.hub_url)
        monkeypatch.setenv("HF_HOME", str(tmp / "hf-home"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        serve = Serve(tmp / "serve", *args).start()
        try:
            yield repo, serve
        finally:
            serve.stop()
