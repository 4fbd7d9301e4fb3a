"""The only module that talks to libcurl.

* :class:`Prober` (and :func:`probe_many`) learns size, Range support,
  validators and the final URL of many URLs at once (one small ranged GET
  each), keeping its connections between batches.
* :class:`MultiDriver` runs many segment transfers on one ``CurlMulti``;
  its write callback validates each response before its first byte and
  ``pwrite``s at the segment's offset.

``pycurl.error`` and libcurl's numeric codes never leave this module: they
become :mod:`segdl.engine.errors` classes in :func:`curl_error`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pycurl

from .errors import (
    BadResponseError,
    DownloadError,
    SegdlError,
    StalledError,
    TransientError,
    UsageError,
)
from .http import RemoteInfo, ResponseHead, check_response, parse_content_range, remote_from_probe, status_error
from .messages import Fetch, LinkStats, TransferOptions
from .naming import redirect_headers
from .ranges import chunk_size, cut_pays, range_spec

from .staging import ALIGN

if TYPE_CHECKING:
    from .staging import DiskSide, FileHandle, Stage

# libcurl error codes worth retrying (connection-level trouble).
_TRANSIENT_CODES = {
    pycurl.E_COULDNT_CONNECT,
    pycurl.E_PARTIAL_FILE,
    pycurl.E_OPERATION_TIMEDOUT,
    pycurl.E_GOT_NOTHING,
    pycurl.E_SEND_ERROR,
    pycurl.E_RECV_ERROR,
    pycurl.E_SSL_CONNECT_ERROR,
    getattr(pycurl, "E_HTTP2", 16),
    getattr(pycurl, "E_HTTP2_STREAM", 92),
    getattr(pycurl, "E_COULDNT_RESOLVE_PROXY", 5),
}
_USAGE_CODES = {pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL}


# ------------------------------------------------------ connection policy
#
# ``-x N`` means N TCP connections, whatever protocol the server offers.
# libcurl multiplexes every transfer to a host over one HTTP/2 connection
# by default (CURLMOPT_PIPELINING = CURLPIPE_MULTIPLEX): the 16 ranges of
# a file would share one congestion window and one per-connection cap (a
# CDN's, or a far server's window / RTT).  So no multi handle of segdl
# multiplexes: a transfer (a probe, a range) has a connection of its own,
# reused by the next transfer when it ends; HTTP/2 is still negotiated and
# used, one stream per connection.  Each multi's handles share TLS
# sessions and DNS answers (CURLSH), so a further connection to a known
# host resumes its TLS session instead of a full handshake.


def _new_multi() -> tuple[pycurl.CurlMulti, pycurl.CurlShare]:
    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_NOTHING)
    share = pycurl.CurlShare()
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_DNS)
    return multi, share


_PROTOCOLS = {pycurl.CURL_HTTP_VERSION_1_0: "HTTP/1.0", pycurl.CURL_HTTP_VERSION_1_1: "HTTP/1.1",
              pycurl.CURL_HTTP_VERSION_2_0: "HTTP/2", getattr(pycurl, "CURL_HTTP_VERSION_3", 30): "HTTP/3"}


def link_after(c: pycurl.Curl, before: LinkStats) -> LinkStats:
    """``before`` plus the request ``c`` just made: its connection, its
    protocol, and the connect and TLS time of a connection it opened."""
    try:
        conn = c.getinfo(pycurl.CONN_ID)
        protocol = _PROTOCOLS.get(c.getinfo(pycurl.INFO_HTTP_VERSION), before.protocol)
        connect = tls = 0.0
        if c.getinfo(pycurl.NUM_CONNECTS):
            lookup, tcp, app = (c.getinfo(pycurl.NAMELOOKUP_TIME), c.getinfo(pycurl.CONNECT_TIME),
                                c.getinfo(pycurl.APPCONNECT_TIME))
            connect, tls = max(0.0, tcp - lookup), max(0.0, app - tcp) if app else 0.0
    except pycurl.error:
        return before
    conns = before.connections if conn < 0 or conn in before.connections else before.connections | {conn}
    return LinkStats(conns, protocol, before.connect + connect, before.tls + tls, before.requests + 1)


def _new_handle(share: pycurl.CurlShare) -> pycurl.Curl:
    c = pycurl.Curl()
    c.setopt(pycurl.SHARE, share)
    return c


def curl_error(code: int, message: str, *, stall_timeout: float | None = None) -> SegdlError:
    """Translate a libcurl failure into segdl's error tree."""
    text = message or f"libcurl error {code}"
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return StalledError(f"connection stalled (no data for {stall_timeout or 0:g} s): {text}")
    if code in _TRANSIENT_CODES:
        return TransientError(text)
    if code in _USAGE_CODES:
        return UsageError(f"bad URL: {text}")
    if code == pycurl.E_COULDNT_RESOLVE_HOST:
        return DownloadError(f"cannot resolve host: {text}")
    if code == pycurl.E_TOO_MANY_REDIRECTS:
        return DownloadError(f"too many redirects: {text}")
    if code in (pycurl.E_PEER_FAILED_VERIFICATION, getattr(pycurl, "E_SSL_CACERT", 60)):
        return DownloadError(f"TLS certificate verification failed: {text}")
    return DownloadError(text)


