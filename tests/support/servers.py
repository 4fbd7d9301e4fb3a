"""Local HTTP servers for the segdl test-suite (stdlib only).

Everything here binds and connects to 127.0.0.1 only, and every wait or loop
is bounded in both iterations and time.

``Nginx``
    A private, non-daemon nginx serving a directory on a free port.  Used for
    throughput / correctness tests against a real, well-behaved server.  It can
    throttle each request (``limit_rate``), pace each TCP connection with no
    burst (``pace``, the kernel's ``SO_MAX_PACING_RATE``), delay every
    response with the echo module (``echo_sleep_ms``) and shrink the socket
    send buffer (``sndbuf``).  Its access log is parsed by
    ``access_log_entries()``.

``FaultServer``
    A threaded HTTP/1.1 keep-alive server that serves in-memory blobs and can
    misbehave on demand.  A blob registered with ``srv.add("a.bin", data)`` is
    served normally at ``/a.bin``: single-range ``Range`` support (``a-b``,
    ``a-``, ``-n``) with 206/``Content-Range``, 416 with ``bytes */total``,
    ``If-Range``, ``Accept-Ranges``, ``ETag``, ``Last-Modified``,
    ``Content-Length``.  A multi-range or syntactically invalid ``Range`` is
    ignored (full 200), as RFC 9110 allows.

    Faults are selected by path prefix, ``/<fault>/<name>?param=value&...``.
    Every fault accepts ``times=N``: fire on the first N requests for that
    fault + name, then behave normally (default: always fire).  Requests are
    counted per exact URL (fault, name *and* query string), so
    ``/drop/a?times=1`` and ``/drop/a?times=1&after=9`` have separate
    counters; a client retrying the same URL sees the fault heal.

    ===========  ============================================================
    fault        behaviour (parameters)
    ===========  ============================================================
    drop         headers + ``after`` body bytes (default: half of the body
                 that would be sent), wait (<=1 s) until the kernel has
                 handed them to the peer, then close with a TCP RST
                 (SO_LINGER 0).  ``mode=fin`` closes gracefully instead.
    status       answer ``code`` (default 503) with a short body, optional
                 ``retry_after`` header value; 408 also closes the connection.
    norange      ignore ``Range``: always 200 + whole body, no Accept-Ranges.
    badrange     206 whose Content-Range start is ``shift`` (default 1) bytes
                 off the requested start; the body really starts there too
                 (same length, clamped to the end of the blob).
    stall        headers + ``after`` bytes, then sleep ``seconds`` (default
                 30; interrupted by ``stop()``) without closing; afterwards
                 the rest of the body is sent (unless stopping).
    short        correct Content-Length but only ``after`` bytes, then a
                 graceful close (FIN).
    changing     the first ``times`` (default 0) requests see version 0 (the
                 registered data); every later request sees a new version
                 k = 1, 2, ... (data XOR k, ETag ``"<etag>-v<k>"``,
                 Last-Modified + k hours).  ``If-Range`` is honoured against
                 the version being served, so a stale validator yields 200.
    signed       ``/signed/<name>`` -> 302 to ``/s/<token>/<name>`` with a
                 fresh token; the token serves normally for ``ttl`` seconds
                 (default 2), then answers ``expired_code`` (default 403;
                 401/410 ...).  Unknown tokens get 403.
    disposition  serves normally plus ``Content-Disposition: attachment;
                 filename="<fn>"``; ``fn`` is URL-decoded and sent verbatim
                 (UTF-8 on the wire) except that ``"`` and ``\\`` are
                 backslash-escaped and CR/LF are removed (no header
                 injection).  ``enc=latin-1`` sends the header value in
                 that charset instead of UTF-8.  ``star=1`` sends
                 ``filename*=UTF-8''<pct-enc>`` instead, plus
                 ``filename="<fallback>"`` if ``fallback`` is given.
    nolength     200, no Content-Length, ``Connection: close``; body is
                 close-delimited.  Ignores Range.
    chunked      200 with ``Transfer-Encoding: chunked`` (chunk size
                 ``chunk``, default 16384), no Content-Length.  Ignores Range.
    slowfirst    sleep ``delay`` seconds (default 1, interruptible) before
                 the status line, then serve normally.
    redirect     ``?n=K`` (default 1): 3xx (``code``, default 302) to
                 ``/redirect/<name>?n=K-1`` (other params kept) until n=0,
                 which serves normally.  With ``to_port=P`` the last hop
                 goes to ``http://<to_host>:P/<name>`` (``to_host`` default
                 ``localhost``, so it is a *different host* than 127.0.0.1
                 for cross-host Authorization tests).  ``relative=1`` sends a
                 relative Location for local hops.
    te_range     206 with ``Transfer-Encoding: chunked`` carrying the bytes
                 that were asked for, but a Content-Range whose start/end are
                 shifted by ``shift`` (default 1) - the aria2 #886 class.
    ===========  ============================================================

    Parameters understood on every request (normal or fault): ``rate=B``
    throttles the body to about B bytes/s, ``close=1`` adds
    ``Connection: close``, ``repr_digest=ok|bad`` / ``digest=ok|bad``
    publish the blob's sha256 (or a wrong one) as ``Repr-Digest`` /
    ``Digest``, and ``linked=ok|bad`` puts it in an ``X-Linked-ETag`` on a
    redirect (as a hub does).

    Book-keeping (thread-safe): ``srv.bytes_sent(name)`` counts body bytes
    the server handed to the kernel for that blob (chunk framing excluded);
    ``srv.requests(name)`` lists one dict per request: ``method``, ``path``,
    ``fault``, ``range``, ``status``, ``headers`` (dict), ``sent``, ``time``.

``blake3_file(path)`` hashes a file (blake3 imported lazily).
"""

