"""A small threaded HTTP/1.1 file server from the standard library: the
files under a folder on 127.0.0.1, single ``Range`` requests, keep-alive.
It is the local mirror's fallback where nginx is missing, and the paced
mirror of the demo, the tests and the benchmarks, with two extras: a
per-connection rate the kernel paces (``SO_MAX_PACING_RATE`` with
``sendfile``: no burst per request, almost no CPU), and files whose first
data response is cut short once.  It logs each request as nginx's access
log would, and counts the requests it serves at once."""

from __future__ import annotations

import email.utils
import fcntl
import http.server
import re
import socket
import struct
import termios
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)  # Linux


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)


SEND_STEP = 256 * 1024  # bytes per sendfile call
PACED_SNDBUF = 128 * 1024  # send buffer of a paced connection


SAME_MOMENT = 0.02  # seconds: see FileServer.concurrency


def peak_overlap(spans: list[tuple[float, float]], since: float, grace: float) -> int:
    """The most of ``spans`` (start, end) open at one moment after
    ``since``, each ending ``grace`` seconds early."""
    marks = []
    for start, end in spans:
        end = end - grace
        if end > max(start, since):
            marks += [(max(start, since), 1), (end, -1)]
    marks.sort()  # at one moment, an end (-1) before a start
    most = now = 0
    for _, step in marks:
        now += step
        most = max(most, now)
    return most


