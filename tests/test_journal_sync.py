"""Which sync makes a verified file's journal row durable before its
rename: the journal's own (an fdatasync of its WAL in the turn's commit),
or, when the journal shares the files' file system and that file system's
``syncfs`` is trusted, the one ``syncfs`` the finishing makes of the
batch's data before renaming it (storage.finalize_many, ``journal_too``).
Real runs, traced with strace; and the finishing's rule when that syncfs
fails: nothing of the batch is renamed."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import helpers
from helpers import json_lines
from segdl.engine.disk import storage
from segdl.engine.disk.confine import Root
from segdl.engine.journal.writer import Journal
from segdl.engine.values.errors import StorageError

FILES = 300

_SYNC = re.compile(r"^\d+\s+(fdatasync|fsync|syncfs)\((\d+)<([^>]*)>\)\s+=\s+0")


def _traced_get(src: Path, make_nginx, dest: Path, journal: Path, trace: Path) -> dict[str, int]:
    """``segdl get`` of FILES small files under strace; the syncs it made."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs it)")
    srv = make_nginx(root=src)
    listing = src.parent / "input.txt"
    listing.write_text("".join(f"{srv.url(f'f{i:03d}.bin')}\n" for i in range(FILES)))
    # (--commit-interval 600: no heartbeat syncs the journal meanwhile)
    p = subprocess.run([strace, "-f", "-qq", "-y", "-e", "trace=fdatasync,fsync,syncfs", "-o", str(trace),
                        *helpers.SEGDL, "get", "-i", str(listing), "-d", str(dest), "--json", "-j", "16",
                        "--commit-interval", "600"],
                       capture_output=True, text=True, timeout=180, env=dict(os.environ, SEGDL_JOURNAL=str(journal)))
    assert p.returncode == 0, p.stderr
    done = [line for line in json_lines(p) if line.get("status") == "done"]
    assert len(done) == FILES
    for i in (0, FILES // 2, FILES - 1):
        assert (dest / f"f{i:03d}.bin").read_bytes() == (src / f"f{i:03d}.bin").read_bytes()
    counts = {"wal": 0, "syncfs": 0, "dest": 0}
    for line in trace.read_text().splitlines():
        m = _SYNC.match(line)
        if not m:
            continue
        call, _, path = m.groups()
        if call == "syncfs":
            counts["syncfs"] += 1
        elif path.endswith("-wal"):
            counts["wal"] += 1
        elif path == str(dest):
            counts["dest"] += 1  # one a batch renamed there (and one when the folder was made)
    return counts


@pytest.fixture
def small_src(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(FILES):
        (src / f"f{i:03d}.bin").write_bytes(os.urandom(1500 + i))
    return src


def test_the_finishing_syncfs_makes_the_journal_durable_on_one_file_system(small_src, make_nginx, mount_ram,
                                                                            tmp_path):
    """Journal and files on one tmpfs: the verified rows are committed
    without a sync of the WAL; every batch's renames follow a syncfs."""
    disk = mount_ram("tmpfs", "256m")
    c = _traced_get(small_src, make_nginx, disk / "out", disk / "j.sqlite", tmp_path / "trace")
    batches = c["dest"] - 1
    assert batches >= FILES // 32  # (at most 32 files probed ahead: many batches)
    assert c["syncfs"] >= batches // 2, c  # (the folder is fsynced at times besides a batch's renames)
    assert c["wal"] <= 4, c  # creating the journal, ending the job: not one a batch


def test_a_journal_on_another_file_system_syncs_its_own_commits(small_src, make_nginx, mount_ram, tmp_path):
    """Journal on a tmpfs, files elsewhere: the finishing's syncfs does
    not reach the journal, so each batch's verified rows are a synced
    commit of their own."""
    disk = mount_ram("tmpfs", "64m")
    out = tmp_path / "out"
    c = _traced_get(small_src, make_nginx, out, disk / "j.sqlite", tmp_path / "trace")
    batches = c["dest"] - 1
    assert batches >= FILES // 32
    assert c["wal"] >= batches, c


def test_the_journal_knows_whether_a_syncfs_covers_it(tmp_path, mount_ram):
    disk = mount_ram("tmpfs", "16m")
    assert Journal(disk / "j.sqlite").syncfs_dev == os.stat(disk).st_dev
    ram = mount_ram("ramfs")  # (not a file system segdl trusts syncfs on)
    assert Journal(ram / "j.sqlite").syncfs_dev is None
    assert Journal(disk / "j.sqlite", readonly=True).syncfs_dev is None


def _batch(folder: Path, n: int, held: list) -> list[tuple]:
    """``n`` part files written in ``folder`` (their descriptors in ``held``)."""
    root = Root(folder)
    items = []
    for i in range(n):
        part = folder / f"f{i}.bin.segdl-part"
        h = storage.lock_part(root, part)
        held.append(h.fd)
        os.write(h.fd, b"x" * 100)
        items.append((root, part, folder / f"f{i}.bin", 100, h.ident, None))
    return items


def test_a_batch_whose_syncfs_fails_renames_nothing_when_it_carries_the_journal(tmp_path, monkeypatch):
    """The journal's commit of the batch may not be durable: no final name
    may appear.  (Without the journal riding on it, the batch falls back to
    an fsync per file, and renames those that succeed.)"""
    calls = []

    def failing(fd):
        calls.append(fd)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(storage, "_sync_fs", failing)
    carried, alone = tmp_path / "carried", tmp_path / "alone"
    carried.mkdir()
    alone.mkdir()
    if storage.syncfs_device(carried) is None:
        pytest.skip(f"{carried}: not a file system whose syncfs segdl trusts")
    held: list[int] = []
    out = storage.finalize_many(_batch(carried, 2, held), journal_too=True)  # (2: below SYNCFS_MIN, syncfs all the same)
    assert len(calls) == 1
    assert all(isinstance(r, StorageError) and "cannot sync" in r.message for r in out)
    assert sorted(p.name for p in carried.iterdir()) == ["f0.bin.segdl-part", "f1.bin.segdl-part"]
    out = storage.finalize_many(_batch(alone, storage.SYNCFS_MIN, held), journal_too=False)
    assert len(calls) == 2 and all(isinstance(r, tuple) for r in out)
    assert sorted(p.name for p in alone.iterdir()) == [f"f{i}.bin" for i in range(storage.SYNCFS_MIN)]
    for fd in held:
        os.close(fd)