from __future__ import annotations

import array
import email.utils
import fcntl
import hashlib
import http.server
import os
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Iterable

__all__ = [
    "AUTO",
    "MiB",
    "NGINX_BIN",
    "ECHO_MODULE",
    "Nginx",
    "NginxError",
    "FaultServer",
    "FAULTS",
    "blake3_file",
    "blake3_bytes",
    "free_port",
    "write_deterministic_file",
]

# One nginx for `segdl bench --local`, the tests and the benchmarks.
from segdl.cli.nginx import (  # noqa: F401  (names the tests import from here)
    ECHO_MODULE, LOCALHOST, NGINX_BIN, Nginx, NginxError, free_port, wait_for_port,
)

MiB = 1 << 20


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def blake3_file(path: str | os.PathLike) -> str:
    """Hex blake3 digest of a file (multi-threaded mmap when available)."""
    import blake3  # lazy: only tests that hash need it

    path = os.fspath(path)
    if os.path.getsize(path) == 0:
        return blake3.blake3().hexdigest()
    try:
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        h.update_mmap(path)
        return h.hexdigest()
    except (AttributeError, TypeError):  # very old blake3 without mmap/threads
        h = blake3.blake3()
        with open(path, "rb") as f:
            for _ in range(1 << 40):
                block = f.read(4 * MiB)
                if not block:
                    break
                h.update(block)
        return h.hexdigest()


