"""Probes: what many URLs are (size, Range support, validators, the final
URL, and for a small file its bytes), learnt with one small ranged GET
each on one multi handle whose connections are kept between batches."""

from __future__ import annotations

import os
import select
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

import pycurl

from ..values.errors import DownloadError, SegdlError, TransientError
from ..rules.http import RemoteInfo, ResponseHead, parse_content_range, remote_from_probe
from ..values.messages import TransferOptions
from ..rules.ranges import range_spec
from .curl import _TRANSIENT_CODES, _configure, _hop, _new_handle, _new_multi, _next_hop, curl_error

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
#: A probe that has not ended after this many seconds fails (retryable).
PROBE_DEADLINE = 120.0


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
    began: float = field(default_factory=time.monotonic)  # when it was launched (its deadline counts from it)
    key: int = 0  # the order it answers (a worker's probes)

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
    urls: list[str], options: TransferOptions, *, concurrency: int = 16, deadline: float = PROBE_DEADLINE,
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


class _ProbeSet:
    """Probes in flight on one multi handle: :meth:`launch` starts one,
    :meth:`pump` lets libcurl work and returns the ones that ended."""

    def __init__(self, streams: int = 1, per_host: int = 0, *,
                 on: tuple[pycurl.CurlMulti, pycurl.CurlShare] | None = None) -> None:
        """``on``: the multi handle (and its share) of a worker's transfers,
        whose connections the probes then leave for its ranges to reuse;
        its owner drives it (see :meth:`finished`) and closes it."""
        self._owned = on is None
        self.multi, self.share = on if on is not None else _new_multi(streams, per_host)
        self.active: dict[pycurl.Curl, _Probe] = {}

    def close(self) -> None:
        self.drop_all()
        if self._owned:
            self.multi.close()

    def drop_all(self) -> None:
        """End every probe in flight, reporting nothing."""
        for c in list(self.active):
            self._end(c)

    def launch(self, url: str, options: TransferOptions, with_data: bool, *,
               http1: bool = False, key: int = 0) -> RemoteInfo | SegdlError | None:
        """Start probing ``url``; an error if it cannot even start.
        ``http1``: over HTTP/1.1, as a worker's ranges go, so that its
        connection can carry one of them next."""
        c = _new_handle(self.share)
        p = _Probe(url, c, PROBE_DATA if with_data else 1, hub=options.hub, options=options, key=key)
        try:
            _configure(c, url, options)
        except pycurl.error as e:
            c.close()
            return curl_error(e.args[0], e.args[1])
        if http1:
            c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
        c.setopt(pycurl.RANGE, range_spec(0, p.asked))
        c.setopt(pycurl.BUFFERSIZE, 16384 if p.asked == 1 else 256 * 1024)
        c.setopt(pycurl.HEADERFUNCTION, p.on_header)
        c.setopt(pycurl.WRITEFUNCTION, p.on_write)
        c.setopt(pycurl.TIMEOUT_MS, int(max(1.0, options.stall_timeout) * 1000 * 3))
        self.multi.add_handle(c)
        self.active[c] = p
        return None

    def _end(self, c: pycurl.Curl) -> None:
        self.active.pop(c)
        self.multi.remove_handle(c)
        c.close()  # its connection stays in the multi's pool

    def wait(self, timeout: float, wake_fd: int | None = None) -> None:
        """Until a socket of a probe (or ``wake_fd``) is ready, or ``timeout``."""
        if wake_fd is None:
            self.multi.select(timeout)
            return
        r, w, x = self.multi.fdset()
        t = self.multi.timeout()
        if t >= 0:
            timeout = min(timeout, t / 1000)
        select.select([*r, wake_fd], w, x, timeout)

    def pump(self, deadline: float) -> list[tuple[str, RemoteInfo | SegdlError]]:
        """Let libcurl move data; the probes that ended (or ran past
        ``deadline`` seconds), with what each found."""
        multi = self.multi
        done: list[tuple[str, RemoteInfo | SegdlError]] = []
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, failed = multi.info_read()
            for c, code, msg in [(c, 0, "") for c in ok] + failed:
                ended = self.finished(c, code, msg)
                if ended is not None:
                    done.append((ended[0].url, ended[1]))
            if not queued:
                break
        done += [(p.url, found) for p, found in self.overdue(deadline)]
        return done

    def finished(self, c: pycurl.Curl, code: int, msg: str) -> tuple[_Probe, RemoteInfo | SegdlError] | None:
        """A probe's request ended (``code`` 0: well): what it found, or
        None when it goes on to where a redirect sent it.  A bug in reading
        the answer fails this probe alone: in a worker, it would otherwise
        end the worker, and every job with it."""
        try:
            return self._finished(c, code, msg)
        except Exception as e:  # (not SegdlError: _finished returns those)
            p = self.active.get(c)
            if p is None:
                raise
            self._end(c)
            return p, DownloadError(f"probe failed: {e!r}")

    def _finished(self, c: pycurl.Curl, code: int, msg: str) -> tuple[_Probe, RemoteInfo | SegdlError] | None:
        p = self.active[c]
        if code == 0:
            try:
                target = _next_hop(c, p.head.status, p.options, p.hops)
            except SegdlError as e:
                self._end(c)
                return p, e
            if target is None:
                found = _probe_result(p)
                self._end(c)
                return p, found
            p.hops += 1  # the same probe, on to where it was sent
            self.multi.remove_handle(c)
            _hop(c, p.url, target, p.options)
            self.multi.add_handle(c)
            return None
        if code == pycurl.E_WRITE_ERROR and p.head.status in (200, 206):
            p.body.clear()  # no Range, or more than asked: no data
            found = _probe_result(p)
        elif p.asked > 1 and p.head.status == 206 and code in _TRANSIENT_CODES:
            # The answer was good and broke off in its body:
            # what it told and what arrived stand.
            found = _probe_result(p)
        else:
            found = curl_error(code, msg, stall_timeout=p.options.stall_timeout)
        self._end(c)
        return p, found

    def overdue(self, deadline: float) -> list[tuple[_Probe, RemoteInfo | SegdlError]]:
        """Probes whose body is slow to come (or not waited for), with what
        they found, and those past ``deadline`` seconds, timed out."""
        now = time.monotonic()
        out = []
        for c, p in list(self.active.items()):
            if p.body_overdue(now):
                # Its answer is known; its body is slow to come (or not
                # waited for).  Keep what came: a worker fetches the rest.
                out.append((p, _probe_result(p)))
                self._end(c)
            elif now - p.began > deadline:
                out.append((p, TransientError("probe timed out")))
                self._end(c)
        return out


