"""The write path: staging buffers, O_DIRECT with its fallback, in-order
hashing.  Units run without a server; the end-to-end cases download from
a real nginx."""

from __future__ import annotations

import os
import queue
import random
import shutil
import subprocess
import time
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings, strategies as st

from helpers import json_lines, run_segdl
from servers import MiB, blake3_file, write_deterministic_file
from segdl.engine.disk import storage
from segdl.engine.disk.hashing import Extents, Hasher
from segdl.engine.values.messages import Hashed
from segdl.engine.rules.ranges import ALIGNMENT, ALIGN_FROM, MAX_UNITS, covers_exactly, plan_units
from segdl.engine.disk.staging import ALIGN, FileHandle, StagePool, write_stage

# Sizes that do not line up with a disk block, a staging buffer or a unit.
ODD_SIZES = [0, 1, 4095, 4096, 4097, MiB + 1, 4 * MiB - 1, 9 * MiB + 4097]


# ------------------------------------------------------------------ units

@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 10**13), unit=st.integers(1, 64 * MiB))
def test_units_tile_the_file_in_order(size, unit):
    segs = plan_units(size, unit)
    assert covers_exactly(segs, size)
    assert [s.start for s in segs] == sorted(s.start for s in segs)
    assert all(len(s) > 0 for s in segs)
    assert len(segs) <= MAX_UNITS + 1
    if segs and max(unit, size // MAX_UNITS) >= ALIGN_FROM:
        assert all(s.start % ALIGNMENT == 0 for s in segs)  # O_DIRECT-friendly boundaries


def test_extents_merge_and_reach():
    e = Extents([(10, 20), (30, 40)])
    assert e.reach(10) == 20 and e.reach(20) == 20 and e.reach(35) == 40
    e.add(20, 30)
    assert e.runs == [[10, 40]] and e.reach(10) == 40
    e.add(0, 5)
    e.add(50, 60)
    e.add(4, 11)
    assert e.runs == [[0, 40], [50, 60]]


def _handle(path: Path, direct: bool) -> FileHandle:
    h = storage.open_for_write(str(path), direct=direct)
    return h


@pytest.mark.parametrize("start,length", [(0, 3 * ALIGN), (1, 3 * ALIGN), (ALIGN - 1, 2), (5000, 70000),
                                          (2 * ALIGN, ALIGN + 1), (123, 1)])
def test_write_stage_puts_every_byte_at_its_offset(tmp_path, start, length):
    """Whole blocks go out with O_DIRECT, the edges through the page cache;
    either way each byte lands at its offset."""
    path = tmp_path / "f"
    path.write_bytes(b"\0" * (start + length + 100))
    data = random.Random(start).randbytes(length)
    pool = StagePool(1, 256 * 1024)
    stage = pool.take(start)
    stage.put(data)
    h = _handle(path, direct=True)
    fallbacks = []
    try:
        write_stage(h, stage, fallbacks.append)
    finally:
        for fd in (h.fd, h.direct):
            storage.close_quietly(fd)
    got = path.read_bytes()
    assert got[start:start + length] == data
    assert got[:start] == b"\0" * start and got[start + length:] == b"\0" * 100
    assert not fallbacks  # this file system does O_DIRECT (checked by the open)


class _Events:
    def __init__(self):
        self.q = queue.Queue()

    def put(self, ev):
        self.q.put(ev)


def _cached(path: Path, start: int, end: int) -> bool:
    """Are the bytes in the page cache?  (mincore(2) on a mapping of the
    file: it looks without reading, unlike a read, which would start a
    readahead.)"""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as m:
        view = ctypes.c_char.from_buffer(m)
        first, last = start // page, -(-end // page)
        vec = ctypes.create_string_buffer(last - first)
        try:
            at = ctypes.addressof(view) + first * page
            assert libc.mincore(at, (last - first) * page, vec) == 0, ctypes.get_errno()
            return all(b & 1 for b in vec.raw)
        finally:
            del view  # (the mapping cannot close while it is exported)


def _uncached_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and drop it from the page cache, as the
    writers' O_DIRECT leaves their bytes; skip where the page cache cannot
    be watched that way (a file system that keeps every byte in memory, or
    one whose reads do not go through it)."""
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, len(data), os.POSIX_FADV_DONTNEED)
    os.close(fd)
    if _cached(path, 0, len(data)):
        pytest.skip("this file system keeps the bytes in memory anyway")
    probe = path.with_name(path.name + ".probe")
    probe.write_bytes(data[:MiB])
    with open(probe, "rb") as fh:
        fh.read()
    if not _cached(probe, 0, min(MiB, len(data))):
        pytest.skip("reads here do not go through the page cache")


def test_the_bytes_a_hasher_lets_go_of_are_read_ahead_into_memory(tmp_path):
    """A buffer over the budget is let go (it is written, not hashed yet:
    a gap lies before it).  Its bytes are read into the page cache in the
    background, so the frontier does not read them from the disk when the
    gap is filled, after the download."""
    size = 4 * MiB
    data = random.Random(5).randbytes(size)
    path = tmp_path / "f"
    _uncached_file(path, data)
    pool = StagePool(16, 256 * 1024)
    events = _Events()
    h = Hasher(0, events, pool, budget=0)  # nothing is kept ahead of the frontier
    h.start()
    h.track(1, str(path), size, False, on_disk=[])
    for start in range(MiB, size, 256 * 1024):  # [0, 1 MiB) is the gap
        s = pool.take(start)
        s.put(data[start:start + 256 * 1024])
        h.written(1, s)
    deadline = time.monotonic() + 10
    while not _cached(path, MiB, size) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _cached(path, MiB, size)
    assert not _cached(path, 0, MiB)  # only what was let go
    h.on_disk(1, 0, MiB)  # the gap is filled
    h.digest(1, size)
    ev = events.q.get(timeout=30)
    assert ev.why is None and ev.blake3 == blake3.blake3(data).hexdigest()


def test_a_read_ahead_is_skipped_once_it_is_of_no_use(tmp_path):
    """A range the frontier has passed, a file no longer tracked, and
    something not a file at its name (a FIFO: opening it would wait) are
    not read."""
    from segdl.engine.disk.hashing import Extents, Prefetcher, _File

    path = tmp_path / "f"
    _uncached_file(path, random.Random(9).randbytes(2 * MiB))
    buf = memoryview(bytearray(MiB))
    passed = _File(str(path), 2 * MiB, None, None, Extents(), frontier=MiB)
    Prefetcher._read(buf, passed, 0, MiB)
    gone = _File(str(path), 2 * MiB, None, None, Extents(), gone=True)
    Prefetcher._read(buf, gone, MiB, 2 * MiB)
    assert not _cached(path, 0, 2 * MiB)
    live = _File(str(path), 2 * MiB, None, None, Extents())
    Prefetcher._read(buf, live, MiB, 2 * MiB)
    assert _cached(path, MiB, 2 * MiB)  # (the same call reads when it is of use)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    Prefetcher._read(buf, _File(str(fifo), MiB, None, None, Extents()), 0, MiB)  # returns at once


@pytest.mark.parametrize("budget", [64 * MiB, 2 * 256 * 1024, 0])
def test_hasher_gets_the_file_digest_from_any_order_of_buffers(tmp_path, budget):
    """Buffers arrive out of order; what does not fit the budget is read
    back from the file.  The digest is the file's."""
    size = 5 * MiB + 4097
    data = random.Random(7).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)  # the writers' work, done up front
    stage_size = 256 * 1024
    pool = StagePool(64, stage_size)
    events = _Events()
    h = Hasher(0, events, pool, budget)
    h.start()
    h.track(1, str(path), size, True, on_disk=[(0, 100_000)])  # an earlier run wrote these
    pieces = []
    pos = 100_000
    while pos < size:
        n = min(stage_size - pos % ALIGN, size - pos, random.Random(pos).randint(1, stage_size))
        pieces.append((pos, n))
        pos += n
    order = pieces[:]
    random.Random(3).shuffle(order)
    for start, n in order:
        while True:
            s = pool.take(start)
            if s is not None:
                break
        s.put(data[start:start + n])
        h.written(1, s)
    h.digest(1, size)
    ev = events.q.get(timeout=30)
    assert isinstance(ev, Hashed) and ev.why is None, ev
    assert ev.blake3 == blake3.blake3(data).hexdigest()
    import hashlib

    assert ev.sha256 == hashlib.sha256(data).hexdigest()
    assert ev.read_back >= 100_000  # the earlier run's bytes at least
    if budget == 0:
        assert ev.read_back > size // 2  # nearly everything came back from disk