def follows_itself(options: TransferOptions) -> bool:
    """May libcurl follow redirects itself?  Only when that cannot carry a
    header further than it should go: with no header, or when the user
    trusts every redirect (--location-trusted).  libcurl drops only
    Authorization and Cookie on another host; a custom header such as
    ``X-Api-Key`` would follow.  Otherwise the transport follows them
    (``_next_hop``), with the headers :func:`redirect_headers` allows."""
    return not options.headers or options.location_trusted


def _configure(c: pycurl.Curl, url: str, options: TransferOptions) -> None:
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.FOLLOWLOCATION, 1 if follows_itself(options) else 0)
    c.setopt(pycurl.UNRESTRICTED_AUTH, 1 if options.location_trusted else 0)
    c.setopt(pycurl.MAXREDIRS, options.max_redirects)
    # Never let a redirect take us to file://, ftp:// or other schemes.
    c.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    c.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.CONNECTTIMEOUT_MS, int(options.connect_timeout * 1000))
    # The stall timeout is enforced per transfer by MultiDriver (time since
    # the last byte); libcurl's low-speed check, which averages over a
    # window, only backs it up.
    c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
    c.setopt(pycurl.LOW_SPEED_TIME, max(5, int(round(options.stall_timeout * 3))))
    c.setopt(pycurl.USERAGENT, options.user_agent)
    _set_headers(c, options.headers)
    c.setopt(pycurl.SSL_VERIFYPEER, 0 if options.insecure else 1)
    c.setopt(pycurl.SSL_VERIFYHOST, 0 if options.insecure else 2)
    if options.ca_cert:
        c.setopt(pycurl.CAINFO, options.ca_cert)
    c.setopt(pycurl.BUFFERSIZE, options.buffer_size)
    c.setopt(pycurl.TCP_KEEPALIVE, 1)
    # Never wait to share a connection (see "connection policy" above).
    c.setopt(pycurl.PIPEWAIT, 0)
    if options.recv_buffer:
        c.setopt(pycurl.SOCKOPTFUNCTION, _rcvbuf_setter(options.recv_buffer))
    else:
        c.unsetopt(pycurl.SOCKOPTFUNCTION)


def _next_hop(c: pycurl.Curl, status: int, options: TransferOptions, hops: int) -> str | None:
    """Where a redirect that libcurl left to us leads (None: the answer is
    not one).  Raises :class:`DownloadError` past ``max_redirects`` or for a
    scheme other than http(s), as libcurl would."""
    if follows_itself(options) or not 300 <= status < 400:
        return None
    target = c.getinfo(pycurl.REDIRECT_URL)
    if not target:
        return None  # a 3xx without Location: that is the answer
    if hops >= options.max_redirects:
        raise DownloadError(f"too many redirects: more than {options.max_redirects}")
    if target.split(":", 1)[0].lower() not in ("http", "https"):
        raise DownloadError("a redirect to a URL that is not http(s) is refused")
    return target


def _hop(c: pycurl.Curl, first_url: str, url: str, options: TransferOptions) -> None:
    """The same request again, to where a redirect led."""
    c.setopt(pycurl.URL, url)
    _set_headers(c, redirect_headers(options.headers, first_url, url, options.location_trusted))


def _set_headers(c: pycurl.Curl, headers: tuple[str, ...]) -> None:
    # pycurl keeps the previous list when given an empty one: a reused
    # handle would send another request's headers.
    if headers:
        c.setopt(pycurl.HTTPHEADER, list(headers))
    else:
        c.unsetopt(pycurl.HTTPHEADER)


def _rcvbuf_setter(size: int):
    import socket

    def setter(fd: int, purpose: int) -> int:
        try:
            s = socket.socket(fileno=fd)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            finally:
                s.detach()
        except OSError:
            pass
        return pycurl.SOCKOPT_OK

    return setter


