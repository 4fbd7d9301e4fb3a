"""Full disk, unusable journals: clear errors, nothing lost."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from helpers import json_lines, run_segdl
from servers import MiB, blake3_file, write_deterministic_file
from segdl.engine.values import errors
from segdl.engine.journal.writer import Journal


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs the test mounts (we are root in CI)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_fails_cleanly_and_resumes_after_space_is_freed(make_nginx, tmp_path, small_disk):
    root = tmp_path / "root"
    root.mkdir()
    write_deterministic_file(root / "f16.bin", 16 * MiB, 7)
    write_deterministic_file(root / "f4.bin", 4 * MiB, 8)
    srv = make_nginx(root=root)
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (12 * MiB))  # leaves 12 MiB: f4 fits, f16 does not
    journal = tmp_path / "j.sqlite"  # the journal lives elsewhere, on a disk with room
    p = run_segdl(["get", srv.url("f16.bin"), srv.url("f4.bin"), "-d", small_disk / "out", "--json"], journal)
    assert p.returncode == errors.EXIT_STORAGE, p.stderr
    by_name = {Path(l["path"]).name: l for l in json_lines(p)}
    big, small = by_name["f16.bin"], by_name["f4.bin"]
    assert big["status"] == "failed" and "no space left" in big["error"]
    assert small["status"] == "done"  # one file's trouble does not stop the other
    assert not (small_disk / "out" / "f16.bin").exists()
    # The journal is intact and says why.
    j = Journal(journal, readonly=True)
    rows = {Path(r["path"]).name: r for r in j.files()}
    j.close()
    assert rows["f16.bin"]["state"] == "failed" and rows["f4.bin"]["state"] == "done"

    ballast.unlink()
    p = run_segdl(["get", srv.url("f16.bin"), srv.url("f4.bin"), "-d", small_disk / "out", "--json"], journal)
    assert p.returncode == 0, p.stderr
    assert {Path(l["path"]).name: l["status"] for l in json_lines(p)} == {"f16.bin": "done", "f4.bin": "skipped"}
    assert blake3_file(small_disk / "out" / "f16.bin") == blake3_file(root / "f16.bin")


def test_truncated_journal_is_a_clear_error(tmp_path, nginx):
    journal = tmp_path / "j.sqlite"
    p = run_segdl(["get", nginx.url("one.bin"), "-d", tmp_path / "out", "--json"], journal)
    assert p.returncode == 0
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) // 3])
    for wal in tmp_path.glob("j.sqlite-*"):
        wal.unlink()
    for args in (["status"], ["get", nginx.url("odd.bin"), "-d", tmp_path / "out", "--json"], ["resume"]):
        p = run_segdl(args, journal)
        assert p.returncode == errors.EXIT_JOURNAL, (args, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr and "journal" in p.stderr


def test_garbage_journal_is_a_clear_error(tmp_path, nginx):
    journal = tmp_path / "j.sqlite"
    journal.write_bytes(b"this is not a database" * 100)
    p = run_segdl(["get", nginx.url("one.bin"), "-d", tmp_path / "out", "--json"], journal)
    assert p.returncode == errors.EXIT_JOURNAL
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out" / "one.bin").exists()


def test_journal_from_a_newer_segdl_is_refused(tmp_path, nginx):
    journal = tmp_path / "j.sqlite"
    Journal(journal).close()
    con = sqlite3.connect(journal)
    con.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES ('segdl', 'm999_future', '2030-01-01')")
    con.commit()
    con.close()
    p = run_segdl(["get", nginx.url("one.bin"), "-d", tmp_path / "out", "--json"], journal)
    assert p.returncode == errors.EXIT_JOURNAL
    assert "newer segdl" in p.stderr


def test_a_value_the_journal_cannot_hold_is_segdls_bug_not_a_journal_to_move_aside(tmp_path):
    """Only a damaged journal is worth moving aside: a value SQLite cannot
    store (a huge integer, a dict) says so, and the journal goes on."""
    j = Journal(tmp_path / "j.sqlite")
    try:
        job = j.create_job(tmp_path, {"requests": []})
        fid = j.put_file(job, "http://127.0.0.1:9/a.bin", tmp_path / "a.bin")
        for bad in ({"priority": 10**23}, {"error": {"a": 1}}):
            with pytest.raises(errors.SegdlError) as e:
                j.update_file(fid, **bad)
            assert type(e.value) is errors.SegdlError and e.value.exit_code == errors.EXIT_INTERNAL, e.value
            assert "bug in segdl" in e.value.message and "aside" not in e.value.message
        j.update_file(fid, priority=5)
        assert j.file(fid)["priority"] == 5
    finally:
        j.close()
