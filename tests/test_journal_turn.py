"""The engine's loop writes each turn in one transaction (issue 19):
every write inside ``Journal.turn()`` joins it, each write stays all or
nothing, and others see the turn's writes together, once it ends."""

from __future__ import annotations

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
