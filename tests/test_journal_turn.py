"""The engine's loop writes each turn in one transaction (issue 19):
every write inside ``Journal.turn()`` joins it, each write stays all or
nothing, and others see the turn's writes together, once it ends."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from segdl.engine.values.errors import SegdlError
from segdl.engine.journal.writer import Journal


def other_view(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def states(con: sqlite3.Connection) -> dict[str, str]:
    return {Path(p).name: s for p, s in con.execute("SELECT path, state FROM files")}


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    yield j
    j.close()


def test_a_turns_writes_are_seen_together_when_it_ends(journal, tmp_path):
    job = journal.create_job(tmp_path, {"requests": []})
    reader = other_view(journal.path)
    with journal.turn():
        a = journal.put_file(job, "http://x/a", tmp_path / "a", state="downloading")
        journal.put_file(job, "http://x/b", tmp_path / "b", state="downloading")
        journal.update_file(a, state="verifying")
        assert states(reader) == {}  # nothing committed yet
    assert states(reader) == {"a": "verifying", "b": "downloading"}
    reader.close()


def test_a_write_that_fails_inside_a_turn_is_undone_alone(journal, tmp_path):
    job = journal.create_job(tmp_path, {"requests": []})
    with journal.turn():
        a = journal.put_file(job, "http://x/a", tmp_path / "a", state="downloading")
        with pytest.raises(SegdlError):
            with journal.atomic() as db:
                db.execute("UPDATE files SET state = 'verifying' WHERE id = ?", [a])
                db.execute("INSERT INTO no_such_table VALUES (1)")
        journal.put_file(job, "http://x/b", tmp_path / "b", state="queued")
    reader = other_view(journal.path)
    assert states(reader) == {"a": "downloading", "b": "queued"}
    reader.close()


def test_a_durable_write_makes_the_rest_of_the_turn_synced_then_normal_again(journal, tmp_path):
    """SQLite fixes a transaction's safety level when it begins: a durable
    write in a turn commits what came before and opens a synced one."""
    job = journal.create_job(tmp_path, {"requests": []})
    level = lambda: journal.db.conn.execute("PRAGMA synchronous").fetchone()[0]  # noqa: E731
    assert level() == 1  # NORMAL
    with journal.turn():
        a = journal.put_file(job, "http://x/a", tmp_path / "a", state="verifying")
        journal.mark_verified([(a, "ab" * 32, None, None)])
        assert level() == 2  # FULL for the rest of the turn
        journal.mark_done([(a, 1.0, 0)])
    assert level() == 1
    reader = other_view(journal.path)
    assert states(reader) == {"a": "done"}
    reader.close()


def test_a_turn_that_writes_nothing_opens_no_transaction(journal):
    with journal.turn():
        journal.file_by_path(Path("/nowhere"))
        assert not journal.db.conn.in_transaction


@pytest.mark.parametrize("sqlite", ["now", "3.34"])
def test_many_new_rows_go_in_at_once_and_a_path_with_a_row_gets_none(journal, tmp_path, monkeypatch, sqlite):
    """The loop adds the rows of a turn's small files together (one
    INSERT ... RETURNING per 500 rows; a row at a time before SQLite 3.35):
    each gets its id, in order, and a path that has a row already (another
    process's, or a failed download's) gets None and is left as it was."""
    if sqlite == "3.34":
        monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    job = journal.create_job(tmp_path, {"requests": []})
    taken = journal.put_file(job, "http://x/f0002", tmp_path / "f0002", state="failed")
    rows = [(job, f"http://x/f{i:04d}", tmp_path / f"f{i:04d}", {"state": "verified", "size": i, "blake3": "ab" * 32})
            for i in range(1200)]
    with journal.turn():
        ids = journal.add_files(rows)
    assert ids[2] is None and None not in ids[:2] + ids[3:]
    assert len(set(ids[:2] + ids[3:])) == 1199
    for (_, url, path, fields), fid in zip(rows, ids):
        row = journal.file(fid) if fid is not None else journal.file(taken)
        assert row["path"] == str(path)
        if fid is not None:
            assert (row["url"], row["state"], row["size"]) == (url, "verified", fields["size"])
    assert journal.file(taken)["state"] == "failed"


def _temporary_files() -> list[str]:
    """The SQLite temporary files this process has open (named etilqs_*,
    unlinked once opened)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "etilqs_" in target:
            found.append(target)
    return found


def test_a_turns_statement_and_savepoint_journals_stay_in_memory(journal, tmp_path):
    """Rolling back one write of a turn needs the pages it changed as they
    were: kept in memory, not written to a temporary file on the loop (in
    a 20,000-file run that file took two in three of the journal's write
    calls)."""
    job = journal.create_job(tmp_path, {})
    with journal.turn():
        for batch in range(4):
            with journal.atomic():  # a savepoint of the turn, of many pages
                journal.add_files([(job, f"http://h/{batch}/{i}", tmp_path / f"{batch}-{i:04d}.bin",
                                    {"blake3": f"{(batch * 1000 + i) * 7919:064x}"}) for i in range(400)])
        assert _temporary_files() == []
    assert len(list(journal.db.query("SELECT id FROM files"))) == 1600
