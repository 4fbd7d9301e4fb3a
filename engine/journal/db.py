"""The journal's connection: rows as dicts, one transaction helper, and
SQLite's errors named for what they are.  A SQLite door (see
``journal.py``): the journal modules share this, nothing else uses it.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..values.errors import JournalError, SegdlError, StorageError


class Db:
    """The journal's connection: rows as dicts, one transaction helper.
    (sqlite-utils wraps the same connection when a migration runs.)"""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._turn = False  # a turn is open: every write joins its one transaction
        self._sync = False  # ... and a write asked that its commit be synced
        self._depth = 0  # savepoints open in the turn

    def query(self, sql: str, params=()) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row))

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executescript(self, sql: str) -> None:
        self.conn.executescript(sql)

    @contextmanager
    def atomic(self, durable: bool = False, one: bool = False) -> Iterator["Db"]:
        """One transaction.  ``durable``: its COMMIT syncs the WAL, which
        makes it and every commit before it survive a power cut.  Inside a
        :meth:`turn` it is a savepoint of the turn's transaction (all of it
        or none of it), and ``durable`` makes the turn's commit synced.
        ``one``: the block writes with one statement, which SQLite makes
        all or nothing by itself: inside a turn, no savepoint."""
        if self._turn:
            if one:
                self._join(durable)
                yield self
                return
            with self._savepoint(durable):
                yield self
            return
        if self.conn.in_transaction:
            if durable:
                raise RuntimeError("a durable commit cannot be nested in a transaction")
            yield self  # already inside one: part of it
            return
        if durable:
            self.conn.execute("PRAGMA synchronous = FULL")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # (also when COMMIT itself failed: busy, full)
                    self.conn.execute("ROLLBACK")
                raise
        finally:
            if durable:
                self.conn.execute("PRAGMA synchronous = NORMAL")

    def _join(self, durable: bool) -> None:
        """Begin the turn's transaction at its first write (not before)."""
        if durable and not self._sync:
            # SQLite fixes a transaction's safety level when it begins: what
            # the turn wrote so far is committed, and the rest of the turn
            # is one synced transaction (whose sync covers both).
            if self._depth:
                raise RuntimeError("a durable write cannot be nested in another write")
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")
            self.conn.execute("PRAGMA synchronous = FULL")
            self._sync = True
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")

    @contextmanager
    def _savepoint(self, durable: bool) -> Iterator[None]:
        self._join(durable)
        name = f"w{self._depth}"
        self._depth += 1
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
            self.conn.execute(f"RELEASE {name}")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
            raise
        finally:
            self._depth -= 1

    @contextmanager
    def turn(self) -> Iterator[None]:
        """One transaction for everything written inside (each write still
        all or nothing, as a savepoint), committed once at the end, synced
        when a write asked for it (then at most two commits: see
        ``_savepoint``); begun at the first write, so a turn that writes
        nothing costs nothing.  On an error the writes made so far
        are committed (as separate commits would have been), then it is
        raised."""
        if self._turn or self.conn.in_transaction:
            yield  # already in one: part of it
            return
        self._turn, self._sync = True, False
        try:
            yield
        finally:
            self._turn = False
            try:
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("COMMIT")
                    except BaseException:
                        if self.conn.in_transaction:
                            self.conn.execute("ROLLBACK")
                        raise
            finally:
                if self._sync:
                    self._sync = False
                    self.conn.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        self.conn.close()


@contextmanager
def journal_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        raise _named(path, e) from e
    except OverflowError as e:  # an integer SQLite cannot store: segdl's bug
        raise _named(path, e) from e


def _named(path: Path, e: Exception) -> SegdlError:
    """A SQLite error, named for what it is.  Only a damaged journal is
    worth moving aside: a full disk, a lock held too long or a value segdl
    should not have written leave the journal as good as it was."""
    code = getattr(e, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    if code == sqlite3.SQLITE_FULL:
        return StorageError(f"cannot write the journal {path}: no space left on device")
    if primary == sqlite3.SQLITE_IOERR:
        return StorageError(f"cannot write the journal {path}: I/O error")
    if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        return StorageError(f"cannot use the journal {path} ({e}): check its folder's permissions and space")
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return JournalError(f"the journal {path} is busy: another process held it locked too long ({e}); "
                            "try again")
    if isinstance(e, (OverflowError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
                      sqlite3.IntegrityError, sqlite3.DataError)):
        return SegdlError(f"segdl could not record a value in the journal ({e}); this is a bug in segdl "
                          f"(please report it), the journal {path} is fine")
    return JournalError(f"journal {path} is damaged or not a segdl journal ({e}); move it aside to start afresh")
