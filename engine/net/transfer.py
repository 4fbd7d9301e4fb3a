"""One segment's transfer on one easy handle: its requests, the checks on
each answer before its first byte, staging its bytes for the disk side,
and the back-pressure and speed cap that pause it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pycurl

from ..values.errors import BadResponseError, SegdlError
from ..rules.http import ResponseHead, check_response
from ..values.messages import Fetch, LinkStats
from ..disk.staging import ALIGN

if TYPE_CHECKING:
    from ..disk.staging import DiskSide, FileHandle, Stage

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
