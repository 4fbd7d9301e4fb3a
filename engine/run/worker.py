"""A worker process: one ``CurlMulti`` driving many segment transfers.

The main thread runs libcurl and copies each chunk into a staging buffer;
writer threads write full buffers (``O_DIRECT`` where it can), and a syncer
thread runs ``fdatasync`` in batches (by bytes and by time) and only then
reports positions to the coordinator as durable (see staging.py).  The curl
loop never waits for the disk.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from dataclasses import dataclass

from ..disk import storage
from ..values.errors import SegdlError
from ..values.messages import (
    Cancel,
    Digest,
    Fetch,
    Finalize,
    Finalized,
    Finished,
    Limit,
    Notice,
    Probed,
    Release,
    Shrink,
    Shrunk,
    Stop,
    Track,
    WorkerCrashed,
    Written,
)
from ..disk.staging import DiskSide, FileHandle


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    checkpoint_bytes: int = 8 * 1024 * 1024  # sync at least this often...
    checkpoint_seconds: float = 0.5  # ...and at least this often
    report_seconds: float = 0.2  # how often to report received progress
    # Stop reading sockets while more than this is handed to the writers
    # but not yet synced: the disk sets the pace, and a crash loses at
    # most this much (plus the staging buffers being filled, and what is
    # in flight in socket buffers).
    max_unsynced: int = 32 * 1024 * 1024
    stage_size: int = 1024 * 1024  # one staging buffer
    stages: int = 48  # buffers in the pool: more than the worker's connections
    writers: int = 2  # writer threads (two keep the disk's queue from running dry)
    direct_io: bool = True  # O_DIRECT where the file system takes it
    # Written buffers held ahead of the hash frontier (see hashing.py);
    # beyond it they are let go and read back when the frontier gets there.
    hash_budget: int = 32 * 1024 * 1024


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
        from ..net import MultiDriver, ProbeOrder, WriteGate  # loaded by the coordinator before the fork

        self._probe_order = ProbeOrder

        self.index = index
        self.orders = orders
        self.events = events
        self.settings = settings
        self.parent_pid = parent_pid
        self.gate = WriteGate(settings.max_unsynced)
        self.noticed: set[str] = set()
        self.disk = DiskSide.start(index, events, self.gate, stages=settings.stages,
                                   stage_size=settings.stage_size, writers=settings.writers,
                                   hash_budget=settings.hash_budget, on_fallback=self.notice)
        self.driver = MultiDriver(self.gate, self.disk)
        self.handles: dict[int, FileHandle] = {}
        self.checkpointed = 0  # gate.written at the last checkpoint
        self._finisher = None  # a thread for Finalize orders, made on the first

    def notice(self, text: str) -> None:
        """Tell the coordinator something worth a line in verbose output, once."""
        if text not in self.noticed:
            self.noticed.add(text)
            self.events.put(Notice(self.index, text))

    def handle_for(self, fetch: Fetch) -> FileHandle:
        h = self.handles.get(fetch.file)
        if h is None:
            h = storage.open_for_write(fetch.path, file=fetch.file, direct=self.settings.direct_io,
                                       expect=fetch.ident)
            if self.settings.direct_io and h.direct is None:
                self.notice(f"{os.path.dirname(fetch.path)}: the file system refuses direct I/O; "
                            "writing through the page cache")
            self.handles[fetch.file] = h
        return h

    def finish(self, t, event: Finished) -> None:
        """After the transfer's last buffer is written: sync, then report."""
        self.disk.writer_for(t.segment).finish(t.handle, event)

    def handle(self, order) -> bool:
        if isinstance(order, Fetch):
            try:
                h = self.handle_for(order)
            except SegdlError as e:  # the disk, or a part file that is not segdl's any more
                self.events.put(Finished(self.index, order.segment, order.position, "error", e))
                return True
            done = self.driver.start(order, h)
            if done is not None:  # its bytes came with the order
                t = done.transfer
                self.finish(t, Finished(self.index, t.segment, t.position, "done"))
        elif isinstance(order, self._probe_order):
            self.driver.probe(order)
        elif isinstance(order, Shrink):
            self.events.put(Shrunk(self.index, order.segment, self.driver.shrink(order.segment, order.at, order.min_tail)))
        elif isinstance(order, Limit):
            self.driver.limit(order.segment, order.max_speed)
        elif isinstance(order, Cancel):
            t = self.driver.cancel(order.segment)
            if t is not None:
                self.finish(t, Finished(self.index, t.segment, t.position, "cancelled", link=t.link))
        elif isinstance(order, Track):
            self.disk.hasher.track(order.file, order.path, order.size, order.sha256, order.on_disk)
        elif isinstance(order, Digest):
            self.disk.hasher.digest(order.file, order.size)
        elif isinstance(order, Finalize):
            if self._finisher is None:
                from concurrent.futures import ThreadPoolExecutor

                self._finisher = ThreadPoolExecutor(1, thread_name_prefix="segdl-finish")
            self._finisher.submit(self.finalize, order)
        elif isinstance(order, Release):
            self.disk.hasher.forget(order.file)
            h = self.handles.pop(order.file, None)
            if h is not None:
                self.disk.flush()  # nothing of it left to write or sync before the numbers are reused
                for fd in (h.fd, h.direct):
                    if fd is not None:
                        self.disk.syncer.poisoned.pop(fd, None)
                        storage.close_quietly(fd)
        elif isinstance(order, Stop):
            for seg in list(self.driver.transfers):
                t = self.driver.cancel(seg)
                self.finish(t, Finished(self.index, t.segment, t.position, "cancelled", link=t.link))
            self.disk.flush()
            if self._finisher is not None:
                self._finisher.shutdown(wait=True)  # a batch begun ends, and is reported
            return False
        return True

    def loop(self) -> None:
        s = self.settings
        last_ckpt = last_report = time.monotonic()
        while True:
            busy = self.driver.busy()
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
            if not self.gate.open and (self.unsynced or self.disk.written() > self.gate.synced) \
                    and time.monotonic() - last_ckpt >= 0.005:
                # The disk is behind: sync now, transfers wait.  Again while
                # the writers have written more than the last sync covered
                # (its count was taken before they drained).
                self._checkpoint()
                last_ckpt = time.monotonic()
            self.driver.unpause()
            for oc in self.driver.step(0.01) if self.driver.busy() else ():
                t = oc.transfer
                self.finish(t, Finished(self.index, t.segment, t.position, oc.outcome, oc.error,
                                        total=oc.total, final_url=oc.final_url, link=t.link))
            for key, found in self.driver.take_probed():
                self.events.put(Probed(self.index, key, found))
            now = time.monotonic()
            if now - last_ckpt >= s.checkpoint_seconds:
                # A slow connection's partly filled buffer goes out too, so
                # its progress is durable within about two checkpoints.
                self.driver.seal_stale(last_ckpt)
            if self.unsynced > 0 and (self.unsynced >= s.checkpoint_bytes or now - last_ckpt >= s.checkpoint_seconds):
                self._checkpoint()
                last_ckpt = now
            if now - last_report >= s.report_seconds:
                positions = {seg: t.position for seg, t in self.driver.transfers.items()}
                if positions:
                    self.events.put(Written(self.index, positions))
                last_report = now

    def finalize(self, order: Finalize) -> None:
        """Rename a batch of verified files into place (the finisher
        thread): their kernel work, many small files' most, runs beside the
        coordinator, not in its process.  Each root is opened again by its
        path, and must be the folder the coordinator opened."""
        from ..disk.confine import Root
        from ..values.errors import UnsafePathError

        roots: dict[str, Root] = {}
        moved: dict[str, bool] = {}  # root -> not the folder the coordinator opened
        results: list = [None] * len(order.items)
        todo: list[tuple[int, tuple]] = []
        try:
            for n, ((path, want), *rest) in enumerate(order.items):
                if path not in roots:
                    roots[path] = Root(path)
                    try:
                        moved[path] = want is not None and roots[path].identity() != want
                    except OSError:
                        moved[path] = False  # each file meets the error itself
                if moved[path]:
                    results[n] = UnsafePathError(f"{path} was replaced while segdl downloaded into it; "
                                                 "nothing is renamed there")
                else:
                    todo.append((n, (roots[path], *rest)))
            landing = storage.finalize_many([item for _, item in todo], journal_too=order.journal_too)
            for (n, _), landed in zip(todo, landing):
                results[n] = landed
        except Exception as e:  # a bug: each file left fails, rather than wait forever
            results = [x if x is not None else SegdlError(f"cannot finish the file: {type(e).__name__}: {e}")
                       for x in results]
        finally:
            for r in roots.values():
                r.close()
        self.events.put(Finalized(self.index, order.batch, tuple(results)))

    @property
    def unsynced(self) -> int:
        """Bytes handed to the writers since the last checkpoint was asked for."""
        return self.gate.written - self.checkpointed

    def _checkpoint(self) -> None:
        self.disk.syncer.checkpoint()
        self.checkpointed = self.gate.written