def blake3_bytes(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


def write_deterministic_file(path: str | os.PathLike, size: int, seed: int) -> Path:
    """Write ``size`` pseudo-random bytes derived from ``seed`` (1 MiB blocks).

    Every block differs, so offset bugs in a downloader cannot hide.
    """
    path = Path(path)
    rng = random.Random(seed)
    remaining = size
    with open(path, "wb") as f:
        for _ in range(size // MiB + 1):
            if remaining <= 0:
                break
            n = min(MiB, remaining)
            f.write(rng.randbytes(n))
            remaining -= n
    return path


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


# --------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------



# --------------------------------------------------------------------------
# FaultServer
# --------------------------------------------------------------------------

FAULTS = frozenset({
    "drop", "status", "norange", "badrange", "stall", "short", "changing",
    "signed", "disposition", "nolength", "chunked", "slowfirst", "redirect",
    "te_range", "overlong",
})

AUTO = object()  # sentinel: "generate a default" for etag / last_modified

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_BASE_MTIME = 1_700_000_000  # fixed, so Last-Modified is deterministic
_WRITE_BLOCK = 64 * 1024
_SIOCOUTQ = 0x5411  # == TIOCOUTQ on Linux: bytes not yet acked by the peer


class _Stopping(Exception):
    """Raised inside a handler when the server is shutting down."""


class _Blob:
    __slots__ = ("data", "etag", "last_modified")

    def __init__(self, data: bytes, etag: str | None, last_modified: str | None):
        self.data = data
        self.etag = etag
        self.last_modified = last_modified


def _parse_range(header: str | None, total: int):
    """Return None (serve whole body), "416", or (start, end_inclusive)."""
    if header is None:
        return None
    m = _RANGE_RE.match(header)
    if not m:
        return None  # multi-range or garbage: ignore Range
    a, b = m.group(1), m.group(2)
    if a == "" and b == "":
        return None
    if a == "":  # suffix
        n = int(b)
        if n == 0 or total == 0:
            return "416"
        return (max(0, total - n), total - 1)
    start = int(a)
    end = int(b) if b != "" else total - 1
    if b != "" and end < start:
        return None  # invalid -> ignore
    if start >= total:
        return "416"
    return (start, min(end, total - 1))


def _xor_version(data: bytes, version: int) -> bytes:
    if version == 0:
        return data
    key = (version - 1) % 255 + 1
    return data.translate(bytes(b ^ key for b in range(256)))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "segdl-faultserver"
    sys_version = ""
    timeout = 60  # socket timeout for idle keep-alive / stuck peers
    server: "_ThreadingServer"

    # --- plumbing ---------------------------------------------------------
    def setup(self):
        super().setup()
        self._abort_rst = False
        self.server.owner._register_conn(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.owner._unregister_conn(self.connection)
            if self._abort_rst:
                self._reset_connection()

    def _reset_connection(self):
        sock = self.connection
        try:
            # let the kernel deliver what we already wrote (bounded, 1 s)
            buf = array.array("i", [0])
            for _ in range(100):
                fcntl.ioctl(sock.fileno(), _SIOCOUTQ, buf)
                if buf[0] == 0 or self.server.owner._stopping.is_set():
                    break
                time.sleep(0.01)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        except OSError:
            pass

    def log_message(self, format, *args):  # silence stderr chatter
        pass

    def send_header(self, keyword, value):
        # bytes go out verbatim; non-ASCII str goes out as raw UTF-8.
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("latin-1")
        else:
            value = str(value)
            if not value.isascii():
                value = value.encode("utf-8").decode("latin-1")
        super().send_header(keyword, value)

    def do_GET(self):
        self._dispatch(head=False)

    def do_HEAD(self):
        self._dispatch(head=True)

    # --- request handling ---------------------------------------------------
    def _dispatch(self, head: bool):
        owner = self.server.owner
        split = urllib.parse.urlsplit(self.path)
        self.params = {k: v[-1] for k, v in
                       urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        segs = split.path.lstrip("/").split("/")
        fault = None
        token = None
        if segs[0] == "s" and len(segs) >= 3:
            fault, token, name = "s", segs[1], "/".join(segs[2:])
        elif segs[0] in FAULTS and len(segs) >= 2:
            fault, name = segs[0], "/".join(segs[1:])
        else:
            name = "/".join(segs)
        name = urllib.parse.unquote(name)
        self.head = head
        self.name = name
        self.entry = owner._log_request(name, {
            "method": self.command,
            "path": self.path,
            "fault": fault,
            "range": self.headers.get("Range"),
            "status": None,
            "headers": {k: v for k, v in self.headers.items()},
            "sent": 0,
            "time": time.time(),
        })
        self.announce_close = self.params.get("close") == "1"
        try:
            blob = owner._get_blob(name)
            if blob is None:
                return self._simple(404, b"no such blob\n")
            if fault is None:
                return self._serve(blob)
            if fault == "s":
                return self._fault_signed_target(blob, token)
            if fault == "changing":
                return self._fault_changing(blob)
            times = self.params.get("times")
            fire = owner._count_and_check((fault, name, split.query),
                                          int(times) if times else None)
            if not fire:
                return self._serve(blob)
            return getattr(self, "_fault_" + fault)(blob)
        except _Stopping:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    # --- output helpers --------------------------------------------------
    def _start(self, status: int, headers: Iterable[tuple[str, object]]):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if self.announce_close and not any(k.lower() == "connection" for k, _ in headers):
            self.send_header("Connection", "close")  # also sets close_connection
        self.end_headers()
        self.entry["status"] = status

    def _write(self, data) -> None:
        """Write body bytes in blocks, counting and optionally throttling."""
        owner = self.server.owner
        mv = memoryview(data)
        rate = float(self.params.get("rate") or 0)
        t0 = time.monotonic()
        done = 0
        for off in range(0, len(mv), _WRITE_BLOCK):
            if owner._stopping.is_set():
                raise _Stopping()
            block = mv[off:off + _WRITE_BLOCK]
            if rate > 0:
                ahead = done / rate - (time.monotonic() - t0)
                if ahead > 0 and owner._stopping.wait(ahead):
                    raise _Stopping()
            self.wfile.write(block)
            done += len(block)
            owner._count(self.name, len(block))
            self.entry["sent"] += len(block)

    def _simple(self, status: int, body: bytes, extra=()):
        headers = [("Content-Type", "text/plain"), ("Content-Length", len(body)), *extra]
        self._start(status, headers)
        if not self.head:
            self.wfile.write(body)

    def _validators(self, blob: _Blob) -> list[tuple[str, object]]:
        h = []
        if blob.etag is not None:
            h.append(("ETag", blob.etag))
        if blob.last_modified is not None:
            h.append(("Last-Modified", blob.last_modified))
        return h

    def _if_range_ok(self, blob: _Blob) -> bool:
        v = self.headers.get("If-Range")
        if v is None:
            return True
        v = v.strip()
        if v.startswith('"') or v.startswith("W/"):
            return blob.etag is not None and v == blob.etag and not v.startswith("W/")
        return blob.last_modified is not None and v == blob.last_modified

    def _plan(self, blob: _Blob):
        """(status, start, end_exclusive) for a normal response, or 416."""
        total = len(blob.data)
        rng = _parse_range(self.headers.get("Range"), total) if self._if_range_ok(blob) else None
        if rng is None:
            return 200, 0, total
        if rng == "416":
            return 416, 0, 0
        return 206, rng[0], rng[1] + 1

    def _serve(self, blob: _Blob, *, extra=(), accept_ranges=True, after: int | None = None,
               then: Callable[[], None] | None = None):
        """Normal (ranged) response; ``after`` truncates the body, ``then`` runs after it."""
        total = len(blob.data)
        status, start, end = self._plan(blob)
        headers = [("Content-Type", "application/octet-stream")]
        if accept_ranges:
            headers.append(("Accept-Ranges", "bytes"))
        headers += self._validators(blob)
        headers += list(extra)
        headers += self._published_digests(blob)
        if status == 416:
            body = b"range not satisfiable\n"
            headers += [("Content-Range", f"bytes */{total}"), ("Content-Length", len(body))]
            self._start(416, headers)
            if not self.head:
                self.wfile.write(body)
            return
        if status == 206:
            headers.append(("Content-Range", f"bytes {start}-{end - 1}/{total}"))
        headers.append(("Content-Length", end - start))
        self._start(status, headers)
        if self.head:
            return
        stop_at = end if after is None else min(end, start + max(0, after))
        self._write(memoryview(blob.data)[start:stop_at])
        if then is not None:
            then()

    def _default_after(self, blob: _Blob) -> int:
        if "after" in self.params:
            return int(self.params["after"])
        status, start, end = self._plan(blob)
        return (end - start) // 2

    # --- faults -------------------------------------------------------------
    def _fault_drop(self, blob: _Blob):
        after = self._default_after(blob)
        self.close_connection = True  # no "Connection: close" header: a surprise

        def abort():
            self.wfile.flush()
            if self.params.get("mode", "rst") == "rst":
                self._abort_rst = True

        self._serve(blob, after=after, then=abort)
        if self.head:
            abort()

    def _fault_short(self, blob: _Blob):
        after = self._default_after(blob)
        self.close_connection = True  # graceful FIN after `after` bytes
        self._serve(blob, after=after)

    def _fault_status(self, blob: _Blob):
        code = int(self.params.get("code", 503))
        extra = []
        if "retry_after" in self.params:
            extra.append(("Retry-After", self.params["retry_after"]))
        if code == 408:
            self.announce_close = True
        self._simple(code, f"fault: status {code}\n".encode(), extra)

    def _fault_norange(self, blob: _Blob):
        headers = [("Content-Type", "application/octet-stream"), *self._validators(blob),
                   ("Content-Length", len(blob.data))]
        self._start(200, headers)
        if not self.head:
            self._write(blob.data)

    def _fault_badrange(self, blob: _Blob):
        total = len(blob.data)
        shift = int(self.params.get("shift", 1))
        status, start, end = self._plan(blob)
        if status == 416:
            return self._serve(blob)
        length = end - start
        s = min(max(0, start + shift), max(0, total - 1))
        e = min(total, s + length)
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   *self._validators(blob),
                   ("Content-Range", f"bytes {s}-{e - 1}/{total}"),
                   ("Content-Length", e - s)]
        self._start(206, headers)
        if not self.head:
            self._write(memoryview(blob.data)[s:e])

    def _fault_stall(self, blob: _Blob):
        owner = self.server.owner
        after = self._default_after(blob)
        seconds = float(self.params.get("seconds", 30))
        status, start, end = self._plan(blob)

        def stall_then_rest():
            self.wfile.flush()
            if owner._stopping.wait(seconds):
                raise _Stopping()
            cut = min(end, start + max(0, after))
            self._write(memoryview(blob.data)[cut:end])

        self._serve(blob, after=after, then=stall_then_rest)

    def _fault_changing(self, blob: _Blob):
        owner = self.server.owner
        times = int(self.params.get("times") or 0)
        n = owner._bump(("changing", self.name, urllib.parse.urlsplit(self.path).query))
        version = max(0, n - times)
        self.entry["version"] = version
        if version == 0:
            return self._serve(blob)
        base_etag = (blob.etag or '"blob"').strip('"')
        ts = _BASE_MTIME + 3600 * version
        if blob.last_modified is not None:
            try:
                ts = email.utils.parsedate_to_datetime(blob.last_modified).timestamp() \
                    + 3600 * version
            except (TypeError, ValueError):
                pass
        changed = _Blob(_xor_version(blob.data, version), f'"{base_etag}-v{version}"',
                        _http_date(ts))
        self._serve(changed)

    def _fault_signed(self, blob: _Blob):
        owner = self.server.owner
        ttl = float(self.params.get("ttl", 2))
        code = int(self.params.get("expired_code", 403))
        token = owner._new_token(self.name, ttl, code)
        loc = f"/s/{token}/{urllib.parse.quote(self.name)}"
        if self.params.get("rate"):  # pace the signed target too
            loc += "?rate=" + urllib.parse.quote(self.params["rate"])
        self._redirect(302, loc, relative=False)

    def _fault_signed_target(self, blob: _Blob, token: str):
        info = self.server.owner._token_info(token)
        if info is None or info[0] != self.name:
            return self._simple(403, b"bad token\n")
        _name, created, ttl, code = info
        if time.monotonic() - created >= ttl:
            return self._simple(code, b"token expired\n")
        self._serve(blob)

    def _fault_disposition(self, blob: _Blob):
        fn = self.params.get("fn", "file.bin")
        if self.params.get("star") == "1":
            value = "attachment; filename*=UTF-8''" + urllib.parse.quote(fn, safe="")
            if "fallback" in self.params:
                value = f'attachment; filename="{self._quote(self.params["fallback"])}"; ' \
                        + value[len("attachment; "):]
        else:
            value = f'attachment; filename="{self._quote(fn)}"'
        enc = self.params.get("enc", "utf-8")
        self._serve(blob, extra=[("Content-Disposition", value.encode(enc, "replace"))])

    @staticmethod
    def _quote(s: str) -> str:
        s = s.replace("\r", "").replace("\n", "")
        return s.replace("\\", "\\\\").replace('"', '\\"')

    def _fault_nolength(self, blob: _Blob):
        headers = [("Content-Type", "application/octet-stream"), *self._validators(blob),
                   ("Connection", "close")]
        self._start(200, headers)
        if not self.head:
            self._write(blob.data)

    def _write_chunked(self, data) -> None:
        size = max(1, int(self.params.get("chunk", 16384)))
        mv = memoryview(data)
        for off in range(0, len(mv), size):
            piece = mv[off:off + size]
            self.wfile.write(b"%x\r\n" % len(piece))
            self._write(piece)
            self.wfile.write(b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _fault_chunked(self, blob: _Blob):
        headers = [("Content-Type", "application/octet-stream"), *self._validators(blob),
                   ("Transfer-Encoding", "chunked")]
        self._start(200, headers)
        if not self.head:
            self._write_chunked(blob.data)

    def _fault_te_range(self, blob: _Blob):
        total = len(blob.data)
        shift = int(self.params.get("shift", 1))
        status, start, end = self._plan(blob)
        if status == 416:
            return self._serve(blob)
        claimed = f"bytes {start + shift}-{end - 1 + shift}/{total}"
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   *self._validators(blob), ("Content-Range", claimed),
                   ("Transfer-Encoding", "chunked")]
        self._start(206, headers)
        if not self.head:
            self._write_chunked(memoryview(blob.data)[start:end])

    def _fault_overlong(self, blob: _Blob):
        """A correct 206 header, then the asked bytes plus ``extra`` bytes of
        junk (0xEE), chunked so no Content-Length stops the client."""
        total = len(blob.data)
        extra = int(self.params.get("extra", 65536))
        status, start, end = self._plan(blob)
        if status != 206:
            return self._serve(blob)
        headers = [("Content-Type", "application/octet-stream"), ("Accept-Ranges", "bytes"),
                   *self._validators(blob), ("Content-Range", f"bytes {start}-{end - 1}/{total}"),
                   ("Transfer-Encoding", "chunked")]
        self._start(206, headers)
        if not self.head:
            self._write_chunked(memoryview(bytes(blob.data[start:end]) + b"\xee" * extra))

    def _fault_slowfirst(self, blob: _Blob):
        if self.server.owner._stopping.wait(float(self.params.get("delay", 1))):
            raise _Stopping()
        self._serve(blob)

    def _fault_redirect(self, blob: _Blob):
        n = int(self.params.get("n", 1))
        if n <= 0:
            return self._serve(blob)
        code = int(self.params.get("code", 302))
        if n == 1 and "to_port" in self.params:
            host = self.params.get("to_host", "localhost")
            loc = f"http://{host}:{int(self.params['to_port'])}/{urllib.parse.quote(self.name)}"
            return self._redirect(code, loc, relative=True)
        params = dict(self.params, n=str(n - 1))
        loc = f"/redirect/{urllib.parse.quote(self.name)}?{urllib.parse.urlencode(params)}"
        self._redirect(code, loc, relative=self.params.get("relative") == "1")

    def _redirect(self, code: int, location: str, relative: bool):
        if not relative and location.startswith("/"):
            host = self.headers.get("Host") or f"{LOCALHOST}:{self.server.server_address[1]}"
            location = f"http://{host}{location}"
        extra = [("Location", location)]
        linked = self.params.get("linked")  # a hub's sha256 on the answer that redirects
        if linked and self.name:
            blob = self.server.owner._get_blob(self.name)
            if blob is not None:
                extra.append(("X-Linked-ETag", f'"{self._sha256_of(blob, linked).hex()}"'))
        self._simple(code, b"redirect\n", extra)

    @staticmethod
    def _sha256_of(blob: "_Blob", which: str) -> bytes:
        """The blob's sha256 (``ok``) or a wrong one (anything else)."""
        import hashlib

        return hashlib.sha256(blob.data if which == "ok" else b"not the file").digest()

    def _published_digests(self, blob: "_Blob") -> list:
        """``repr_digest=ok|bad`` and ``digest=ok|bad``: publish the blob's
        sha256 (or a wrong one) as RFC 9530 Repr-Digest / RFC 3230 Digest."""
        import base64

        out = []
        if self.params.get("repr_digest"):
            b64 = base64.b64encode(self._sha256_of(blob, self.params["repr_digest"])).decode()
            out.append(("Repr-Digest", f"sha-256=:{b64}:"))
        if self.params.get("digest"):
            b64 = base64.b64encode(self._sha256_of(blob, self.params["digest"])).decode()
            out.append(("Digest", f"SHA-256={b64}"))
        return out


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # we join our own threads, with a deadline
    allow_reuse_address = True
    request_queue_size = 128
    owner: "FaultServer"

    def process_request(self, request, client_address):
        t = threading.Thread(target=self._thread_main, args=(request, client_address),
                             daemon=True, name="faultserver-conn")
        self.owner._threads_add(t)
        t.start()

    def _thread_main(self, request, client_address):
        try:
            self.process_request_thread(request, client_address)
        finally:
            self.owner._threads_discard(threading.current_thread())

    def handle_error(self, request, client_address):
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _Stopping)):
            return  # peers vanishing is business as usual here
        super().handle_error(request, client_address)


class FaultServer:
    """Threaded keep-alive HTTP/1.1 server with injectable faults.

    See the module docstring for URL syntax and the fault catalogue.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._blobs: dict[str, _Blob] = {}
        self._bytes: dict[str, int] = {}
        self._requests: dict[str, list[dict]] = {}
        self._counters: dict[tuple, int] = {}
        self._tokens: dict[str, tuple] = {}
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._httpd = _ThreadingServer((LOCALHOST, 0), _Handler)
        self._httpd.owner = self
        self.port: int = self._httpd.server_address[1]
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            daemon=True, name="faultserver-accept")
        self._serve_thread.start()
        self._stopped = False

    # -- public API -----------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def add(self, name: str, data: bytes, etag: str | None | object = AUTO,
            last_modified: str | None | object = AUTO) -> str:
        """Register (or replace) a blob; returns its normal URL.

        ``etag``/``last_modified``: AUTO (default) derives them
        deterministically from the data; None omits the header.
        """
        data = bytes(data)
        if etag is AUTO:
            etag = '"' + hashlib.blake2b(data, digest_size=8).hexdigest() + '"'
        if last_modified is AUTO:
            last_modified = _http_date(_BASE_MTIME)
        with self._lock:
            self._blobs[name] = _Blob(data, etag, last_modified)  # type: ignore[arg-type]
            self._bytes.setdefault(name, 0)
        return self.url(urllib.parse.quote(name))

    def bytes_sent(self, name: str) -> int:
        """Body bytes written to sockets for ``name`` (all faults, all requests)."""
        with self._lock:
            return self._bytes.get(name, 0)

    def requests(self, name: str | None = None) -> list[dict]:
        """Copies of the request records for ``name`` (or all, if None)."""
        with self._lock:
            if name is None:
                recs = [r for lst in self._requests.values() for r in lst]
                recs.sort(key=lambda r: r["time"])
            else:
                recs = list(self._requests.get(name, ()))
            return [dict(r, headers=dict(r["headers"])) for r in recs]

    def reset_stats(self) -> None:
        """Forget byte counts, request logs, `times` counters and tokens."""
        with self._lock:
            self._bytes = {k: 0 for k in self._blobs}
            self._requests.clear()
            self._counters.clear()
            self._tokens.clear()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, abort every open connection, join threads (bounded)."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._httpd.shutdown()          # serve_forever polls every 50 ms
        self._httpd.server_close()
        with self._lock:
            conns = list(self._conns)
            threads = list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)  # wakes readers and blocked writers
            except OSError:
                pass
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._serve_thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "FaultServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals used by the handler ---------------------------------------
    def _get_blob(self, name: str) -> _Blob | None:
        with self._lock:
            return self._blobs.get(name)

    def _log_request(self, name: str, entry: dict) -> dict:
        with self._lock:
            self._requests.setdefault(name, []).append(entry)
        return entry

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self._bytes[name] = self._bytes.get(name, 0) + n

    def _bump(self, key: tuple) -> int:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1
            return self._counters[key]

    def _count_and_check(self, key: tuple, times: int | None) -> bool:
        n = self._bump(key)
        return times is None or n <= times

    def _new_token(self, name: str, ttl: float, code: int) -> str:
        token = os.urandom(8).hex()
        with self._lock:
            self._tokens[token] = (name, time.monotonic(), ttl, code)
        return token

    def _token_info(self, token: str):
        with self._lock:
            return self._tokens.get(token)

    def _register_conn(self, sock) -> None:
        with self._lock:
            self._conns.add(sock)
        if self._stopping.is_set():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _unregister_conn(self, sock) -> None:
        with self._lock:
            self._conns.discard(sock)

    def _threads_add(self, t: threading.Thread) -> None:
        with self._lock:
            self._threads.add(t)

    def _threads_discard(self, t: threading.Thread) -> None:
        with self._lock:
            self._threads.discard(t)


class PacedMirror:
    """A burst-free throttled mirror: segdl's built-in file server over
    ``root`` with every connection paced by the kernel at ``rate`` bytes/s
    (``SO_MAX_PACING_RATE`` + ``sendfile``), unlike nginx's ``limit_rate``,
    which grants each request a one-second burst.  Measured on loopback:
    256 MiB at 20 MiB/s in 13.1 s against 12.8 s ideal.  Speaks the same
    small API as :class:`Nginx` (url, base_url, access_log_entries,
    reset_access_log, context manager)."""

    def __init__(self, root, rate: int) -> None:
        from segdl.cli.fileserver import FileServer

        self.server = FileServer(Path(root), rate=rate)

    def start(self) -> "PacedMirror":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> "PacedMirror":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def access_log_entries(self) -> list[dict]:
        return self.server.log()

    def reset_access_log(self) -> None:
        self.server.reset_log()

    def concurrency(self) -> dict[str, int]:
        """Most requests served at once and most connections open at once
        since the start or the last reset (see FileServer.concurrency)."""
        return self.server.concurrency()
