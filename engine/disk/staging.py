"""The disk side of a worker: staging buffers, writer threads, the syncer.

Data leaves libcurl's callback into a page-aligned staging buffer (one
memcpy, no system call).  A full buffer, or the last one of a transfer, is
*sealed* and handed to a writer thread, which ``pwrite``s it with
``O_DIRECT`` where the file system allows it (the blocks wholly inside the
buffer; a partial block at either end goes through the page cache), so the
disk is fed large aligned writes without the page cache's copy and
writeback.  The syncer runs ``fdatasync`` in batches and only then tells
the coordinator which positions are durable.

Order is what makes it safe: a segment's buffers always go to the same
writer, which writes them in order, so a segment's written position only
grows; the syncer reads the written positions *before* it syncs, so every
position it reports was written before the sync it follows.
"""

from __future__ import annotations

import mmap
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import storage
from ..values.errors import StorageError
from ..values.messages import Durable, Finished

if TYPE_CHECKING:
    from .hashing import Hasher

ALIGN = 4096  # O_DIRECT's unit here: file offset, length and memory address


@dataclass(slots=True)
class FileHandle:
    """A part file open for writing: ``direct`` (O_DIRECT) when the file
    system takes it, else None; ``fd`` always (partial blocks, fallback,
    fdatasync)."""

    fd: int
    direct: int | None
    path: str
    file: int = 0  # the file's id (journal), for the hasher
    named: bool = False  # its folder was fsynced since it was created


class Stage:
    """A page-aligned buffer that holds file bytes ``[start, start + fill)``.

    The bytes sit at ``lead = start % ALIGN`` in memory, so memory and file
    alignment agree and any whole block in it can go out with O_DIRECT."""

    __slots__ = ("mem", "view", "start", "lead", "fill", "capacity")

    def __init__(self, size: int) -> None:
        self.mem = mmap.mmap(-1, size)
        self.view = memoryview(self.mem)
        self.start = self.lead = self.fill = self.capacity = 0

    def reset(self, start: int) -> None:
        self.start = start
        self.lead = start % ALIGN
        self.fill = 0
        self.capacity = len(self.mem) - self.lead  # ends on a block boundary

    @property
    def end(self) -> int:
        return self.start + self.fill

    @property
    def room(self) -> int:
        return self.capacity - self.fill

    def put(self, data) -> None:
        n = len(data)
        at = self.lead + self.fill
        self.mem[at:at + n] = data
        self.fill += n

    def data(self, start: int, end: int) -> memoryview:
        """The staged bytes of file range ``[start, end)``."""
        base = self.start - self.lead
        return self.view[start - base:end - base]


class StagePool:
    """A fixed set of staging buffers.  Taken by the curl thread, given back
    by writer threads once written (list append/pop are atomic)."""

    def __init__(self, count: int, size: int) -> None:
        self.size = size
        self.count = count
        self.free: list[Stage] = []
        self.made = 0

    def available(self) -> int:
        return len(self.free) + (self.count - self.made)

    def take(self, start: int) -> Stage | None:
        try:
            s = self.free.pop()
        except IndexError:
            if self.made >= self.count:
                return None
            self.made += 1  # made on demand: a worker that stays idle touches no memory
            s = Stage(self.size)
        s.reset(start)
        return s

    def give(self, stage: Stage) -> None:
        self.free.append(stage)