class FileServer:
    """The files under ``root`` on ``http://127.0.0.1:PORT/NAME``.

    ``rate``: bytes/s per connection, paced by the kernel; ``fail_once``:
    names whose first data response (not a 1-byte probe) is cut after
    ``fail_after`` bytes.  ``requests`` counts GETs per name."""

    def __init__(self, root: Path, *, rate: int = 0, fail_once=(), fail_after: int = 1 << 20) -> None:
        self.root = Path(root)
        self.rate = rate
        self.fail_once = set(fail_once)
        self.fail_after = fail_after
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return self._httpd.server_address[1]

    def url(self, name: str) -> str:
        return f"http://{HOST}:{self.port}/{name}"

    @property
    def requests(self) -> dict[str, int]:
        return dict(self._httpd.requests) if self._httpd else {}

    def log(self) -> list[dict]:
        """One entry per GET that sent a body, in nginx's access-log terms
        (msec, request_time, status, body_bytes_sent, completion, range)."""
        with self._httpd.lock:
            return list(self._httpd.log)

    def reset_log(self) -> None:
        with self._httpd.lock:
            self._httpd.log.clear()
            self._httpd.spans.clear()
            self._httpd.since = time.monotonic()
            self._httpd.peak_connections = len(self._httpd.conns)

    def concurrency(self, grace: float = SAME_MOMENT) -> dict[str, int]:
        """The most requests being served at once, and the most connections
        open at once, since the start or :meth:`reset_log`.  A request
        counts from its headers to its last byte acknowledged, as nginx's
        ``limit_conn`` counts connections: an idle keep-alive connection is
        not one.

        The server sees a request end when it sees its last byte
        acknowledged, a poll and a thread wake-up after the client had it
        and went on; a request that began within ``grace`` seconds of
        another's end does not count as beside it."""
        with self._httpd.lock:
            now = time.monotonic()
            spans = [*self._httpd.spans, *((t, now) for t, _ in self._httpd.open_spans.values())]
            return {"requests": peak_overlap(spans, self._httpd.since, grace),
                    "connections": self._httpd.peak_connections, "in_flight": self._httpd.in_flight}

    def serving(self) -> list[str]:
        """The paths of the requests being served now (one per request)."""
        with self._httpd.lock:
            return sorted(p for _, p in self._httpd.open_spans.values())

    def start(self) -> "FileServer":
        self._httpd = _Server((HOST, 0), _Handler)
        self._httpd.root = self.root.resolve()
        self._httpd.rate = self.rate
        self._httpd.fail_once = set(self.fail_once)
        self._httpd.fail_after = self.fail_after
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="segdl-fileserver")
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        httpd.close_all()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    root: Path
    rate: int = 0
    fail_once: set
    fail_after: int

    def __init__(self, *args, **kwargs) -> None:
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.log: list[dict] = []
        self.in_flight = self.peak_connections = 0
        self.spans: list[tuple[float, float]] = []  # requests served: (headers in, last byte acknowledged)
        self.open_spans: dict[int, tuple[float, str]] = {}  # requests being served: their start, path
        self.since = 0.0  # spans count from here (reset_log)
        super().__init__(*args, **kwargs)

    def close_all(self) -> None:
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        pass  # clients going away mid-body is normal for a benchmark


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "segdl-localmirror"
    sys_version = ""
    timeout = 30  # idle keep-alive connections end by themselves
    server: _Server

    def setup(self) -> None:
        super().setup()
        if self.server.rate:
            # The kernel paces every segment it sends on this socket: no
            # burst at the start of a request, as nginx's limit_rate has.
            self.connection.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, self.server.rate)
            # A small send buffer: what the log says was sent is what left,
            # give or take this much, also on a connection cut mid-body
            # (by default the kernel would queue megabytes ahead of pacing).
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PACED_SNDBUF)
        with self.server.lock:
            self.server.conns.add(self.connection)
            self.server.peak_connections = max(self.server.peak_connections, len(self.server.conns))

    def finish(self) -> None:
        with self.server.lock:
            self.server.conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._counted(head=True)

    def do_GET(self) -> None:
        self._counted(head=False)

    def _counted(self, head: bool) -> None:
        srv = self.server
        key = threading.get_ident()
        with srv.lock:
            srv.in_flight += 1
            srv.open_spans[key] = (time.monotonic(), "/" + self.path.split("?", 1)[0].lstrip("/"))
        ended = None
        try:
            self._serve(head)
            ended = self._drain()
        finally:
            with srv.lock:
                srv.in_flight -= 1
                srv.spans.append((srv.open_spans.pop(key)[0], ended or time.monotonic()))

    def _drain(self, limit: float = 30.0) -> float:
        """Wait until the kernel has sent what ``sendfile`` queued (paced,
        it may hold megabytes): a request is in flight until its last byte
        has left, which is what the concurrency log counts.  Returns when
        that was.  On a paced connection, that is the first look's queue at
        the pace after it: a thread on a busy machine wakes up to look again
        tens of milliseconds late, which the log would take for overlap with
        the client's next request on another connection."""
        first = time.monotonic()
        due = None
        while time.monotonic() < first + limit:
            try:
                left = struct.unpack("i", fcntl.ioctl(self.connection.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
            except OSError:
                break
            now = time.monotonic()
            if left <= 0:
                return now if due is None else min(now, due)
            if due is None and self.server.rate:
                due = now + left / self.server.rate
            time.sleep(0.005)
        return time.monotonic()

    def _serve(self, head: bool) -> None:
        srv = self.server
        name = self.path.split("?", 1)[0].lstrip("/")
        path = (srv.root / name).resolve()
        if not name or srv.root not in path.parents or not path.is_file():
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        st = path.stat()
        size = st.st_size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng is not None:
            m = _RANGE.match(rng)
            if m and (m.group(1) or m.group(2)):
                a, b = m.group(1), m.group(2)
                if a:
                    start, end = int(a), size if not b else min(size, int(b) + 1)
                else:  # suffix: the last b bytes
                    start, end = max(0, size - int(b)), size
                if start >= size or end <= start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{st.st_size:x}-{int(st.st_mtime):x}"')
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if head:
            return
        count = end - start
        with srv.lock:
            srv.requests[name] = srv.requests.get(name, 0) + 1
            cut = count > 1 and name in srv.fail_once
            if cut:
                srv.fail_once.discard(name)
        if cut:
            count = min(count - 1, srv.fail_after)  # the connection drops mid-body, once
        self.wfile.flush()
        began = time.time()
        sent = 0
        try:
            with open(path, "rb") as f:
                # In steps, so a connection cut mid-body still logs what
                # had been sent (to within a step) rather than nothing.
                while sent < count:
                    n = self.connection.sendfile(f, start + sent, min(SEND_STEP, count - sent))
                    if not n:
                        break
                    sent += n
        finally:
            with srv.lock:
                srv.log.append({"msec": time.time(), "request_time": time.time() - began, "method": "GET",
                                "path": "/" + name, "uri": self.path, "status": status,
                                "body_bytes_sent": sent, "range": rng or "",
                                "completion": "OK" if sent == end - start else ""})
        if cut:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
