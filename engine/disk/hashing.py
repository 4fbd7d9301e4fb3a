"""Hashing a file in file order while it downloads, so it is never read
back whole after the download.

blake3 (and sha256) are sequential: bytes must be fed in file order.  The
writers hand every written staging buffer to a :class:`Hasher` thread.  A
buffer at the file's hash *frontier* is hashed from memory at once; one
ahead of it waits in memory, up to a budget; beyond the budget the buffer
farthest ahead is let go (it is written) and its bytes are read back from
the file when the frontier gets there.  The coordinator hands a file's
segments out in file order, so most bytes are hashed from memory.

The digest is asked for once every segment is durable (:class:`Digest`);
the answer is :class:`Hashed`, with no digest when the frontier cannot
reach the end (a gap no one wrote): the coordinator then hashes the file
from disk as before.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
from dataclasses import dataclass, field

import blake3

from ..values.messages import Hashed

READ_BACK = 8 * 1024 * 1024  # bytes read from disk per step when catching up
PREFETCH_STEP = 1024 * 1024  # bytes read ahead per step (only to fill the page cache)


class Extents:
    """A set of byte ranges, kept merged: what of a file is written."""

    __slots__ = ("runs",)

    def __init__(self, runs=()) -> None:
        self.runs: list[list[int]] = []
        for a, b in runs:
            self.add(a, b)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        out: list[list[int]] = []
        placed = False
        for a, b in self.runs:
            if b < start:
                out.append([a, b])
            elif end < a:
                if not placed:
                    out.append([start, end])
                    placed = True
                out.append([a, b])
            else:
                start, end = min(a, start), max(b, end)
        if not placed:
            out.append([start, end])
        out.sort()
        self.runs = out

    def reach(self, offset: int) -> int:
        """The end of the written run that contains ``offset`` (``offset``
        itself when it is not written)."""
        for a, b in self.runs:
            if a <= offset < b:
                return b
        return offset


@dataclass(slots=True)
class _File:
    path: str
    size: int | None
    hasher: object
    sha: object | None
    written: Extents
    frontier: int = 0
    pending: dict = field(default_factory=dict)  # start -> Stage, written, ahead of the frontier
    read_back: int = 0  # bytes hashed from disk rather than memory
    broken: str | None = None  # why its digest cannot be made here (the file is hashed from disk)
    gone: bool = False  # no longer tracked (ended, restarted, forgotten)


class Hasher(threading.Thread):
    """One worker's in-order hashing of the files it writes."""

    def __init__(self, index: int, events, pool, budget: int) -> None:
        super().__init__(name=f"segdl-hash-{index}", daemon=True)
        self.index = index
        self.events = events
        self.pool = pool
        self.budget = budget  # buffers (their whole size) held ahead of the frontiers, all files together
        self.held = 0
        self.jobs: queue.Queue = queue.Queue()
        self.files: dict[int, _File] = {}
        self.prefetcher: Prefetcher | None | bool = None  # started when a buffer is first let go; False: none

    # ---------------------------------------------------------- from others

    def track(self, file: int, path: str, size: int | None, sha256: bool, on_disk) -> None:
        self.jobs.put(("track", file, path, size, sha256, tuple(on_disk)))

    def written(self, file: int, stage) -> None:
        """From a writer: ``stage`` is written; the hasher owns it now."""
        self.jobs.put(("stage", file, stage))

    def on_disk(self, file: int, start: int, end: int) -> None:
        """``[start, end)`` is in the file, with no buffer: read it back."""
        self.jobs.put(("extent", file, start, end))

    def digest(self, file: int, size: int | None) -> None:
        self.jobs.put(("digest", file, size))

    def forget(self, file: int) -> None:
        self.jobs.put(("forget", file))

    # ---------------------------------------------------------- the thread

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            kind, file = job[0], job[1]
            f = self.files.get(file)
            try:
                self._handle(job, kind, file, f)
            except OSError as e:  # reading back failed: this file is hashed from disk later
                self._break(f, f"cannot read it back: {e.strerror or e}")
            except Exception as e:  # a bug: this file is hashed from disk, the thread goes on
                why = f"hashing failed: {type(e).__name__}: {e}"
                self._break(f, why)
                if kind == "digest":  # the coordinator waits for an answer: it must come
                    self._drop(file)
                    self.events.put(Hashed(self.index, file, None, None, 0, why))

    def _handle(self, job, kind: str, file: int, f: _File | None) -> None:
        if kind == "stage":
            stage = job[2]
            if f is None or f.broken:
                self.pool.give(stage)
                return
            f.written.add(stage.start, stage.end)
            if stage.start < f.frontier or stage.start in f.pending:
                # Bytes written again (a retry, or a plain stream starting
                # over): what was hashed may not be what the file holds now.
                self.pool.give(stage)
                self._break(f, f"bytes from {stage.start} were written again")
                return
            f.pending[stage.start] = stage
            self.held += len(stage.mem)  # whole buffers: a half-full one keeps a whole one from the pool
            self._advance(f)
            self._keep_in_budget()
        elif kind == "extent":
            if f is not None and not f.broken:
                f.written.add(job[2], job[3])
                self._advance(f)
        elif kind == "track":
            _, _, path, size, sha256, on_disk = job
            self._drop(file)
            self.files[file] = _File(path, size, blake3.blake3(), hashlib.sha256() if sha256 else None,
                                     Extents(on_disk))
        elif kind == "digest":
            self.events.put(self._digest(file, f, job[2]))
        elif kind == "forget":
            self._drop(file)

    def _break(self, f: _File | None, why: str) -> None:
        if f is None or f.broken:
            return
        f.broken = why
        for start in list(f.pending):
            self._release(f, start)

    def _digest(self, file: int, f: _File | None, size: int | None) -> Hashed:
        if f is None:
            return Hashed(self.index, file, None, None, 0, "not tracked by this worker")
        if f.broken:
            self._drop(file)
            return Hashed(self.index, file, None, None, f.read_back, f.broken)
        if size is not None:
            f.size = size
        try:
            self._advance(f)
        except OSError as e:
            self._drop(file)
            return Hashed(self.index, file, None, None, 0, f"cannot read it back: {e.strerror or e}")
        self._drop(file)
        if f.size is None or f.frontier != f.size:
            return Hashed(self.index, file, None, None, f.read_back,
                          f"bytes from {f.frontier} on were not seen by this worker")
        return Hashed(self.index, file, f.hasher.hexdigest(), f.sha.hexdigest() if f.sha else None,
                      f.read_back)

    def _advance(self, f: _File) -> None:
        """Move the frontier through buffers in memory, and through written
        bytes that no buffer holds any more (read back from the file)."""
        while f.size is None or f.frontier < f.size:
            stage = self._at(f, f.frontier)
            if stage is not None:
                view = stage.data(f.frontier, stage.end)
                self._feed(f, view)
                f.frontier = stage.end
                for start in [k for k, st in f.pending.items() if st.end <= f.frontier]:
                    self._release(f, start)  # this one, and stale copies of bytes now hashed
                continue
            reach = f.written.reach(f.frontier)
            if reach == f.frontier:
                return  # not written yet
            self._read_back(f, reach)

    @staticmethod
    def _at(f: _File, offset: int):
        st = f.pending.get(offset)
        if st is not None:
            return st
        for st in f.pending.values():
            if st.start <= offset < st.end:
                return st
        return None

    def _read_back(self, f: _File, reach: int) -> None:
        """Hash ``[frontier, reach)`` (or its next step) from the file."""
        end = min(reach, f.frontier + READ_BACK)
        nearest = min((s for s in f.pending if s > f.frontier), default=None)
        if nearest is not None:
            end = min(end, nearest)
        fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, end - f.frontier, f.frontier)
        finally:
            os.close(fd)
        if len(data) != end - f.frontier:
            raise OSError(0, f"short read at {f.frontier}")
        self._feed(f, data)
        f.read_back += len(data)
        f.frontier = end

    @staticmethod
    def _feed(f: _File, data) -> None:
        f.hasher.update(data)
        if f.sha is not None:
            f.sha.update(data)

    def _keep_in_budget(self) -> None:
        """Over budget: let go of the buffer farthest ahead of its frontier
        (it is written: the frontier reads it back when it gets there)."""
        while self.held > self.budget:
            far = None
            for f in self.files.values():
                for start, st in f.pending.items():
                    if far is None or start - f.frontier > far[0]:
                        far = (start - f.frontier, f, start)
            if far is None:
                return
            _, f, start = far
            end = f.pending[start].end
            self._release(f, start)
            self._prefetch(f, start, end)

    def _prefetch(self, f: _File, start: int, end: int) -> None:
        if self.prefetcher is None:
            try:
                p = Prefetcher(self.index)
                p.start()
            except Exception:  # no thread to be had (a limit): the frontier reads from the disk, as before
                self.prefetcher = False
                return
            self.prefetcher = p
        if self.prefetcher:
            self.prefetcher.add(f, start, end)

    def _release(self, f: _File, start: int) -> None:
        st = f.pending.pop(start)
        self.held -= len(st.mem)
        self.pool.give(st)

    def _drop(self, file: int) -> None:
        f = self.files.pop(file, None)
        if f is not None:
            f.gone = True  # (its prefetches are not read any more)
            for start in list(f.pending):
                self._release(f, start)