def test_hasher_says_so_when_it_did_not_see_every_byte(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10_000)
    pool = StagePool(4, 64 * 1024)
    events = _Events()
    h = Hasher(0, events, pool, MiB)
    h.start()
    h.track(2, str(path), 10_000, False, on_disk=())
    s = pool.take(5000)
    s.put(b"x" * 5000)
    h.written(2, s)  # [0, 5000) was never written by anyone
    h.digest(2, 10_000)
    ev = events.q.get(timeout=10)
    assert ev.blake3 is None and "not seen" in ev.why


# ------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def odd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd-root")
    for i, size in enumerate(ODD_SIZES):
        write_deterministic_file(root / f"s{size}.bin", size, 500 + i)
    return root


def _direct_io_works(folder: Path) -> bool:
    p = folder / ".direct-probe"
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    os.close(fd)
    p.unlink()
    return True


def test_odd_sizes_on_the_direct_io_path(make_nginx, odd_root, tmp_path):
    """Every odd size arrives exact through O_DIRECT (the part files are
    really opened with it: strace shows the flag) and is verified."""
    out = tmp_path / "out"
    out.mkdir()
    if not _direct_io_works(out):
        pytest.skip(f"{out} does not do O_DIRECT")
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    srv = make_nginx(root=odd_root)
    urls = [srv.url(f"s{size}.bin") for size in ODD_SIZES]
    trace = tmp_path / "trace"
    p = subprocess.run([strace, "-f", "-qq", "-e", "trace=openat", "-o", str(trace),
                        *__import__("helpers").SEGDL, "get", *urls, "-d", str(out), "--json", "-x", "4"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, SEGDL_JOURNAL=str(tmp_path / "j.sqlite")))
    assert p.returncode == 0, p.stderr
    lines = {Path(l["path"]).name: l for l in json_lines(p)}
    for size in ODD_SIZES:
        name = f"s{size}.bin"
        assert lines[name]["status"] == "done"
        assert (out / name).stat().st_size == size
        assert lines[name]["blake3"] == blake3_file(odd_root / name) == blake3_file(out / name)
    opened = trace.read_text()
    assert "segdl-part" in opened and "O_DIRECT" in opened, opened[-2000:]
    assert "refuses direct I/O" not in p.stderr