# ------------------------------------------------------------------- probe


#: The start of an error answer's body that is kept to read what it says.
ERROR_BODY_MAX = 64 * 1024
#: A probe that may also fetch data asks for this much of the file's
#: start: a file up to this size takes exactly one request.
PROBE_DATA = 1024 * 1024
#: ... but takes its body for at most this long (a slow server must not
#: hold up the other probes of its batch): what arrived by then is kept as
#: the file's first bytes, the rest is fetched by a worker.
PROBE_DATA_SECONDS = 0.5
#: ... and not at all for a file this large: it is fetched by a worker's
#: connections anyway, which should not wait for the probe's body (at
#: 5 MiB/s per connection, 1 MiB is 0.2 s of all of them idle).  The rest
#: of the probe's answer is thrown away, at most PROBE_DATA: under 1% of
#: such a file.
PROBE_BIG = 100 * PROBE_DATA


@dataclass(slots=True)
class _Probe:
    url: str
    curl: pycurl.Curl
    asked: int = 1  # bytes asked for from offset 0
    head: ResponseHead = field(default_factory=ResponseHead)
    got_body: bool = False
    body: bytearray = field(default_factory=bytearray)
    body_began: float = 0.0
    head_at: float = 0.0  # when the headers of its 206 answer were complete
    hub: str = ""  # the hub it asks (its error bodies say why)
    error_body: bytearray = field(default_factory=bytearray)
    options: TransferOptions | None = None
    hops: int = 0  # redirects followed here (not by libcurl)
    big: bool = False  # the file is at least PROBE_BIG: its body is not waited for

    def on_header(self, line: bytes) -> None:
        self.head.feed(line)
        if line in (b"\r\n", b"\n") and self.head.status == 206:
            self.head_at = time.monotonic()  # its headers are complete
            cr = parse_content_range(self.head.get("content-range"))
            self.big = cr is not None and cr.total is not None and cr.total >= PROBE_BIG

    def body_overdue(self, now: float) -> bool:
        if self.asked <= 1 or not self.head_at:
            return False
        return self.big or now - (self.body_began or self.head_at) > PROBE_DATA_SECONDS

    def on_write(self, data: bytes):
        if 300 <= self.head.status < 400:
            return None  # the body of a redirect we follow ourselves
        self.got_body = True
        if self.head.status >= 400:
            # An error's body may say why (a hub's JSON): keep its start.
            room = ERROR_BODY_MAX - len(self.error_body)
            if room > 0:
                self.error_body += data[:room]
            return None
        if self.head.status == 200:
            return 0  # no Range support: stop before downloading the body
        if self.asked > 1:
            if not self.body_began:
                self.body_began = time.monotonic()  # its deadline: see body_overdue
            if len(self.body) + len(data) > self.asked:
                return 0  # more than was asked for: not a usable answer
            self.body += data
        return None


def probe_many(
    urls: list[str], options: TransferOptions, *, concurrency: int = 16, deadline: float = 120.0,
    per_url: dict[str, TransferOptions] | None = None, with_data: frozenset[str] = frozenset(),
) -> dict[str, RemoteInfo | SegdlError]:
    """One ``GET`` with ``Range: bytes=0-0`` per URL, ``concurrency`` at
    once, on fresh connections (see :class:`Prober` to keep them)."""
    prober = Prober()
    try:
        return prober.probe(urls, options, concurrency=concurrency, deadline=deadline, per_url=per_url,
                            with_data=with_data)
    finally:
        prober.close()


