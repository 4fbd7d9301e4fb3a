"""Many segment transfers on one ``CurlMulti`` (a worker's), with easy
handles (and so keep-alive connections) reused from one segment to the
next, and each request sized from what its connection showed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pycurl

from ..values.errors import SegdlError, StalledError, TransientError
from ..rules.http import ResponseHead, check_response
from ..values.messages import Fetch
from ..rules.ranges import chunk_size, cut_pays, range_spec
from .curl import _configure, _new_handle, _new_multi, curl_error, discard, link_after, origin
from .probe import PROBE_DEADLINE, Findings, ProbeOrder, _ProbeSet
from .transfer import LIMITED_BUFFER, Transfer, WriteGate

if TYPE_CHECKING:
    from ..disk.staging import DiskSide, FileHandle

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
        # Probes of files whose ranges come here next, on the same multi:
        # a probe's connection, kept in its pool, carries the first range.
        self.probes = _ProbeSet(on=(self.multi, self.share))
        self._probing = Findings()
        self._probed: list[tuple[int, dict]] = []  # findings complete, to report

    def busy(self) -> bool:
        return bool(self.transfers or self.probes.active)

    def probe(self, order: ProbeOrder) -> None:
        """Probe a file's URLs here, over HTTP/1.1 as its ranges will go,
        and without data (a probe cut short in its body would close its
        connection); :meth:`take_probed` gives what they found."""
        self._probing.open(order)
        distinct: dict = {}  # (a URL given twice is probed once)
        for url, opts in zip(order.urls, order.options):
            distinct.setdefault(url, opts)
        for url, opts in distinct.items():
            failed = self.probes.launch(url, opts, False, http1=True, key=order.key)
            if failed is not None:
                self._probe_ended(order.key, url, failed)

    def take_probed(self) -> list[tuple[int, dict]]:
        out, self._probed = self._probed, []
        return out

    def _probe_ended(self, key: int, url: str, found) -> None:
        if (complete := self._probing.found(key, url, found)) is not None:
            self._probed.append(complete)

    def close(self) -> None:
        self.probes.close()
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
        known, rate, latency = self._pace.get(c, ("", 0.0, 0.0))
        if known and known == origin(fetch.url):
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
        # A range has a TCP connection of its own (curl.py's policy), so
        # HTTP/2 would carry one stream per connection: its framing, flow
        # control windows and smaller reads (5 KiB callbacks over TLS,
        # against 16 KiB) cost CPU and buy nothing here.
        c.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1)
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
        t.curl.setopt(pycurl.WRITEFUNCTION, discard)
        t.curl.setopt(pycurl.HEADERFUNCTION, discard)
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
        if self.busy():
            self.multi.select(timeout)
        else:
            time.sleep(timeout)
            return []
        while self.multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        out: list[Outcome] = []
        while True:
            queued, ok, failed = self.multi.info_read()
            for c, code, msg in [(c, 0, "") for c in ok] + failed:
                t = self._by_curl.get(c)
                if t is not None:
                    if (o := self._finish(t, code, msg)) is not None:
                        out.append(o)
                elif c in self.probes.active and (ended := self.probes.finished(c, code, msg)) is not None:
                    self._probe_ended(ended[0].key, ended[0].url, ended[1])
            if not queued:
                break
        if self.probes.active:
            for p, found in self.probes.overdue(PROBE_DEADLINE):
                self._probe_ended(p.key, p.url, found)
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
        self._pace[c] = (origin(t.fetch.url), t.rate, t.latency)