class Prober:
    """Probes on one ``CurlMulti`` kept between calls, so its keep-alive
    connections (and TLS sessions) serve the next batch: a collection of 80
    files from one hub opens a handful of connections for its probes, not
    80.  Probes run in one thread at a time; :meth:`close` may come from
    another: it closes at once, or as soon as the running probe ends."""

    def __init__(self) -> None:
        self.set = _ProbeSet()
        self._busy = threading.Lock()
        self._closing = False

    def close(self) -> None:
        self._closing = True
        if self._busy.acquire(blocking=False):
            try:
                self.set.close()
            finally:
                self._busy.release()

    def probe(
        self, urls: list[str], options: TransferOptions, *, concurrency: int = 16, deadline: float = PROBE_DEADLINE,
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
                return self._probe(urls, options, concurrency, deadline, per_url or {}, with_data)
            finally:
                if self._closing:
                    self.set.close()

    def _probe(self, urls, options, concurrency, deadline, per_url, with_data) -> dict[str, RemoteInfo | SegdlError]:
        results: dict[str, RemoteInfo | SegdlError] = {}
        todo = list(dict.fromkeys(urls))
        probes = self.set
        try:
            while todo or probes.active:
                while todo and len(probes.active) < concurrency:
                    url = todo.pop(0)
                    failed = probes.launch(url, per_url.get(url, options), url in with_data)
                    if failed is not None:
                        results[url] = failed
                results.update(probes.pump(deadline))
                if probes.active:
                    probes.wait(0.05)
        finally:
            probes.drop_all()
        return results


@dataclass(frozen=True, slots=True)
class ProbeOrder:
    """The URLs of one file (its URL and its mirrors) to probe."""

    key: int  # the caller's name for the file
    urls: tuple[str, ...]
    options: tuple[TransferOptions, ...]  # one per URL
    with_data: frozenset[str] = frozenset()  # URLs whose first PROBE_DATA bytes are kept


class Findings:
    """What the probes of each order (by its key) found so far: an order is
    complete once every one of its URLs has answered."""

    def __init__(self) -> None:
        self.waiting: dict[int, tuple[ProbeOrder, dict]] = {}  # key -> (order, findings so far)

    def open(self, order: ProbeOrder) -> None:
        self.waiting[order.key] = (order, {})

    def found(self, key: int, url: str, result) -> tuple[int, dict] | None:
        """Record what the probe of ``url`` for ``key`` found; the order's
        key and findings when that completes it, else None (also for an
        order no longer open: a late answer)."""
        if key not in self.waiting:
            return None
        order, got = self.waiting[key]
        got[url] = result
        if len(got) < len(set(order.urls)):
            return None
        del self.waiting[key]
        return key, got

    def fail_all(self, error: SegdlError) -> list[tuple[int, dict]]:
        """Every open order, ended with ``error`` for each of its URLs."""
        out = [(key, {u: error for u in order.urls}) for key, (order, _) in self.waiting.items()]
        self.waiting.clear()
        return out


class ProbeFeed:
    """Probes as a stream: orders go in at any time (:meth:`add`), and each
    file's findings come out (:meth:`take`) as soon as all its URLs have
    answered, while the others go on.  A batch would wait for its slowest
    probe, leaving the connections of the others idle: with many small
    files, whose probe is their whole download, that was most of the time.

    One thread drives one multi handle, at most ``concurrency`` probes at
    once, its connections kept between probes.  ``wake`` is called (from
    that thread) whenever findings are ready to take."""

    def __init__(self, *, concurrency: int = 16, deadline: float = PROBE_DEADLINE, streams: int = 1,
                 wake: Callable[[], None] | None = None) -> None:
        self.concurrency = concurrency
        self.streams = streams
        self.deadline = deadline
        self._wake = wake
        self._lock = threading.Lock()
        self._orders: deque[ProbeOrder] = deque()
        self._found: list[tuple[int, dict[str, RemoteInfo | SegdlError]]] = []
        self._waiting = Findings()  # being probed (the thread's)
        self._open = 0  # orders added and not yet taken
        self._closing = False
        # The thread is about to wait, or waits, with no order to take: an
        # order added then pokes it.  Only then: each poke gave up the
        # caller's GIL (the engine's loop) and woke the thread, which took
        # it, whether or not the thread was already up and would see it.
        self._asleep = False
        self._pipe = os.pipe()
        for fd in self._pipe:
            os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._run, name="segdl-probe", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Files added whose findings have not been taken yet."""
        return self._open

    def add(self, orders: list[ProbeOrder]) -> None:
        if not orders:
            return
        with self._lock:
            self._orders.extend(orders)
            self._open += len(orders)
            poke, self._asleep = self._asleep, False
        if poke:
            self._poke()

    def take(self) -> list[tuple[int, dict[str, RemoteInfo | SegdlError]]]:
        with self._lock:
            found, self._found = self._found, []
            self._open -= len(found)
        return found

    def close(self) -> None:
        self._closing = True
        self._poke()
        self._thread.join(timeout=10)
        for fd in self._pipe:
            os.close(fd)

    def _poke(self) -> None:
        try:
            os.write(self._pipe[1], b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is pending anyway) or closed

    def _run(self) -> None:
        while not self._closing:
            probes = _ProbeSet(self.streams, -(-self.concurrency // self.streams) if self.streams > 1 else 0)
            try:
                self._serve(probes)
            except Exception as e:  # a bug here must not leave files waiting forever
                self._fail_all(DownloadError(f"probe failed: {e!r}"))
            finally:
                probes.close()

    def _fail_all(self, error: SegdlError) -> None:
        with self._lock:
            failed = [(o.key, {u: error for u in o.urls}) for o in self._orders]
            failed += self._waiting.fail_all(error)
            self._orders.clear()
            self._found.extend(failed)
        if self._wake is not None:
            self._wake()

    def _serve(self, probes: _ProbeSet) -> None:
        todo: deque[tuple[ProbeOrder, str, TransferOptions]] = deque()
        waiting = self._waiting
        of_url: dict[str, list[int]] = {}  # URL in flight -> keys waiting for it
        while not self._closing:
            with self._lock:
                while self._orders:
                    order = self._orders.popleft()
                    waiting.open(order)
                    todo.extend((order, u, o) for u, o in zip(order.urls, order.options))
            ended: list[tuple[str, RemoteInfo | SegdlError]] = []
            while todo and len(probes.active) < self.concurrency:
                order, url, opts = todo.popleft()
                if url in of_url:  # the same URL for another file: one probe answers both
                    of_url[url].append(order.key)
                    continue
                of_url[url] = [order.key]
                failed = probes.launch(url, opts, url in order.with_data)
                if failed is not None:
                    ended.append((url, failed))
            if probes.active:
                ended += probes.pump(self.deadline)
            ready = []
            for url, found in ended:
                for key in of_url.pop(url, ()):
                    if (complete := waiting.found(key, url, found)) is not None:
                        ready.append(complete)
            if ready:
                with self._lock:
                    self._found.extend(ready)
                if self._wake is not None:
                    self._wake()
            if ended or (todo and len(probes.active) < self.concurrency):
                continue  # more may start at once
            with self._lock:
                if self._orders:
                    continue  # added since the top of this turn
                self._asleep = True
            probes.wait(0.5, self._pipe[0])
            with self._lock:
                self._asleep = False
            try:
                os.read(self._pipe[0], 4096)
            except BlockingIOError:
                pass


def _probe_result(p: _Probe) -> RemoteInfo | SegdlError:
    final = p.curl.getinfo(pycurl.EFFECTIVE_URL) or p.url
    try:
        info = remote_from_probe(p.url, final, p.head, bytes(p.body), p.asked, hub=p.hub,
                                 error_body=bytes(p.error_body))
    except SegdlError as e:
        return e
    latency = max(0.0, p.curl.getinfo(pycurl.STARTTRANSFER_TIME) - p.curl.getinfo(pycurl.PRETRANSFER_TIME))
    return replace(info, latency=latency)