class Prober:
    """Probes on one ``CurlMulti`` kept between calls, so its keep-alive
    connections (and TLS sessions) serve the next batch: a collection of 80
    files from one hub opens a handful of connections for its probes, not
    80.  Probes run in one thread at a time; :meth:`close` may come from
    another: it closes at once, or as soon as the running probe ends."""

    def __init__(self) -> None:
        import threading

        self.multi, self.share = _new_multi()
        self._busy = threading.Lock()
        self._closing = False

    def close(self) -> None:
        self._closing = True
        if self._busy.acquire(blocking=False):
            try:
                self.multi.close()
            finally:
                self._busy.release()

    def probe(
        self, urls: list[str], options: TransferOptions, *, concurrency: int = 16, deadline: float = 120.0,
        per_url: dict[str, TransferOptions] | None = None, with_data: frozenset[str] = frozenset(),
    ) -> dict[str, RemoteInfo | SegdlError]:
        """One ``GET`` with ``Range: bytes=0-0`` per URL, ``concurrency`` at once.

        ``per_url`` overrides ``options`` for some URLs (their own headers).
        URLs in ``with_data`` ask for the first :data:`PROBE_DATA` bytes
        instead, and keep them (``RemoteInfo.first_bytes``): for a file that
        small, the probe is the whole download."""
        with self._busy:
            if self._closing:
                return {u: TransientError("stopping") for u in urls}
            try:
                return self._probe(urls, options, concurrency, deadline, per_url, with_data)
            finally:
                if self._closing:
                    self.multi.close()

    def _probe(self, urls, options, concurrency, deadline, per_url, with_data) -> dict[str, RemoteInfo | SegdlError]:
        results: dict[str, RemoteInfo | SegdlError] = {}
        todo = list(dict.fromkeys(urls))
        multi = self.multi
        active: dict[pycurl.Curl, _Probe] = {}
        stop_at = time.monotonic() + deadline

        def end(c: pycurl.Curl) -> None:
            active.pop(c)
            multi.remove_handle(c)
            c.close()  # its connection stays in the multi's pool

        try:
            while todo or active:
                while todo and len(active) < concurrency:
                    url = todo.pop(0)
                    c = _new_handle(self.share)
                    opts = (per_url or {}).get(url, options)
                    p = _Probe(url, c, PROBE_DATA if url in with_data else 1, hub=opts.hub, options=opts)
                    try:
                        _configure(c, url, opts)
                    except pycurl.error as e:
                        results[url] = curl_error(e.args[0], e.args[1])
                        c.close()
                        continue
                    c.setopt(pycurl.RANGE, range_spec(0, p.asked))
                    c.setopt(pycurl.BUFFERSIZE, 16384 if p.asked == 1 else 256 * 1024)
                    c.setopt(pycurl.HEADERFUNCTION, p.on_header)
                    c.setopt(pycurl.WRITEFUNCTION, p.on_write)
                    c.setopt(pycurl.TIMEOUT_MS, int(max(1.0, options.stall_timeout) * 1000 * 3))
                    multi.add_handle(c)
                    active[c] = p
                while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                    pass
                while True:
                    queued, ok, failed = multi.info_read()
                    for c in ok:
                        p = active[c]
                        try:
                            target = _next_hop(c, p.head.status, p.options, p.hops)
                        except SegdlError as e:
                            results[p.url], target = e, None
                        else:
                            if target is None:
                                results[p.url] = _probe_result(p)
                        if target is None:
                            end(c)
                            continue
                        p.hops += 1  # the same probe, on to where it was sent
                        multi.remove_handle(c)
                        _hop(c, p.url, target, p.options)
                        multi.add_handle(c)
                    for c, code, msg in failed:
                        p = active[c]
                        if code == pycurl.E_WRITE_ERROR and p.head.status in (200, 206):
                            p.body.clear()  # no Range, or more than asked: no data
                            results[p.url] = _probe_result(p)
                        elif p.asked > 1 and p.head.status == 206 and code in _TRANSIENT_CODES:
                            # The answer was good and broke off in its body:
                            # what it told and what arrived stand.
                            results[p.url] = _probe_result(p)
                        else:
                            results[p.url] = curl_error(code, msg, stall_timeout=options.stall_timeout)
                        end(c)
                    if not queued:
                        break
                now = time.monotonic()
                for c, p in list(active.items()):
                    if p.body_overdue(now):
                        # Its answer is known; its body is slow to come.
                        # Keep what came: a worker fetches the rest.
                        results[p.url] = _probe_result(p)
                        end(c)
                if now > stop_at:
                    for c in list(active):
                        results[active[c].url] = TransientError("probe timed out")
                        end(c)
                    todo.clear()
                    break
                if active:
                    multi.select(0.05)
        finally:
            for c in list(active):
                end(c)
        return results


def _probe_result(p: _Probe) -> RemoteInfo | SegdlError:
    final = p.curl.getinfo(pycurl.EFFECTIVE_URL) or p.url
    try:
        info = remote_from_probe(p.url, final, p.head, bytes(p.body), p.asked, hub=p.hub,
                                 error_body=bytes(p.error_body))
    except SegdlError as e:
        return e
    latency = max(0.0, p.curl.getinfo(pycurl.STARTTRANSFER_TIME) - p.curl.getinfo(pycurl.PRETRANSFER_TIME))
    return replace(info, latency=latency)


# -------------------------------------------------------------- transfers

# Receive buffer of a speed-capped connection (see MultiDriver._issue).
LIMITED_BUFFER = 64 * 1024


