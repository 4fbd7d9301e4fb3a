"""The forgetful filesystem's rules, on its model alone (no FUSE): a new
Volume over the same store is what a power cut leaves."""

from __future__ import annotations

import errno

import pytest

from forgetful_model import PAGE, ROOT, FsError, Volume


def cut(v: Volume) -> Volume:
    return Volume(v.store)


def write_file(v: Volume, path: str, data: bytes) -> int:
    ino = v.create(path, "f", 0o644)
    v.write(ino, data, 0)
    return ino


def names(v: Volume, path: str = "/") -> list[str]:
    return sorted(v.nodes[v.lookup(path)].entries)


def test_unsynced_writes_and_names_are_forgotten(tmp_path):
    v = Volume(str(tmp_path))
    write_file(v, "/a", b"x" * 100)
    assert v.read(v.lookup("/a"), 100, 0) == b"x" * 100  # a process sees its own writes
    assert names(cut(v)) == []


def test_fdatasync_keeps_data_and_size_but_not_mtime(tmp_path):
    v = Volume(str(tmp_path))
    ino = write_file(v, "/a", b"x" * 5000)
    v.fsyncdir(ROOT)
    v.set_attrs(ino, mtime_ns=1_000_000_000)
    v.fsync(ino, datasync=True)
    v.write(ino, b"y" * 10, 5000)  # after the sync: lost
    after = cut(v)
    a = after.lookup("/a")
    assert bytes(after.nodes[a].data) == b"x" * 5000
    assert after.nodes[a].mtime_ns != 1_000_000_000
    v.set_attrs(ino, mtime_ns=2_000_000_000)
    v.fsync(ino, datasync=False)
    assert cut(v).nodes[a].mtime_ns == 2_000_000_000


def test_a_file_fsync_makes_no_name_durable(tmp_path):
    v = Volume(str(tmp_path))
    ino = write_file(v, "/a", b"data")
    v.fsync(ino, datasync=False)
    assert names(cut(v)) == []


def test_a_new_folder_needs_its_parent_synced(tmp_path):
    """The rule that found segdl's folders vanishing with the files in them."""
    v = Volume(str(tmp_path))
    v.create("/out", "d", 0o755)
    ino = write_file(v, "/out/a", b"data")
    v.fsync(ino, datasync=True)
    v.fsyncdir(v.lookup("/out"))
    assert names(cut(v)) == []  # /out's own entry was never synced
    v.fsyncdir(ROOT)
    after = cut(v)
    assert names(after, "/out") == ["a"] and bytes(after.nodes[after.lookup("/out/a")].data) == b"data"


def test_rename_is_atomic_and_pending_until_the_folder_is_synced(tmp_path):
    v = Volume(str(tmp_path))
    ino = write_file(v, "/a.part", b"data")
    v.fsync(ino, datasync=False)
    v.fsyncdir(ROOT)
    v.rename("/a.part", "/a")
    assert names(cut(v)) == ["a.part"]  # old name: never both, never neither
    v.fsyncdir(ROOT)
    assert names(cut(v)) == ["a"]


def test_a_folder_sync_takes_earlier_operations_it_depends_on(tmp_path):
    """A rename out of /x into /y, then /y synced: the rename is applied in
    both folders at once (and the create in /x before it, which it needs)."""
    v = Volume(str(tmp_path))
    for d in ("/x", "/y"):
        v.create(d, "d", 0o755)
    v.fsyncdir(ROOT)
    write_file(v, "/x/f", b"1")
    v.rename("/x/f", "/y/g")
    write_file(v, "/x/other", b"2")  # later, and not needed: stays pending
    v.fsyncdir(v.lookup("/y"))
    after = cut(v)
    assert names(after, "/y") == ["g"] and names(after, "/x") == []


def test_torn_cut_garbles_only_bytes_written_since_the_sync(tmp_path):
    """Over 20 seeds a torn cut keeps some rewritten halves, loses some and
    garbles some, and never touches the halves that were not rewritten."""
    half = PAGE // 2
    seen = set()
    for seed in range(20):
        v = Volume(str(tmp_path / str(seed)))
        ino = write_file(v, "/a", b"A" * (4 * PAGE))
        v.fsync(ino, datasync=True)
        v.fsyncdir(ROOT)
        for page in range(4):  # the second half of each page rewritten
            v.write(ino, b"B" * half, page * PAGE + half)
        v.tear(seed)
        data = bytes(cut(v).nodes[ino].data)
        for page in range(4):
            assert data[page * PAGE:page * PAGE + half] == b"A" * half
            second = data[page * PAGE + half:(page + 1) * PAGE]
            seen.add("old" if second == b"A" * half else "new" if second == b"B" * half else "garbled")
    assert seen == {"old", "new", "garbled"}


def test_capacity_fails_a_write_with_enospc_not_the_fallocate(tmp_path):
    v = Volume(str(tmp_path))
    v.capacity = 2 * PAGE
    ino = v.create("/a", "f", 0o644)
    v.truncate(ino, 10 * PAGE)  # fallocate's size change reserves nothing
    v.write(ino, b"x" * (2 * PAGE), 0)
    with pytest.raises(FsError) as e:
        v.write(ino, b"x", 2 * PAGE)
    assert e.value.errno == errno.ENOSPC


def test_unlinked_file_comes_back_if_the_unlink_was_not_synced(tmp_path):
    v = Volume(str(tmp_path))
    ino = write_file(v, "/a", b"keep")
    v.fsync(ino, datasync=True)
    v.fsyncdir(ROOT)
    v.remove("/a", directory=False)
    after = cut(v)
    assert bytes(after.nodes[after.lookup("/a")].data) == b"keep"
