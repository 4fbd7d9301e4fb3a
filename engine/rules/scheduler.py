"""Who downloads what: connection slots, segment states, retries, splits.

Pure state: the coordinator feeds it events (a segment finished, progress
moved, a split was accepted) and asks it for actions (assign a segment to a
worker, ask a worker to shrink a segment, cancel a segment).  It never
touches a process, a socket, a file or a clock: ``now`` is passed in.  Tests
drive it by feeding events.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..values.errors import SegdlError
from .ranges import DEFAULT_MIN_SPLIT, DEFAULT_SPLIT_AFTER_SECONDS, Running, choose_split
from .retry import RetryPolicy

PENDING, RUNNING, WAITING, DONE, PAUSED = "pending", "running", "waiting", "done", "paused"


@dataclass(slots=True)
class SegmentState:
    key: int
    file: int
    start: int
    end: int | None  # None: length-less stream
    position: int  # durable position
    seen: int  # best known received position (>= position)
    state: str = PENDING
    worker: int | None = None
    not_before: float = 0.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    splitting: bool = False
    rate: float | None = None  # bytes/s while running (smoothed)
    rate_at: float | None = None  # when ``seen`` was last sampled for it


@dataclass(slots=True)
class FileState:
    key: int
    ranged: bool
    max_connections: int
    host: str = ""
    segments: list[int] = field(default_factory=list)
    failed: bool = False
    paused: bool = False
    priority: int = 0  # files of a higher priority get connections first
    worker: int | None = None  # the worker its segments go to (see take_worker)
    preferred: bool = False  # ``worker`` is only wished for (its probe's), until a first segment goes there
    # Kept by Scheduler._set, so no query walks every segment of a file:
    running_keys: set[int] = field(default_factory=set)
    pending: int = 0
    done: int = 0
    cursor: int = 0  # no segment before this index in ``segments`` is pending
    index: dict[int, int] = field(default_factory=dict)  # segment -> its index in ``segments``

    @property
    def running(self) -> int:
        return len(self.running_keys)


# ----------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Assign:
    worker: int
    segment: int
    position: int
    end: int | None


@dataclass(frozen=True, slots=True)
class RequestSplit:
    worker: int
    segment: int
    at: int


@dataclass(frozen=True, slots=True)
class CancelSegment:
    worker: int
    segment: int


@dataclass(frozen=True, slots=True)
class FileComplete:
    file: int


@dataclass(frozen=True, slots=True)
class FileFailed:
    file: int
    error: SegdlError


class Scheduler:
    """The segments of every running file and the slots they run in.

    One class of about 350 lines, kept whole on purpose: every method moves
    a segment between the states above and must keep the per-file counts
    and the free slots in step with it (``_set``, ``_occupy``,
    ``_vacate``); split across classes, those invariants would be kept in
    two places."""

    def __init__(
        self,
        workers: int,
        slots_per_worker: int,
        *,
        total: int | None = None,
        min_split: int = DEFAULT_MIN_SPLIT,
        split_after: float = DEFAULT_SPLIT_AFTER_SECONDS,
        max_per_host: int = 0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.free = {w: slots_per_worker for w in range(workers)}
        self.total_free = total if total is not None else workers * slots_per_worker
        self.min_split = min_split
        self.split_after = split_after
        self.max_per_host = max_per_host  # 0: no cap
        # Requests to a host made outside the scheduler (probes in flight):
        # they count against the per-host cap too.
        self.reserved: dict[str, int] = {}
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.files: dict[int, FileState] = {}
        self.segments: dict[int, SegmentState] = {}
        self.waiting: set[int] = set()  # segments in WAITING (retry backoff)

    def _set(self, s: SegmentState, state: str) -> None:
        """The one place a segment changes state (keeps the counts)."""
        f = self.files[s.file]
        old, s.state = s.state, state
        if old == state:
            return
        for st, sign in ((old, -1), (state, 1)):
            if st == PENDING:
                f.pending += sign
            elif st == DONE:
                f.done += sign
            elif st == RUNNING:
                (f.running_keys.add if sign > 0 else f.running_keys.discard)(s.key)
            elif st == WAITING:
                (self.waiting.add if sign > 0 else self.waiting.discard)(s.key)
        if state == PENDING:
            f.cursor = min(f.cursor, f.index[s.key])

    # ------------------------------------------------------------ setup

    def add_file(self, file: int, *, ranged: bool, max_connections: int, host: str = "",
                 priority: int = 0, worker: int | None = None) -> None:
        """``worker``: the one its segments go to (see take_worker), when
        the caller has chosen already (the worker that probed it holds a
        connection for its first range)."""
        known = worker in self.free
        self.files[file] = FileState(file, ranged, max(1, max_connections), host, priority=priority,
                                     worker=worker if known else None, preferred=known)

    def set_priority(self, file: int, priority: int) -> None:
        f = self.files.get(file)
        if f is not None:
            f.priority = priority

    def add_segment(self, file: int, segment: int, start: int, end: int | None, done: int) -> None:
        f = self.files[file]
        pos = start + done
        st = SegmentState(segment, file, start, end, pos, pos, retry=self.retry, state=PAUSED)
        self.segments[segment] = st
        f.index[segment] = len(f.segments)
        f.segments.append(segment)
        if end is not None and pos >= end:
            self._set(st, DONE)
        elif not f.paused:
            self._set(st, PENDING)

    def remove_file(self, file: int) -> list[CancelSegment]:
        """Forget a file; cancel whatever of it still runs."""
        f = self.files.pop(file, None)
        if f is None:
            return []
        out = []
        for key in f.segments:
            s = self.segments.pop(key)
            self.waiting.discard(key)
            if s.state == RUNNING and s.worker is not None:
                out.append(CancelSegment(s.worker, key))
                self._vacate(s.worker)
        return out

    # ------------------------------------------------------------ queries

    def host_running(self) -> dict[str, int]:
        """Connections running to each host (the per-host cap's count)."""
        out: dict[str, int] = {}
        for f in self.files.values():
            if f.running:
                out[f.host] = out.get(f.host, 0) + f.running
        return out

    def running_count(self, file: int) -> int:
        return self.files[file].running

    def file_done(self, file: int) -> bool:
        f = self.files[file]
        return f.done == len(f.segments)

    def next_wakeup(self) -> float | None:
        return min((self.segments[k].not_before for k in self.waiting), default=None)

    def _next_pending(self, f: FileState) -> int | None:
        """The first pending segment of ``f`` in file order (plan order)."""
        if not f.pending:
            return None
        while f.cursor < len(f.segments):
            key = f.segments[f.cursor]
            if self.segments[key].state == PENDING:
                return key
            f.cursor += 1
        return None

    # ------------------------------------------------------------ actions

    def take_worker(self, f: FileState) -> int | None:
        """The worker for a new connection of ``f``: always the one that got
        its first, so a file's bytes are staged, written, hashed in order and
        synced by one process (one fdatasync per checkpoint, not one per
        worker); a new file goes to the worker with the most free slots."""
        if self.total_free <= 0:
            return None
        if f.worker is None or (f.preferred and self.free[f.worker] <= 0):
            f.worker = self.worker_for_new_file()  # (the worker it wished for is full: the emptiest)
        return f.worker if self.free[f.worker] > 0 else None

    def worker_for_new_file(self, promised: dict[int, int] | None = None) -> int:
        """The worker with the most free slots (the lowest, on a tie), less
        the slots ``promised`` to files on their way to each worker."""
        promised = promised or {}
        return max(self.free, key=lambda w: (self.free[w] - promised.get(w, 0), -w))

    def _occupy(self, worker: int) -> None:
        self.free[worker] -= 1
        self.total_free -= 1

    def _vacate(self, worker: int) -> None:
        self.free[worker] += 1
        self.total_free += 1

    def plan(self, now: float) -> list[Assign | RequestSplit]:
        """Fill free slots: pending segments first, then tail splits."""
        out: list[Assign | RequestSplit] = []
        for key in list(self.waiting):
            s = self.segments[key]
            if s.not_before <= now:
                self._set(s, PENDING)
        # Round-robin over files, one segment each per round, so files that
        # run together share the connection budget; a higher priority level
        # takes what it can before the next one gets any.
        per_host: dict[str, int] = dict(self.reserved)
        for f in self.files.values():
            per_host[f.host] = per_host.get(f.host, 0) + f.running
        host_full = lambda f: bool(self.max_per_host) and per_host.get(f.host, 0) >= self.max_per_host  # noqa: E731
        ready = [f for f in self.files.values() if f.pending and not (f.failed or f.paused)]
        levels = sorted({f.priority for f in ready}, reverse=True)
        for level in levels:
            if not self._fill([f for f in ready if f.priority == level], per_host, host_full, out):
                return out
        return self._split_tails(out, host_full)

    def _fill(self, ready: list[FileState], per_host: dict, host_full, out: list) -> bool:
        """Round-robin connections to ``ready`` files; False when every
        slot is taken."""
        progress = True
        while progress:
            progress = False
            for f in ready:
                if f.running >= f.max_connections or host_full(f):
                    continue
                key = self._next_pending(f)
                if key is None:
                    continue
                worker = self.take_worker(f)
                if worker is None:
                    if self.total_free <= 0:
                        return False
                    continue  # its worker is full; other files may fit elsewhere
                s = self.segments[key]
                self._set(s, RUNNING)
                s.worker, f.preferred = worker, False
                s.rate = s.rate_at = None
                self._occupy(worker)
                per_host[f.host] = per_host.get(f.host, 0) + 1
                out.append(Assign(worker, key, s.position, s.end))
                progress = True
        return True

    def _split_tails(self, out: list, host_full) -> list:
        # Free slots and nothing pending: split the largest running range.
        spare = self.total_free
        if spare <= 0:
            return out
        if self.waiting or any(f.pending for f in self.files.values()):
            return out  # a retry is about to want the slot
        candidates = []
        for f in self.files.values():
            if f.failed or f.paused or not f.ranged:
                continue
            if f.running >= f.max_connections or host_full(f):
                continue
            if f.worker is not None and self.free[f.worker] <= 0:
                continue  # its tail would need a slot on its own worker
            for key in sorted(f.running_keys):
                s = self.segments[key]
                if not s.splitting and s.end is not None:
                    candidates.append(Running(key, max(s.seen, s.position), s.end, s.rate))
        for _ in range(spare):
            pick = choose_split(candidates, self.min_split, self.split_after)
            if pick is None:
                break
            key, at = pick
            s = self.segments[key]
            s.splitting = True
            candidates = [c for c in candidates if c.key != key]
            out.append(RequestSplit(s.worker, key, at))
        return out

    # ------------------------------------------------------------ events

    def on_written(self, segment: int, position: int, now: float | None = None) -> None:
        s = self.segments.get(segment)
        if s is None or s.state != RUNNING:
            return
        if now is not None:
            if s.rate_at is not None and now > s.rate_at:
                inst = max(0, position - s.seen) / (now - s.rate_at)
                s.rate = inst if s.rate is None else 0.5 * s.rate + 0.5 * inst
            s.rate_at = now
        if position > s.seen:
            s.seen = position

    def on_durable(self, segment: int, position: int) -> None:
        s = self.segments.get(segment)
        if s is not None and position > s.position:
            s.position = position
            s.seen = max(s.seen, position)

    def on_shrunk(self, segment: int, new_end: int | None) -> tuple[int, int] | None:
        """The owner accepted (or refused) a split.  Returns the tail range
        ``(start, end)`` the caller must register as a new segment."""
        s = self.segments.get(segment)
        if s is None:
            return None
        s.splitting = False
        if new_end is None or s.end is None or new_end >= s.end:
            return None
        tail = (new_end, s.end)
        s.end = new_end
        return tail

    def on_finished(
        self,
        segment: int,
        position: int,
        outcome: str,
        error: SegdlError | None,
        now: float,
        *,
        total: int | None = None,
    ) -> list[FileComplete | FileFailed | CancelSegment]:
        s = self.segments.get(segment)
        if s is None:
            return []
        f = self.files[s.file]
        if s.state == RUNNING and s.worker is not None:
            self._vacate(s.worker)
        if s.state == RUNNING:
            self._set(s, PAUSED)  # out of RUNNING at once; its next state follows
        s.worker = None
        s.splitting = False
        if not f.ranged and outcome != "done":
            position = s.start  # a plain stream cannot continue mid-way
        s.position = max(s.start, position) if f.ranged else position
        s.seen = s.position
        if outcome == "done":
            if s.end is None and total is not None:
                s.end = total
            self._set(s, DONE)
            if s.end is not None and s.position < s.end:
                s.position = s.end
            return [FileComplete(f.key)] if self.file_done(f.key) and not f.failed else []
        if outcome == "cancelled":
            self._set(s, PAUSED if f.paused else PENDING)
            return []
        # error
        assert error is not None
        try:
            s.retry = s.retry.increment(error)
        except SegdlError:
            return self.fail_file(f.key, error)
        s.not_before = now + s.retry.delay(error, self.rng)
        self._set(s, WAITING)
        return []

    def fail_file(self, file: int, error: SegdlError) -> list[FileFailed | CancelSegment]:
        """End a file with ``error``: cancel what runs of it, park the rest."""
        f = self.files.get(file)
        if f is None or f.failed:
            return []
        f.failed = True
        return [FileFailed(f.key, error), *self._hold(f)]

    def _hold(self, f: FileState) -> list[CancelSegment]:
        """Stop a file's work: cancel what runs, park what waits."""
        out = []
        for key in f.segments:
            s = self.segments[key]
            if s.state == RUNNING and s.worker is not None:
                out.append(CancelSegment(s.worker, key))
            elif s.state in (PENDING, WAITING):
                self._set(s, PAUSED)
        return out

    # ------------------------------------------------------------ control

    def pause_file(self, file: int) -> list[CancelSegment]:
        f = self.files.get(file)
        if f is None or f.paused:
            return []
        f.paused = True
        return self._hold(f)

    def resume_file(self, file: int) -> None:
        f = self.files.get(file)
        if f is None or not f.paused:
            return
        f.paused = False
        for key in f.segments:
            s = self.segments[key]
            if s.state == PAUSED:
                self._set(s, PENDING)