class WriteGate:
    """Back-pressure between the network and the disk.

    Transfers count what they write; whoever makes data durable advances
    ``synced``.  While more than ``limit`` bytes are written but not synced,
    write callbacks pause their transfer (libcurl keeps the chunk and hands
    it over again on unpause), so TCP pushes back on the server and a crash
    loses a bounded amount.
    """

    __slots__ = ("written", "synced", "limit")

    def __init__(self, limit: int | None) -> None:
        self.written = 0
        self.synced = 0
        self.limit = limit

    @property
    def open(self) -> bool:
        return self.limit is None or self.written - self.synced < self.limit



@dataclass(slots=True)
class Transfer:
    """One segment's request on one easy handle."""

    fetch: Fetch
    handle: "FileHandle"
    curl: pycurl.Curl
    position: int
    end: int | None  # the segment's end (may shrink)
    requested_end: int | None  # end of the HTTP request in progress (a chunk)
    request_start: int = 0
    request_began: float = 0.0
    rate: float = 0.0  # bytes/s of its connection over its last request
    latency: float = 0.0  # seconds from its connection's last request to that answer's first byte
    head: ResponseHead = field(default_factory=ResponseHead)
    checked: bool = False
    reached_end: bool = False
    error: SegdlError | None = None
    gate: WriteGate | None = None
    paused: bool = False
    last_data: float = 0.0  # monotonic time of the last byte (or of the request)
    max_speed: int = 0  # bytes/s cap of this connection; 0: none
    tokens: float = 0.0  # token bucket for max_speed
    tokens_at: float = 0.0
    throttled: bool = False  # paused by its speed cap (not by the disk)
    disk: "DiskSide | None" = None  # where staged bytes go (see staging.py)
    stage: "Stage | None" = None  # the buffer being filled
    stage_at: float = 0.0  # when it was taken
    link: LinkStats = field(default_factory=LinkStats)  # its requests so far

    def refill(self, now: float) -> float:
        cap = max(2 * LIMITED_BUFFER, self.max_speed * 0.25)
        self.tokens = min(cap, self.tokens + (now - self.tokens_at) * self.max_speed)
        self.tokens_at = now
        return self.tokens

    @property
    def segment(self) -> int:
        return self.fetch.segment

    def seal(self) -> None:
        """Hand the buffer being filled to this segment's writer."""
        st, self.stage = self.stage, None
        if st is None or self.disk is None:
            return
        if not st.fill:
            self.disk.pool.give(st)
            return
        if self.gate is not None:
            self.gate.written += st.fill
        self.disk.writer_for(self.fetch.segment).write(self.handle, st, self.fetch.segment, self)

    def _stage(self, view) -> None:
        """Copy ``view`` (the next bytes at ``position``) into staging
        buffers, sealing each one that fills up."""
        view = memoryview(view)
        if self.disk is None:
            self.position += len(view)
            return
        while view:
            st = self.stage
            if st is None:
                st = self.stage = self.disk.pool.take(self.position)
                self.stage_at = self.last_data
            k = min(st.room, len(view))
            st.put(view if k == len(view) else view[:k])
            self.position += k
            view = view[k:]
            if not st.room:
                self.seal()

    def on_write(self, data: bytes):
        if self.error is not None:
            return 0  # a writer could not write an earlier buffer (disk error)
        if not self.checked:
            err = check_response(
                self.head, self.request_start, self.requested_end, self.fetch.expect,
                redirected=self.head.redirects > 0 or self.fetch.redirected,
            )
            if err is not None:
                self.error = err
                return 0
            self.checked = True
        if self.gate is not None and not self.gate.open:
            self.paused = True
            return pycurl.WRITEFUNC_PAUSE
        n = len(data)
        # Write no byte past what this response promised: a server that
        # sends more than its Content-Range (no Content-Length to stop
        # libcurl) must not get its extra bytes written and claimed.
        stop = self.end
        if self.requested_end is not None and (stop is None or self.requested_end < stop):
            stop = self.requested_end
        take = n if stop is None else min(n, stop - self.position)
        st = self.stage
        if take > 0 and self.disk is not None and (st is None or st.room < take):
            # New buffers this chunk needs (a first one may start mid-block).
            rest = take - (st.room if st is not None else 0)
            if self.disk.pool.available() < -(-(rest + ALIGN) // self.disk.pool.size):
                self.paused = True  # the buffers are waiting for a writer
                return pycurl.WRITEFUNC_PAUSE
        if self.max_speed:
            # Our own token bucket: libcurl's cap lets a new request burst.
            cap = max(2 * LIMITED_BUFFER, self.max_speed * 0.25)
            if self.refill(time.monotonic()) < min(n, self.max_speed, cap):
                self.paused = self.throttled = True
                return pycurl.WRITEFUNC_PAUSE
            self.tokens -= n
        self.last_data = time.monotonic()
        if take > 0:
            self._stage(data if take == n else memoryview(data)[:take])
        if self.end is not None and self.position >= self.end:
            self.reached_end = True
            if take < n or (self.requested_end is not None and self.end < self.requested_end):
                return 0  # shortened by a split: stop here, the tail is someone else's
        elif take < n:
            self.error = BadResponseError(
                f"the server sent more than the range it announced ([{self.request_start}, {self.requested_end}))")
            return 0
        return None


@dataclass(frozen=True, slots=True)
class Outcome:
    transfer: Transfer
    outcome: str  # "done" | "error"
    error: SegdlError | None = None
    total: int | None = None
    final_url: str | None = None


class MultiDriver:
    """Many transfers on one ``CurlMulti``; easy handles are reused so
    keep-alive connections are too."""

    def __init__(self, gate: WriteGate | None = None, disk: "DiskSide | None" = None) -> None:
        """``disk`` None: bytes are counted and dropped (``segdl bench``)."""
        self.gate = gate
        self.disk = disk
        self.multi, self.share = _new_multi()
        self.idle: list[pycurl.Curl] = []
        self.transfers: dict[int, Transfer] = {}
        self._by_curl: dict[pycurl.Curl, Transfer] = {}
        # What each handle's connection showed on its last request: its
        # rate and latency, the sizes of a next segment's requests on it.
        self._pace: dict[pycurl.Curl, tuple[str, float, float]] = {}  # (origin, rate, latency)

    def close(self) -> None:
        for t in list(self.transfers.values()):
            self._detach(t)
        for c in self.idle:
            c.close()
        self.idle.clear()
        self._pace.clear()
        self.multi.close()

    # ------------------------------------------------------------ control

    def start(self, fetch: Fetch, handle: "FileHandle") -> Outcome | None:
        """Start a segment.  Bytes the Fetch says are in the file already go
        to the writer's books (to be synced and hashed); if they cover the
        segment, it is done without a request (the Outcome is returned),
        else a request goes out for the rest."""
        c = self.idle.pop() if self.idle else _new_handle(self.share)
        t = Transfer(fetch, handle, c, fetch.position, fetch.end, fetch.end, gate=self.gate, disk=self.disk)
        origin, rate, latency = self._pace.get(c, ("", 0.0, 0.0))
        if origin and origin == _origin(fetch.url):
            t.rate, t.latency = rate, latency
        if fetch.written and fetch.end is not None and self.disk is not None:
            n = min(fetch.written, fetch.end - fetch.position)
            t.position += n
            t.last_data = time.monotonic()
            if self.gate is not None:
                self.gate.written += n
            self.disk.writer_for(fetch.segment).note(handle, fetch.segment, fetch.position, t.position)
            if t.position >= fetch.end:
                t.reached_end = True
                self.idle.append(c)
                return Outcome(t, "done")
        _configure(c, fetch.url, fetch.options)
        t.max_speed = max(0, fetch.max_speed)
        t.tokens_at = time.monotonic()
        self.transfers[fetch.segment] = t
        self._by_curl[c] = t
        self._issue(t)
        return None

    def _issue(self, t: Transfer) -> None:
        """Send the next request of a segment: a chunk of its remaining
        range, sized to last a couple of seconds at the connection's speed,
        so a later split rarely has to cut a request short."""
        c, fetch = t.curl, t.fetch
        t.head = ResponseHead()
        t.checked = False
        t.request_start = t.position
        t.request_began = t.last_data = time.monotonic()
        if fetch.expect.ranged:
            if t.end is None:
                t.requested_end = None
                c.setopt(pycurl.RANGE, f"{t.position}-")
            else:
                t.requested_end = t.position + chunk_size(t.end - t.position, t.rate, t.latency)
                c.setopt(pycurl.RANGE, range_spec(t.position, t.requested_end))
        else:
            t.requested_end = t.end
            c.unsetopt(pycurl.RANGE)
        # libcurl enforces a speed cap between reads, so a read of a large
        # buffer overshoots it: capped connections read in small pieces.
        buf = fetch.options.buffer_size
        c.setopt(pycurl.BUFFERSIZE, min(buf, LIMITED_BUFFER) if t.max_speed else buf)
        c.setopt(pycurl.HEADERFUNCTION, t.head.feed)
        c.setopt(pycurl.WRITEFUNCTION, t.on_write)
        self.multi.add_handle(c)

    def shrink(self, segment: int, at: int, min_tail: int = 0) -> int | None:
        """Stop ``segment`` at ``at`` or later; returns the accepted end.

        When the request in progress ends past ``at`` but enough of the
        range lies beyond it, the split moves to that request's end: the
        connection is not cut, nothing in flight is thrown away."""
        t = self.transfers.get(segment)
        if t is None or t.end is None or not t.fetch.expect.ranged:
            return None
        new_end = max(at, t.position)
        if t.requested_end is not None and new_end < t.requested_end:
            if t.end - t.requested_end >= max(1, min_tail):
                new_end = t.requested_end  # split on the request boundary: nothing cut
            else:
                # Cutting throws away what is in flight; only worth it for
                # a connection known to need long to finish.  Its speed:
                # over this request once it has run a while, else over the
                # previous one.  A brand-new connection's is unknown: it is
                # not cut (its bytes in flight would be fetched twice).
                elapsed = time.monotonic() - t.request_began
                rate = (t.position - t.request_start) / elapsed if elapsed > 0.2 else t.rate
                if not cut_pays(t.end - t.position, rate):
                    return None
        if new_end >= t.end:
            return None
        t.end = new_end
        return new_end

    def limit(self, segment: int, max_speed: int) -> None:
        """Change a running transfer's speed cap (libcurl applies it live)."""
        t = self.transfers.get(segment)
        if t is not None:
            t.refill(time.monotonic())
            t.max_speed = max(0, max_speed)

    def cancel(self, segment: int) -> Transfer | None:
        t = self.transfers.get(segment)
        if t is not None:
            self._detach(t)
        return t

    def seal_stale(self, before: float) -> None:
        """Seal the buffers that began filling before ``before``: a slow
        connection's bytes still become durable every checkpoint."""
        for t in self.transfers.values():
            if t.stage is not None and t.stage.fill and t.stage_at < before:
                t.seal()

    def _detach(self, t: Transfer) -> None:
        t.seal()  # what it staged goes to disk before its end is reported
        self.transfers.pop(t.segment, None)
        self._by_curl.pop(t.curl, None)
        try:
            self.multi.remove_handle(t.curl)
        except pycurl.error:
            pass
        # Drop the callbacks' references to the transfer before reuse.
        t.curl.setopt(pycurl.WRITEFUNCTION, _discard)
        t.curl.setopt(pycurl.HEADERFUNCTION, _discard)
        if len(self.idle) < 256:
            self.idle.append(t.curl)
        else:
            self._pace.pop(t.curl, None)
            t.curl.close()

    def unpause(self) -> None:
        """Resume transfers paused by the gate (while it stays open) or by
        their speed cap (once they have tokens again)."""
        now = time.monotonic()
        for t in list(self.transfers.values()):
            if self.gate is not None and not self.gate.open:
                return
            if self.disk is not None and not self.disk.pool.available():
                return
            if t.paused:
                if t.throttled and t.max_speed and t.refill(now) < min(LIMITED_BUFFER, t.max_speed):
                    continue
                t.paused = t.throttled = False
                t.last_data = time.monotonic()  # waiting for the disk is not a stall
                try:
                    t.curl.pause(pycurl.PAUSE_CONT)
                except pycurl.error:
                    pass

    # ------------------------------------------------------------ running

    def step(self, timeout: float) -> list[Outcome]:
        """Let libcurl move data for up to ``timeout`` seconds; return the
        transfers that ended."""
        if self.transfers:
            self.multi.select(timeout)
        else:
            time.sleep(timeout)
            return []
        while self.multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        out: list[Outcome] = []
        while True:
            queued, ok, failed = self.multi.info_read()
            for c in ok:
                t = self._by_curl.get(c)
                if t is not None and (o := self._finish(t, 0, "")) is not None:
                    out.append(o)
            for c, code, msg in failed:
                t = self._by_curl.get(c)
                if t is not None and (o := self._finish(t, code, msg)) is not None:
                    out.append(o)
            if not queued:
                break
        out.extend(self._cut_stalled())
        return out

    def _cut_stalled(self) -> list[Outcome]:
        """End transfers that received nothing for longer than their stall
        timeout (paused ones excepted: they wait for the disk)."""
        now = time.monotonic()
        out = []
        for t in list(self.transfers.values()):
            limit = t.fetch.options.stall_timeout
            if not t.paused and now - t.last_data > limit:
                self._detach(t)
                out.append(Outcome(t, "error", StalledError(f"connection stalled (no data for {limit:g} s)")))
        return out

    def _finish(self, t: Transfer, code: int, msg: str) -> Outcome | None:
        t.link = link_after(t.curl, t.link)
        if code == 0 and t.error is None and t.checked:
            self._measure(t)
        if (code == 0 and t.error is None and t.checked and t.end is not None
                and t.requested_end is not None and t.position == t.requested_end < t.end):
            # A chunk is complete and the segment goes on: next request, same connection.
            self.multi.remove_handle(t.curl)
            self._issue(t)
            return None
        final_url = t.curl.getinfo(pycurl.EFFECTIVE_URL)
        redirected = t.head.redirects > 0 or t.fetch.redirected
        self._detach(t)
        if t.reached_end and t.error is None:
            return Outcome(t, "done", final_url=final_url)
        if t.error is not None:
            return Outcome(t, "error", t.error)
        if code != 0:
            err = curl_error(code, msg, stall_timeout=t.fetch.options.stall_timeout)
            return Outcome(t, "error", err)
        if not t.checked:  # a response with no body at all
            err = check_response(t.head, t.request_start, t.requested_end, t.fetch.expect,
                                 redirected=redirected)
            if err is not None:
                return Outcome(t, "error", err)
            if t.end is not None and t.position < t.end:
                return Outcome(t, "error", TransientError("empty response body"))
        if t.end is None:  # a length-less stream ends at EOF
            return Outcome(t, "done", total=t.position, final_url=final_url)
        if t.position >= t.end:
            return Outcome(t, "done", final_url=final_url)
        return Outcome(
            t, "error",
            TransientError(f"connection closed early at byte {t.position} of [{t.fetch.position}, {t.end})"),
        )


    def _measure(self, t: Transfer) -> None:
        """Note the rate and latency of ``t``'s connection over the request
        that just ended (a short one says little about the rate)."""
        c = t.curl
        latency = max(0.0, c.getinfo(pycurl.STARTTRANSFER_TIME) - c.getinfo(pycurl.PRETRANSFER_TIME))
        elapsed = time.monotonic() - t.request_began
        moved = t.position - t.request_start
        if elapsed > 0 and moved >= 256 * 1024:
            t.rate = moved / elapsed
        t.latency = latency
        self._pace[c] = (_origin(t.fetch.url), t.rate, t.latency)


def _origin(url: str) -> str:
    return url.split("/", 3)[2] if "://" in url else ""


def _discard(data):
    return None


__all__ = ["MultiDriver", "Outcome", "Prober", "Transfer", "WriteGate", "curl_error", "probe_many", "status_error"]


# -------------------------------------------------------- small API calls


@dataclass(frozen=True, slots=True)
class Answer:
    """The whole answer to one small GET (a hub's listing call)."""

    status: int
    head: ResponseHead
    body: bytes
    final_url: str


def http_get(url: str, options: TransferOptions, *, max_bytes: int = 64 * 1024 * 1024,
             timeout: float = 60.0) -> Answer:
    """One synchronous ``GET`` that follows redirects (with the headers
    on the same origin only, see :func:`follows_itself`) and returns
    the body whole, for a hub's JSON listings.  A body larger than
    ``max_bytes`` or slower than ``timeout`` seconds is a
    :class:`TransientError`; network failures are translated as for
    transfers.  The HTTP status is the caller's to judge."""
    head = ResponseHead()
    body = bytearray()

    def on_write(data: bytes):
        if 300 <= head.status < 400:
            return None  # the body of a redirect we follow ourselves
        if len(body) + len(data) > max_bytes:
            return 0
        body.extend(data)
        return None

    c = pycurl.Curl()
    try:
        _configure(c, url, options)
        c.setopt(pycurl.HEADERFUNCTION, head.feed)
        c.setopt(pycurl.WRITEFUNCTION, on_write)
        c.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000))
        c.setopt(pycurl.ACCEPT_ENCODING, "")  # gzip'ed JSON where offered
        hops = 0
        while True:
            try:
                c.perform()
            except pycurl.error as e:
                code, msg = e.args[0], e.args[1]
                if code == pycurl.E_WRITE_ERROR:
                    raise TransientError(f"the answer of {url.split('?')[0]} is larger than {max_bytes} bytes") from None
                raise curl_error(code, msg, stall_timeout=timeout) from None
            target = _next_hop(c, head.status, options, hops)
            if target is None:
                break
            hops += 1
            _hop(c, url, target, options)
        return Answer(head.status, head, bytes(body), c.getinfo(pycurl.EFFECTIVE_URL) or url)
    finally:
        c.close()