class Prefetcher(threading.Thread):
    """Reads ahead the written bytes that the hasher let go of, so that
    its frontier finds them in memory when it gets there.

    The writers write with O_DIRECT: those bytes are not in the page
    cache, and the frontier's read-back came from the disk.  Most of it
    happened only once the last segment had arrived, after the download
    (1 GiB from 16 connections: about 200 MiB, 0.3 s).  Reading them
    meanwhile, off the hasher's thread, costs a memory copy and the same
    disk reads, earlier.  (``POSIX_FADV_WILLNEED`` does not do it: the
    kernel reads at most one readahead window per call.)  A failure only
    means the frontier reads from the disk, as before; a range the
    frontier has passed, or of a file no longer tracked, is skipped."""

    def __init__(self, index: int) -> None:
        super().__init__(name=f"segdl-prefetch-{index}", daemon=True)
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()

    def add(self, f: _File, start: int, end: int) -> None:
        self.jobs.put((f, start, end))

    def run(self) -> None:
        buf = memoryview(bytearray(PREFETCH_STEP))
        while True:
            f, start, end = self.jobs.get()
            try:
                self._read(buf, f, start, end)
            except Exception:  # advice only (a file gone, a platform without preadv)
                pass

    @staticmethod
    def _read(buf: memoryview, f: _File, start: int, end: int) -> None:
        # (The hasher's thread moves the frontier; a stale look only costs a read.)
        if f.gone or f.broken or f.frontier >= end:
            return
        fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return  # (something else at its name now: never wait on it)
            while start < end and not f.gone and f.frontier < end:
                n = os.preadv(fd, [buf[:min(PREFETCH_STEP, end - start)]], start)
                if n <= 0:
                    break
                start += n
        finally:
            os.close(fd)
