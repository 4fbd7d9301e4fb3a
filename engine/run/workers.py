"""The worker processes as the coordinator sees them: their order queues,
the one queue of their reports, which worker hashes which file, and their
start, health check and stop.  (A worker itself is :mod:`.worker`.)
"""

from __future__ import annotations

import os
import queue
import time
from concurrent.futures import Future
from typing import Callable, Iterator

from multiprocess import connection

from ..values.errors import SegdlError
from ..values.messages import Release, Stop, Wakeup
from .channel import use_c_pickler
from .worker import WorkerSettings, run_worker


class Workers:
    """Order queues, the report queue, and which worker tracks which file."""

    def __init__(self, ctx, count: int, settings: WorkerSettings) -> None:
        use_c_pickler()
        self._events = ctx.Queue()
        self._orders = [ctx.Queue() for _ in range(count)]
        self._tracked: dict[int, int] = {}  # file id -> the worker hashing it as it is written
        self._finishers = 0  # Finalize orders sent (they go round the workers)
        self._last_check = 0.0
        self._procs = [
            ctx.Process(target=run_worker, args=(i, self._orders[i], self._events, settings, os.getpid()),
                        name=f"segdl-worker-{i}", daemon=True)
            for i in range(count)
        ]
        for p in self._procs:
            p.start()

    def send(self, worker: int, order) -> None:
        self._orders[worker].put(order)

    def next_finisher(self) -> int:
        """The worker to rename the next batch of files into place."""
        self._finishers += 1
        return self._finishers % len(self._orders)

    def wake(self) -> None:
        """Have the loop look around now (from any thread)."""
        self._events.put(Wakeup())

    def wake_on(self, fut: Future) -> Future:
        """Have the loop look at ``fut`` as soon as it is done, instead of
        at the next event or timeout."""
        fut.add_done_callback(lambda _f: self.wake())
        return fut

    def reports(self, timeout: float, most: int = 1000) -> list:
        """What the workers said: waits up to ``timeout`` for the first
        report, then takes what else is there (up to ``most``)."""
        try:
            batch = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < most:
            try:
                batch.append(self._events.get_nowait())
            except queue.Empty:
                break
        return batch

    # ------------------------------------------------------------ tracking

    def track(self, fid: int, worker: int) -> bool:
        """The worker that hashes ``fid`` as it writes it.  False if one
        already does."""
        if fid in self._tracked:
            return False
        self._tracked[fid] = worker
        return True

    def tracker(self, fid: int) -> int | None:
        return self._tracked.get(fid)

    def release(self, fid: int) -> None:
        """Every worker forgets the file (its descriptor, its hash)."""
        self._tracked.pop(fid, None)
        for q in self._orders:
            q.put(Release(fid))

    # ------------------------------------------------------------ health, stop

    def check(self) -> None:
        """A worker killed from outside (OOM killer, a crash in libcurl)
        reports nothing: notice it, rather than wait for its segments."""
        now = time.monotonic()
        if now - self._last_check < 0.5:
            return
        self._last_check = now
        for i, p in enumerate(self._procs):
            if p.exitcode is not None:
                raise SegdlError(f"worker {i} died (exit {p.exitcode}); run the same command again to continue")

    def stop(self, last_words: Callable[[object], None], wait: float = 10.0) -> None:
        """Ask every worker to stop; hand each report that comes meanwhile
        (their last durable positions) to ``last_words``.  Returns as soon
        as the last worker has exited (its process's sentinel says so), not
        at the next poll of the report queue."""
        for q in self._orders:
            q.put(Stop())
        deadline = time.monotonic() + wait
        while self._drain(last_words):
            alive = [p.sentinel for p in self._procs if p.exitcode is None]
            left = deadline - time.monotonic()
            if not alive or left <= 0:
                break
            # Short, so a worker's report that fills the pipe meanwhile
            # (its feeder thread then waits for us) is read soon.
            connection.wait(alive, timeout=min(left, 0.01))
        self._drain(last_words)  # what a worker said just before it exited

    def _drain(self, last_words: Callable[[object], None]) -> bool:
        """Hand every report already queued to ``last_words``; False when
        the queue is broken (nothing more will come)."""
        while True:
            try:
                ev = self._events.get_nowait()
            except queue.Empty:
                return True
            except (EOFError, OSError):
                return False
            last_words(ev)

    def reap(self) -> None:
        for p in self._procs:
            p.join(timeout=1)
            if p.is_alive():
                p.kill()

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._orders)))
