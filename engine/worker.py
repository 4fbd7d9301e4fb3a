"""A worker process: one ``CurlMulti`` driving many segment transfers.

The main thread runs libcurl and ``pwrite``s; a syncer thread runs
``fdatasync`` in batches (by bytes and by time) and only then reports
positions to the coordinator as durable.  The curl loop never waits for the
disk to sync.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from dataclasses import dataclass

from . import storage
from .errors import StorageError
from .messages import (
    Cancel,
    Durable,
    Fetch,
    Finished,
    Limit,
    Release,
    Shrink,
    Shrunk,
    Stop,
    WorkerCrashed,
    Written,
)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    checkpoint_bytes: int = 8 * 1024 * 1024  # sync at least this often...
    checkpoint_seconds: float = 0.5  # ...and at least this often
    report_seconds: float = 0.2  # how often to report received progress
    # Stop reading sockets while more than this is written but not yet
    # synced: the disk sets the pace, and a crash loses at most this much
    # (plus what is in flight in socket buffers).
    max_unsynced: int = 32 * 1024 * 1024


class _Syncer(threading.Thread):
    """Makes positions durable, then tells the coordinator, in order."""

    def __init__(self, index: int, events, gate) -> None:
        super().__init__(name=f"segdl-sync-{index}", daemon=True)
        self.index = index
        self.events = events
        self.jobs: queue.Queue = queue.Queue()
        self.poisoned: dict[int, str] = {}  # fds whose sync failed: never durable again
        self.gate = gate  # a transport.WriteGate: its ``synced`` advances after each sync

    def checkpoint(self, positions: dict[int, tuple[int, int]], mark: int) -> None:
        """positions: segment -> (fd, position); mark: bytes written so far."""
        self.jobs.put(("ckpt", positions, mark))

    def finish(self, fd: int, event: Finished) -> None:
        self.jobs.put(("finish", fd, event))

    def flush(self) -> None:
        done = threading.Event()
        self.jobs.put(("flush", done))
        done.wait(60)

    def run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while True:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            fds: set[int] = set()
            for job in batch:
                if job[0] == "ckpt":
                    fds.update(fd for fd, _ in job[1].values())
                elif job[0] == "finish":
                    fds.add(job[1])
            failed: dict[int, str] = {fd: why for fd, why in self.poisoned.items() if fd in fds}
            for fd in fds - failed.keys():
                try:
                    storage.sync(fd)
                except OSError as e:
                    # Linux reports a writeback error once per descriptor:
                    # a later sync on it may "succeed" over lost pages, so
                    # nothing on it is ever reported durable again.
                    failed[fd] = self.poisoned[fd] = e.strerror or str(e)
            durable: dict[int, int] = {}
            for job in batch:
                if job[0] == "ckpt":
                    for seg, (fd, pos) in job[1].items():
                        if fd not in failed:
                            durable[seg] = max(pos, durable.get(seg, 0))
            if durable:
                self.events.put(Durable(self.index, durable))
            marks = [job[2] for job in batch if job[0] == "ckpt"]
            if marks:
                self.gate.synced = max(self.gate.synced, max(marks))
            for job in batch:
                if job[0] == "finish":
                    fd, ev = job[1], job[2]
                    if fd in failed and ev.outcome != "error":
                        ev = Finished(ev.worker, ev.segment, ev.position, "error",
                                      StorageError(f"fdatasync failed: {failed[fd]}"))
                    self.events.put(ev)
                elif job[0] == "flush":
                    job[1].set()


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_worker(index: int, orders, events, settings: WorkerSettings, parent_pid: int) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides
    _die_with_parent()
    try:
        _Worker(index, orders, events, settings, parent_pid).loop()
    except BaseException as e:  # report, never die silently
        events.put(WorkerCrashed(index, f"{type(e).__name__}: {e}"))
        raise


class _Worker:
    def __init__(self, index, orders, events, settings: WorkerSettings, parent_pid: int) -> None:
        from .transport import MultiDriver, WriteGate  # loaded by the coordinator before the fork

        self.index = index
        self.orders = orders
        self.events = events
        self.settings = settings
        self.parent_pid = parent_pid
        self.gate = WriteGate(settings.max_unsynced)
        self.driver = MultiDriver(self.gate)
        self.fds: dict[int, int] = {}
        self.syncer = _Syncer(index, events, self.gate)
        self.syncer.start()
        self.checkpointed = 0  # gate.written at the last checkpoint

    def fd_for(self, fetch: Fetch) -> int:
        fd = self.fds.get(fetch.file)
        if fd is None:
            fd = storage.open_for_write(fetch.path)
            self.fds[fetch.file] = fd
        return fd

    def handle(self, order) -> bool:
        if isinstance(order, Fetch):
            try:
                fd = self.fd_for(order)
            except StorageError as e:
                self.events.put(Finished(self.index, order.segment, order.position, "error", e))
                return True
            self.driver.start(order, fd)
        elif isinstance(order, Shrink):
            self.events.put(Shrunk(self.index, order.segment, self.driver.shrink(order.segment, order.at, order.min_tail)))
        elif isinstance(order, Limit):
            self.driver.limit(order.segment, order.max_speed)
        elif isinstance(order, Cancel):
            t = self.driver.cancel(order.segment)
            if t is not None:
                self.syncer.finish(t.fd, Finished(self.index, t.segment, t.position, "cancelled"))
        elif isinstance(order, Release):
            fd = self.fds.pop(order.file, None)
            if fd is not None:
                self.syncer.flush()  # nothing of it left to sync before the number is reused
                self.syncer.poisoned.pop(fd, None)
                os.close(fd)
        elif isinstance(order, Stop):
            for seg in list(self.driver.transfers):
                t = self.driver.cancel(seg)
                self.syncer.finish(t.fd, Finished(self.index, t.segment, t.position, "cancelled"))
            self.syncer.flush()
            return False
        return True

    def loop(self) -> None:
        s = self.settings
        last_ckpt = last_report = time.monotonic()
        while True:
            busy = bool(self.driver.transfers)
            try:
                order = self.orders.get_nowait() if busy else self.orders.get(timeout=0.05)
            except queue.Empty:
                order = None
            while order is not None:
                if not self.handle(order):
                    return
                try:
                    order = self.orders.get_nowait()
                except queue.Empty:
                    order = None
            if os.getppid() != self.parent_pid:
                return  # the coordinator is gone
            if not self.gate.open and self.unsynced:
                self._checkpoint()  # the disk is behind: sync now, transfers wait
                last_ckpt = time.monotonic()
            self.driver.unpause()
            for oc in self.driver.step(0.01) if self.driver.transfers else ():
                t = oc.transfer
                self.syncer.finish(
                    t.fd,
                    Finished(self.index, t.segment, t.position, oc.outcome, oc.error,
                             total=oc.total, final_url=oc.final_url),
                )
            now = time.monotonic()
            if self.unsynced > 0 and (self.unsynced >= s.checkpoint_bytes or now - last_ckpt >= s.checkpoint_seconds):
                self._checkpoint()
                last_ckpt = now
            if now - last_report >= s.report_seconds:
                positions = {seg: t.position for seg, t in self.driver.transfers.items()}
                if positions:
                    self.events.put(Written(self.index, positions))
                last_report = now

    @property
    def unsynced(self) -> int:
        """Bytes written since the last checkpoint was asked for."""
        return self.gate.written - self.checkpointed

    def _checkpoint(self) -> None:
        self.syncer.checkpoint({seg: (t.fd, t.position) for seg, t in self.driver.transfers.items()},
                               self.gate.written)
        self.checkpointed = self.gate.written