def test_fallback_to_the_page_cache_where_direct_io_is_refused(make_nginx, odd_root, tmp_path, mount_ram):
    """ramfs refuses O_DIRECT (tmpfs takes it since Linux 6.6): segdl says
    so once and writes through the page cache; the files are exact."""
    disk = mount_ram("ramfs")
    assert not _direct_io_works(disk)
    srv = make_nginx(root=odd_root)
    names = [f"s{size}.bin" for size in ODD_SIZES if size]
    p = run_segdl(["get", *[srv.url(n) for n in names], "-d", disk / "out", "-x", "4"], tmp_path / "j.sqlite")
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("refuses direct I/O") == 1, p.stderr
    for n in names:
        assert blake3_file(disk / "out" / n) == blake3_file(odd_root / n)


def test_units_grow_with_the_servers_latency_per_request():
    from segdl.engine.rules.ranges import unit_for_latency

    base = 4 * MiB
    assert unit_for_latency(0.0, base) == unit_for_latency(0.0003, base) == unit_for_latency(0.010, base) == base
    assert unit_for_latency(0.020, base) == 3 * base
    assert unit_for_latency(0.050, base) == 6 * base  # nginx with a 50 ms echo_sleep
    assert unit_for_latency(2.0, base) == 8 * base  # at most 8x
    sizes = [unit_for_latency(x / 1000, base) for x in range(0, 200)]
    assert sizes == sorted(sizes)


def _hasher(tmp_path, data: bytes, *, count=16, size=64 * 1024, budget=MiB):
    path = tmp_path / "f"
    path.write_bytes(data)
    pool = StagePool(count, size)
    events = _Events()
    h = Hasher(0, events, pool, budget)
    h.start()
    h.track(3, str(path), len(data), False, on_disk=())
    return h, pool, events


def _feed(h, pool, data: bytes, start: int, n: int) -> None:
    s = pool.take(start)
    assert s is not None, "the pool ran dry"
    s.put(data[start:start + n])
    h.written(3, s)


def test_bytes_written_again_make_the_worker_give_up_its_digest(tmp_path):
    """A retry or a plain stream starting over writes bytes below what was
    hashed: the hash may not match the file any more, so the worker says
    so (the coordinator then hashes the file from disk)."""
    data = random.Random(5).randbytes(300_000)
    h, pool, events = _hasher(tmp_path, data)
    _feed(h, pool, data, 0, 60_000)
    _feed(h, pool, data, 60_000, 60_000)
    _feed(h, pool, data, 0, 60_000)  # starts over at 0
    h.digest(3, len(data))
    ev = events.q.get(timeout=10)
    assert ev.blake3 is None and "written again" in ev.why
    assert pool.available() == pool.count  # every buffer came back