def write_stage(handle: FileHandle, stage: Stage, on_fallback) -> None:
    """Write a sealed buffer to its place in the file: whole blocks with
    O_DIRECT when open, partial blocks at the edges through the page cache."""
    start, end = stage.start, stage.end
    if handle.direct is not None:
        a = -(-start // ALIGN) * ALIGN
        b = end // ALIGN * ALIGN
        if a < b:
            try:
                storage.pwrite_all(handle.direct, stage.data(a, b), a)
            except OSError as e:
                if not storage.direct_refused(e):
                    raise
                storage.close_quietly(handle.direct)
                handle.direct = None
                on_fallback(f"{handle.path}: direct I/O refused ({e.strerror}); writing through the page cache")
            else:
                if start < a:
                    storage.pwrite_all(handle.fd, stage.data(start, a), start)
                if b < end:
                    storage.pwrite_all(handle.fd, stage.data(b, end), b)
                return
    storage.pwrite_all(handle.fd, stage.data(start, end), start)


class _JobThread(threading.Thread):
    """A thread that works through a queue of jobs in order."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: queue.Queue = queue.Queue()

    def flush(self) -> None:
        """Return once every job queued before this one is done."""
        done = threading.Event()
        self.jobs.put(("flush", done))
        done.wait(60)


class Syncer(_JobThread):
    """Makes written positions durable, then tells the coordinator, in order."""

    def __init__(self, index: int, events, gate, writers: list["Writer"]) -> None:
        super().__init__(f"segdl-sync-{index}")
        self.index = index
        self.events = events
        self.poisoned: dict[int, str] = {}  # fds whose write or sync failed: never durable again
        self.gate = gate  # a net.WriteGate: its ``synced`` advances after each sync
        self.writers = writers

    def checkpoint(self) -> None:
        self.jobs.put(("ckpt",))

    def _name_durable(self, handles) -> None:
        """A part file's name is made durable (its folder fsynced) before
        any of its bytes is reported durable: a claim must not outlive the
        file it is about.  Once per file, one fsync per folder per batch."""
        folders: dict[str, list] = {}
        for h in handles:
            if not h.named:
                folders.setdefault(os.path.dirname(h.path), []).append(h)
        for d, hs in folders.items():
            try:
                storage.fsync_dir(Path(d))
            except OSError as e:  # their names may not survive: none of their bytes is ever claimed
                for h in hs:
                    self.poisoned[h.fd] = f"cannot sync the folder {d}: {e.strerror or e}"
                continue
            for h in hs:
                h.named = True

    def finish(self, handle: FileHandle, event: Finished) -> None:
        self.jobs.put(("finish", handle, event))

    def run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while True:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            # What is written now is what this sync makes durable.
            mark = sum(w.bytes for w in self.writers)  # (DiskSide.written)
            written: dict[int, tuple[FileHandle, int]] = {}
            for w in self.writers:
                written.update(w.take_written())
            handles = {id(h): h for h, _ in written.values()}
            handles.update((id(job[1]), job[1]) for job in batch if job[0] == "finish")
            self._name_durable(handles.values())
            failed = storage.sync_many([h.fd for h in handles.values() if h.fd not in self.poisoned])
            for fd, e in failed.items():
                # Linux reports a writeback error once per descriptor:
                # a later sync on it may "succeed" over lost pages, so
                # nothing on it is ever reported durable again.
                self.poisoned[fd] = e.strerror or str(e)
            durable = {seg: pos for seg, (h, pos) in written.items() if h.fd not in self.poisoned}
            if durable:
                self.events.put(Durable(self.index, durable))
            self.gate.synced = max(self.gate.synced, mark)
            for job in batch:
                if job[0] == "finish":
                    h, ev = job[1], job[2]
                    if h.fd in self.poisoned and ev.outcome != "error":
                        why = self.poisoned[h.fd]
                        ev = Finished(ev.worker, ev.segment, ev.position, "error",
                                      StorageError(why if why.startswith("cannot") else f"fdatasync failed: {why}"))
                    self.events.put(ev)
                elif job[0] == "flush":
                    job[1].set()


class Writer(_JobThread):
    """Writes sealed buffers in the order they come; records, per segment,
    how far its bytes are written (not yet synced)."""

    def __init__(self, name: str, pool: StagePool, hasher, on_fallback) -> None:
        super().__init__(name)
        self.pool = pool
        self.hasher = hasher
        self.on_fallback = on_fallback
        self.bytes = 0  # written so far (only this thread adds to it)
        self.syncer: Syncer | None = None
        self._written: dict[int, tuple[FileHandle, int]] = {}
        self._lock = threading.Lock()

    def write(self, handle: FileHandle, stage: Stage, segment: int, transfer) -> None:
        self.jobs.put(("write", handle, stage, segment, transfer))

    def note(self, handle: FileHandle, segment: int, start: int, end: int) -> None:
        """``[start, end)`` of ``segment`` is in the file already (written by
        the coordinator): in order with the buffers, count it as written."""
        self.jobs.put(("note", handle, segment, start, end))

    def finish(self, handle: FileHandle, event: Finished) -> None:
        """After this writer's earlier buffers: hand ``event`` to the syncer."""
        self.jobs.put(("finish", handle, event))

    def take_written(self) -> dict[int, tuple[FileHandle, int]]:
        with self._lock:
            out, self._written = self._written, {}
        return out

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job[0] == "write":
                _, handle, stage, segment, transfer = job
                n = stage.fill
                ok = False
                try:
                    if handle.fd not in self.syncer.poisoned:
                        write_stage(handle, stage, self.on_fallback)
                        with self._lock:
                            self._written[segment] = (handle, stage.end)
                        ok = True
                except OSError as e:
                    err = storage.write_error(handle.path, e)
                    self.syncer.poisoned[handle.fd] = err.message
                    transfer.error = err  # the curl thread stops the transfer at its next chunk
                finally:
                    # Counted even when it failed: the gate must drain (what
                    # is durable is said only by the positions above).
                    self.bytes += n
                    if ok:
                        self.hasher.written(handle.file, stage)  # it gives the buffer back
                    else:
                        self.pool.give(stage)
            elif job[0] == "note":
                _, handle, segment, start, end = job
                with self._lock:
                    self._written[segment] = (handle, end)
                self.bytes += end - start
                self.hasher.on_disk(handle.file, start, end)
            elif job[0] == "finish":
                self.syncer.finish(job[1], job[2])
            else:
                job[1].set()


@dataclass(slots=True)
class DiskSide:
    """The staging pool, the writers, the hasher and the syncer of one worker."""

    pool: StagePool
    writers: list[Writer]
    syncer: Syncer
    hasher: "Hasher"

    @classmethod
    def start(cls, index: int, events, gate, *, stages: int, stage_size: int, writers: int,
              hash_budget: int, on_fallback) -> "DiskSide":
        from .hashing import Hasher

        pool = StagePool(stages, stage_size)
        hasher = Hasher(index, events, pool, hash_budget)
        ws = [Writer(f"segdl-write-{index}.{i}", pool, hasher, on_fallback) for i in range(max(1, writers))]
        syncer = Syncer(index, events, gate, ws)
        for w in ws:
            w.syncer = syncer
            w.start()
        syncer.start()
        hasher.start()
        return cls(pool, ws, syncer, hasher)

    def written(self) -> int:
        """Bytes the writers have written (or counted) so far."""
        return sum(w.bytes for w in self.writers)

    def writer_for(self, segment: int) -> Writer:
        return self.writers[segment % len(self.writers)]

    def flush(self) -> None:
        """Everything handed over so far is written, synced and reported."""
        for w in self.writers:
            w.flush()
        self.syncer.flush()