def test_half_full_buffers_ahead_of_the_frontier_never_drain_the_pool(tmp_path):
    """Slow connections seal half-full buffers every checkpoint; those held
    ahead of the frontier count whole, so the pool keeps buffers for the
    connection at the frontier (it hung before)."""
    size = 64 * 1024
    data = random.Random(6).randbytes(40 * size)
    h, pool, events = _hasher(tmp_path, data, count=12, size=size, budget=4 * size)
    for i in range(1, 11):  # ten half-full buffers, none at the frontier
        _feed(h, pool, data, i * 3 * size, size // 2)
    h.digest(3, len(data))  # processed in order after the buffers
    events.q.get(timeout=10)
    assert pool.available() >= pool.count - 4


def test_many_slow_connections_finish(make_nginx, tmp_path):
    """16 connections at 300 KB/s each: every checkpoint seals their
    half-full buffers, most of them ahead of the hash frontier.  The pool
    must not end up held by the hasher (this download hung)."""
    root = tmp_path / "root"
    root.mkdir()
    write_deterministic_file(root / "slow.bin", 64 * MiB, 77)
    srv = make_nginx(root=root, limit_rate="300k")
    p = run_segdl(["get", srv.url("slow.bin"), "-d", tmp_path / "out", "--json", "-x", "16"],
                  tmp_path / "j.sqlite", timeout=90)
    assert p.returncode == 0, p.stderr
    assert json_lines(p)[0]["blake3"] == blake3_file(root / "slow.bin") == blake3_file(tmp_path / "out" / "slow.bin")


def test_a_process_forked_after_a_side_by_side_sync_syncs_side_by_side_too(tmp_path):
    """A fork copies only the forking thread: a worker forked after the
    coordinator used its fsync pool (a service's second job) once waited
    forever on the parent's pool, whose threads it does not have."""
    import multiprocess

    fds = [os.open(tmp_path / f"f{i}", os.O_CREAT | os.O_RDWR) for i in range(3)]
    try:
        assert storage.sync_many(fds) == {}  # the pool, with its threads, in this process

        def child(out):
            out.put(storage.sync_many(fds))

        results = multiprocess.get_context("fork").Queue()
        p = multiprocess.get_context("fork").Process(target=child, args=(results,))
        p.start()
        try:
            assert results.get(timeout=20) == {}
        finally:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    finally:
        for fd in fds:
            os.close(fd)


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 2047, 2048, 4094, 4095, 4096, 16 * 1024, 16 * 1024 + 1,
                                  64 * 1024 - 1, 64 * 1024, 3 * MiB + 7])  # (2047: the pieces hashed holding the GIL)
def test_a_file_held_in_memory_gets_the_digests_of_the_same_file_on_disk(tmp_path, size):
    """A small file its probe carried is hashed from memory: the digests
    are those of its bytes on disk."""
    from segdl.engine.disk.verify import digest_bytes, digest_file

    data = random.Random(size).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert digest_bytes(data, sha256=True, git_sha1=True) == digest_file(path, sha256=True, git_sha1=True)
    assert digest_bytes(data).blake3 == blake3.blake3(data).hexdigest()


def test_a_bug_in_the_hasher_costs_a_read_from_disk_not_a_hang(tmp_path, monkeypatch):
    """The coordinator waits for a worker's digest with no deadline.  An
    unexpected error while a digest is made still answers (no digest, and
    why: the file is then hashed from disk), and the hasher goes on with
    the next file."""
    data = random.Random(4).randbytes(300_000)
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(data)
    pool = StagePool(8, 256 * 1024)
    events = _Events()
    h = Hasher(0, events, pool, MiB)
    real = Hasher._digest

    def broken_for_a(self, file, f, size):
        if file == 1:
            raise KeyError("a bug")
        return real(self, file, f, size)

    monkeypatch.setattr(Hasher, "_digest", broken_for_a)
    h.start()
    for fid, name in ((1, "a"), (2, "b")):
        h.track(fid, str(tmp_path / name), len(data), False, on_disk=[(0, len(data))])
        h.digest(fid, len(data))
    first, second = events.q.get(timeout=30), events.q.get(timeout=30)
    assert (first.file, first.blake3) == (1, None) and "KeyError" in first.why
    assert (second.file, second.blake3, second.why) == (2, blake3.blake3(data).hexdigest(), None)
