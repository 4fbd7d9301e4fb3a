"""The only module that talks to SQLite: the journal of jobs, files
(sub-resources) and segments.

Rules this module keeps for everyone:

* Every write goes through :meth:`Journal.atomic` (one transaction).
* A segment's ``done`` only ever records bytes that an ``fdatasync`` has
  already made durable; callers hand in positions they got from a
  :class:`~segdl.engine.messages.Durable` or ``Finished`` event.
* WAL with ``synchronous=NORMAL``: a power cut may lose the last commits,
  never corrupt the file; since data is synced *before* each commit, an
  older journal state always claims less than is on disk, never more.
  Two kinds of commit are synced (``durable``): the heartbeat, once a
  second, which bounds the progress a power cut can lose; and a file's
  ``verified``, which must be on disk before its part file is renamed.
* The schema is versioned with sqlite-utils ``Migrations``; a journal that
  carries migrations this segdl does not know is refused, not guessed at.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import JournalError, SegdlError, StorageError

# The schema's migrations, in order.  They are applied with sqlite-utils
# ``Migrations``; sqlite-utils itself is loaded only when one is pending
# (once per journal), so commands start fast (see _migrations()).
MIGRATION_SET = "segdl"
MIGRATION_STEPS: list = []


def _migration(fn):
    MIGRATION_STEPS.append(fn)
    return fn


def _load_sqlite_utils_lean():
    """sqlite-utils imports pandas and numpy, when installed, as it loads,
    only to map their types to SQL column types; the journal stores neither,
    and in a data-science environment the two cost 0.5 s or more.  Hide
    them while sqlite-utils loads; a later import of either works as usual."""
    hidden = [m for m in ("pandas", "numpy") if m not in sys.modules]
    for m in hidden:
        sys.modules[m] = None  # type: ignore[assignment]  # "import m" raises ImportError
    try:
        import sqlite_utils
        from sqlite_utils.migrations import Migrations
    finally:
        for m in hidden:
            sys.modules.pop(m, None)
    return sqlite_utils, Migrations


def _migrations():
    _, Migrations = _load_sqlite_utils_lean()
    m = Migrations(MIGRATION_SET)
    for fn in MIGRATION_STEPS:
        m(name=fn.__name__)(fn)
    return m


class _Db:
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
    def atomic(self, durable: bool = False) -> Iterator["_Db"]:
        """One transaction.  ``durable``: its COMMIT syncs the WAL, which
        makes it and every commit before it survive a power cut.  Inside a
        :meth:`turn` it is a savepoint of the turn's transaction (all of it
        or none of it), and ``durable`` makes the turn's commit synced."""
        if self._turn:
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

    @contextmanager
    def _savepoint(self, durable: bool) -> Iterator[None]:
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
            self.conn.execute("BEGIN IMMEDIATE")  # at the turn's first write, not before
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


@_migration
def m001_initial(db) -> None:
    db.executescript(
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            created REAL NOT NULL,
            dest TEXT NOT NULL,
            collection TEXT,
            spec TEXT NOT NULL,           -- JSON: how to run the job again
            state TEXT NOT NULL           -- running | finished
        );
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            job_id INTEGER REFERENCES jobs(id),
            url TEXT NOT NULL,
            final_url TEXT,
            path TEXT NOT NULL UNIQUE,    -- absolute final path
            size INTEGER,
            ranged INTEGER,
            etag TEXT,
            last_modified TEXT,
            state TEXT NOT NULL,          -- queued | downloading | verifying | verified
                                          -- | done | skipped | failed | hash_mismatch | paused
            expected_blake3 TEXT,
            expected_sha256 TEXT,
            blake3 TEXT,
            sha256 TEXT,
            error TEXT,
            exit_code INTEGER,
            mtime REAL,
            created REAL NOT NULL,
            updated REAL NOT NULL
        );
        CREATE INDEX files_job ON files(job_id);
        CREATE TABLE segments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: late events of a
                                                   -- replaced plan cannot hit a new one
            file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
            start INTEGER NOT NULL,
            "end" INTEGER,                -- exclusive; NULL for a length-less stream
            done INTEGER NOT NULL DEFAULT 0  -- durable bytes from start
        );
        CREATE INDEX segments_file ON segments(file_id);
        """
    )


@_migration
def m002_live_control(db) -> None:
    """Live state for ``segdl status`` and control from other processes:
    a paused flag per file, live speed and received bytes, per-job limits."""
    db.executescript(
        """
        ALTER TABLE files ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE files ADD COLUMN speed REAL;
        ALTER TABLE files ADD COLUMN received INTEGER;
        ALTER TABLE jobs ADD COLUMN pid INTEGER;
        ALTER TABLE jobs ADD COLUMN heartbeat REAL;
        ALTER TABLE jobs ADD COLUMN max_speed INTEGER;
        ALTER TABLE jobs ADD COLUMN max_file_speed INTEGER;
        """
    )


@_migration
def m003_mirror_stats(db) -> None:
    """Per-mirror bytes and speed of each file, for ``segdl status``; digest
    indexes, so finding an already downloaded copy stays cheap."""
    db.executescript(
        """
        ALTER TABLE files ADD COLUMN mirrors TEXT;
        CREATE INDEX files_blake3 ON files(blake3);
        CREATE INDEX files_sha256 ON files(sha256);
        """
    )


@_migration
def m004_hub_sources(db) -> None:
    """The git blob sha1 a hub lists for a file kept in git, not LFS
    (expected, and as verified), indexed so a copy is found by it."""
    db.executescript(
        """
        ALTER TABLE files ADD COLUMN expected_git_sha1 TEXT;
        ALTER TABLE files ADD COLUMN git_sha1 TEXT;
        CREATE INDEX files_git_sha1 ON files(git_sha1);
        """
    )


# What the events table holds (m005, m006): the API streams them by seq.
EVENT_KINDS = ("added", "state", "progress", "finished", "failed", "removed", "changed",
               "job_added", "job_ended", "limits")

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # unixepoch('subsec') before SQLite 3.42


@_migration
def m005_service(db) -> None:
    """What a long-running engine needs: each file's priority and speed
    limit, and an event log.  Triggers write the events, so every change
    of a file's state, whoever makes it (the engine, ``segdl pause`` in
    another terminal), gets its sequence number in the same transaction
    as the change; the API streams them by that number."""
    db.executescript(
        f"""
        ALTER TABLE files ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE files ADD COLUMN max_speed INTEGER;
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: Last-Event-ID
            time REAL NOT NULL,
            kind TEXT NOT NULL,     -- added | state | progress | finished | failed | removed | job_ended
            job_id INTEGER,
            file_id INTEGER,
            data TEXT NOT NULL      -- JSON
        );
        CREATE INDEX events_file ON events(file_id);
        CREATE TRIGGER events_file_added AFTER INSERT ON files BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'added', NEW.job_id, NEW.id,
                json_object('path', NEW.path, 'url', NEW.url, 'state', NEW.state, 'size', NEW.size));
        END;
        CREATE TRIGGER events_file_state AFTER UPDATE OF state ON files WHEN NEW.state IS NOT OLD.state BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW},
                CASE NEW.state WHEN 'done' THEN 'finished' WHEN 'skipped' THEN 'finished'
                               WHEN 'failed' THEN 'failed' WHEN 'hash_mismatch' THEN 'failed'
                               WHEN 'removed' THEN 'removed' ELSE 'state' END,
                NEW.job_id, NEW.id,
                json_object('state', NEW.state, 'previous', OLD.state, 'path', NEW.path, 'size', NEW.size,
                            'error', NEW.error, 'exit_code', NEW.exit_code, 'blake3', NEW.blake3));
        END;
        CREATE TRIGGER events_file_deleted AFTER DELETE ON files BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'removed', OLD.job_id, OLD.id,
                json_object('path', OLD.path, 'state', 'removed', 'previous', OLD.state, 'deleted', 1));
        END;
        CREATE TRIGGER events_file_progress AFTER UPDATE OF received ON files
            WHEN NEW.received IS NOT OLD.received BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'progress', NEW.job_id, NEW.id,
                json_object('received', NEW.received, 'size', NEW.size, 'speed', NEW.speed));
        END;
        CREATE TRIGGER events_job_ended AFTER UPDATE OF state ON jobs
            WHEN NEW.state = 'finished' AND OLD.state IS NOT 'finished' BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'job_ended', NEW.id, NULL,
                json_object('collection', NEW.collection,
                            'files', (SELECT COUNT(*) FROM files WHERE job_id = NEW.id),
                            'failed', (SELECT COUNT(*) FROM files WHERE job_id = NEW.id
                                       AND state IN ('failed', 'hash_mismatch'))));
        END;
        """
    )


_FILE_FIELDS = """'path', NEW.path, 'url', NEW.url, 'state', NEW.state, 'size', NEW.size,
                'paused', json(CASE WHEN NEW.paused THEN 'true' ELSE 'false' END), 'priority', NEW.priority,
                'max_speed', COALESCE(NEW.max_speed, 0)"""
_JOB_COUNTS = """'files', (SELECT COUNT(*) FROM files WHERE job_id = NEW.id),
                'counts', json((SELECT json_group_object(state, n) FROM
                                (SELECT state, COUNT(*) AS n FROM files WHERE job_id = NEW.id GROUP BY state)))"""


@_migration
def m006_every_change_an_event(db) -> None:
    """Every change a client of the service can see has its event, in the
    transaction that makes it: a file joining a job (a retry, the same
    target again), its controls (paused, priority, max_speed), a job
    added, the service's limits (kept here, so they outlive a restart).
    ``job_ended`` counts the job's files by state; ``progress`` carries
    the figures under the names the API uses.  Indexes for listing files
    by job and state a page at a time, and for counting them."""
    db.executescript(
        f"""
        CREATE INDEX files_job_state ON files(job_id, state);
        CREATE INDEX files_state ON files(state);
        CREATE TABLE limits (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            max_speed INTEGER NOT NULL DEFAULT 0,       -- bytes/s, 0: none
            max_file_speed INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO limits (id) VALUES (1);
        CREATE TRIGGER events_limits AFTER UPDATE ON limits
            WHEN NEW.max_speed IS NOT OLD.max_speed OR NEW.max_file_speed IS NOT OLD.max_file_speed BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'limits', NULL, NULL,
                json_object('max_speed', NEW.max_speed, 'max_file_speed', NEW.max_file_speed));
        END;
        DROP TRIGGER events_file_added;
        CREATE TRIGGER events_file_added AFTER INSERT ON files BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'added', NEW.job_id, NEW.id,
                json_object({_FILE_FIELDS}));
        END;
        CREATE TRIGGER events_file_joined AFTER UPDATE OF job_id ON files WHEN NEW.job_id IS NOT OLD.job_id BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'added', NEW.job_id, NEW.id,
                json_object({_FILE_FIELDS}, 'previous_job', OLD.job_id));
        END;
        CREATE TRIGGER events_file_controls AFTER UPDATE OF paused, priority, max_speed ON files
            WHEN NEW.paused IS NOT OLD.paused OR NEW.priority IS NOT OLD.priority
                 OR COALESCE(NEW.max_speed, 0) IS NOT COALESCE(OLD.max_speed, 0) BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'changed', NEW.job_id, NEW.id,
                json_object('paused', json(CASE WHEN NEW.paused THEN 'true' ELSE 'false' END),
                            'priority', NEW.priority, 'max_speed', COALESCE(NEW.max_speed, 0)));
        END;
        DROP TRIGGER events_file_progress;
        CREATE TRIGGER events_file_progress AFTER UPDATE OF received ON files
            WHEN NEW.received IS NOT OLD.received BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'progress', NEW.job_id, NEW.id,
                json_object('received', NEW.received,
                            'bytes_done', (SELECT COALESCE(SUM(done), 0) FROM segments WHERE file_id = NEW.id),
                            'size', NEW.size,
                            'speed', CASE WHEN NEW.state = 'downloading' THEN COALESCE(NEW.speed, 0) ELSE 0 END,
                            'mirrors', json(NEW.mirrors)));
        END;
        CREATE TRIGGER events_job_added AFTER INSERT ON jobs BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'job_added', NEW.id, NULL,
                json_object('collection', NEW.collection, 'dest', NEW.dest, 'state', NEW.state));
        END;
        DROP TRIGGER events_job_ended;
        CREATE TRIGGER events_job_ended AFTER UPDATE OF state ON jobs
            WHEN NEW.state = 'finished' AND OLD.state IS NOT 'finished' BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'job_ended', NEW.id, NULL,
                json_object('collection', NEW.collection, 'state', NEW.state, {_JOB_COUNTS}));
        END;
        """
    )


def default_path() -> Path:
    env = os.environ.get("SEGDL_JOURNAL")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "segdl" / "journal.sqlite"


def _private(path: Path) -> bool:
    """Make the journal only its owner can read (0600): it keeps the URLs
    as they were given, ``user:password@`` too.  A new one is created so
    (SQLite gives its -wal and -shm the database's mode); an older one and
    its -wal and -shm are made so.  True when it is new (or still empty)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        empty = False
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            try:
                st = os.stat(p)
                empty = empty or (p == path and st.st_size == 0)
                if st.st_mode & 0o077 and st.st_uid == os.getuid():
                    os.chmod(p, st.st_mode & 0o700)
            except OSError:
                pass  # not there (-wal, -shm), or not ours to change
        return empty
    os.close(fd)
    return True


@contextmanager
def _journal_errors(path: Path) -> Iterator[None]:
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


class JournalQueries:
    """The journal's reads (no transaction, no write): what status, ls,
    the service's API and the engine ask of it."""

    db: "_Db"
    path: Path

    def control_state(self, job_ids: list[int]) -> tuple[dict[str, Any], dict[int, int]]:
        """What other processes asked of running jobs: the limits (of the
        oldest job), and the paused flag of each of their files."""
        marks = ", ".join("?" * len(job_ids))
        with _journal_errors(self.path):
            job = list(self.db.query(
                f"SELECT max_speed, max_file_speed FROM jobs WHERE id IN ({marks}) ORDER BY id LIMIT 1", job_ids))
            paused = {r["id"]: r["paused"] for r in self.db.query(
                f"SELECT id, paused FROM files WHERE job_id IN ({marks})", job_ids)}
            return (job[0] if job else {}), paused

    def control_changes(self, job_ids: list[int], since: int) -> tuple[dict[str, Any], dict[int, int], int]:
        """What other processes asked of running jobs: the limits (of the
        oldest job), the paused flag of each of their files whose controls
        changed after event ``since`` (the latest), and the last event
        read.  It reads the event log from ``since`` on, so it costs what
        changed, not the size of the jobs."""
        marks = ", ".join("?" * len(job_ids))
        with _journal_errors(self.path):
            last = list(self.db.query("SELECT COALESCE(MAX(seq), 0) AS n FROM events"))[0]["n"]
            job = list(self.db.query(
                f"SELECT max_speed, max_file_speed FROM jobs WHERE id IN ({marks}) ORDER BY id LIMIT 1", job_ids))
            paused = {r["file_id"]: int(r["paused"] or 0) for r in self.db.query(
                f"""SELECT file_id, json_extract(data, '$.paused') AS paused FROM events
                    WHERE seq > ? AND seq <= ? AND kind = 'changed' AND job_id IN ({marks}) ORDER BY seq""",
                [since, last, *job_ids])}
            return (job[0] if job else {}), paused, last

    def resolve_targets(self, target: str) -> list[dict[str, Any]]:
        """Files matching TARGET: a file id, an absolute or relative path, a
        URL, or a collection name (every file of it)."""
        with _journal_errors(self.path):
            if target.isdigit():
                rows = list(self.db.query("SELECT * FROM files WHERE id = ?", [int(target)]))
                if rows:
                    return rows
            ap = os.path.abspath(target)
            rows = list(self.db.query(
                "SELECT * FROM files WHERE path = ? OR path = ? OR url = ? ORDER BY id", [target, ap, target]))
            if rows:
                return rows
            return list(self.db.query(
                """SELECT f.* FROM files f JOIN jobs j ON j.id = f.job_id
                   WHERE j.collection = ? ORDER BY f.id""", [target]))

    def running_jobs(self) -> list[dict[str, Any]]:
        with _journal_errors(self.path):
            return list(self.db.query("SELECT * FROM jobs WHERE state = 'running' AND pid IS NOT NULL"))

    def all_jobs(self) -> list[dict[str, Any]]:
        with _journal_errors(self.path):
            out = []
            for r in self.db.query("SELECT * FROM jobs ORDER BY id"):
                r = dict(r)
                r["spec"] = json.loads(r["spec"])
                out.append(r)
            return out

    def file_by_path(self, path: Path) -> dict[str, Any] | None:
        with _journal_errors(self.path):
            rows = list(self.db.query("SELECT * FROM files WHERE path = ?", [str(path)]))
            return rows[0] if rows else None

    def files_with_digest(self, blake3: str | None, sha256: str | None,
                          git_sha1: str | None = None) -> list[dict[str, Any]]:
        """Finished files whose recorded digest matches."""
        with _journal_errors(self.path):
            rows = []
            if git_sha1:
                rows += list(self.db.query(
                    "SELECT * FROM files WHERE git_sha1 = ? AND state IN ('done', 'skipped')", [git_sha1.lower()]))
            if blake3:
                rows += list(self.db.query(
                    "SELECT * FROM files WHERE blake3 = ? AND state IN ('done', 'skipped')", [blake3.lower()]))
            if sha256:
                rows += list(self.db.query(
                    "SELECT * FROM files WHERE sha256 = ? AND state IN ('done', 'skipped')", [sha256.lower()]))
            return rows

    def done_bytes(self, file_id: int) -> int:
        """Durable bytes of a file (its segments' ``done``)."""
        with _journal_errors(self.path):
            rows = list(self.db.query("SELECT COALESCE(SUM(done), 0) AS n FROM segments WHERE file_id = ?", [file_id]))
            return rows[0]["n"] if rows else 0

    def files(self, job_id: int | None = None) -> list[dict[str, Any]]:
        with _journal_errors(self.path):
            if job_id is None:
                return list(self.db.query("SELECT * FROM files ORDER BY id"))
            return list(self.db.query("SELECT * FROM files WHERE job_id = ? ORDER BY id", [job_id]))

    def last_source(self, key: str) -> dict[str, Any] | None:
        """The ``source`` (a hub reference and the commit it was pinned
        to) of the latest job started from the reference ``key``."""
        with _journal_errors(self.path):
            for r in self.db.query(
                    "SELECT spec FROM jobs WHERE json_extract(spec, '$.source.key') = ? ORDER BY id DESC LIMIT 1",
                    [key]):
                return json.loads(r["spec"]).get("source")
            return None

    def segments(self, file_id: int) -> list[dict[str, Any]]:
        with _journal_errors(self.path):
            return list(
                self.db.query('SELECT id, start, "end", done FROM segments WHERE file_id = ? ORDER BY start', [file_id])
            )

    def events_since(self, seq: int, limit: int = 500, kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Events after ``seq``, oldest first (``data`` decoded)."""
        sql = "SELECT * FROM events WHERE seq > ?"
        params: list[Any] = [seq]
        if kinds:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            params += list(kinds)
        with _journal_errors(self.path):
            rows = list(self.db.query(sql + " ORDER BY seq LIMIT ?", [*params, limit]))
        for r in rows:
            r["data"] = json.loads(r["data"])
        return rows

    def last_event(self) -> int:
        with _journal_errors(self.path):
            rows = list(self.db.query("SELECT COALESCE(MAX(seq), 0) AS n FROM events"))
            return rows[0]["n"]

    def file(self, file_id: int) -> dict[str, Any] | None:
        with _journal_errors(self.path):
            rows = list(self.db.query(
                """SELECT f.*, (SELECT COALESCE(SUM(done), 0) FROM segments s WHERE s.file_id = f.id) AS bytes_done
                   FROM files f WHERE f.id = ?""", [file_id]))
            return rows[0] if rows else None

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction: every query inside it sees the journal as
        of one moment (WAL), so a list and the event number read with it
        agree exactly."""
        if self.db.conn.in_transaction:
            yield
            return
        with _journal_errors(self.path):
            self.db.execute("BEGIN")
        try:
            yield
        finally:
            with _journal_errors(self.path):
                if self.db.conn.in_transaction:
                    self.db.execute("COMMIT")

    def find_files(self, states: tuple[str, ...] = (), job_id: int | None = None, after: int = 0,
                   limit: int | None = None) -> list[dict[str, Any]]:
        """Files with their durable bytes, by state and job, in id order
        from after ``after``, at most ``limit`` (a page)."""
        sql = """SELECT f.*, (SELECT COALESCE(SUM(done), 0) FROM segments s WHERE s.file_id = f.id) AS bytes_done
                 FROM files f WHERE f.id > ?"""
        params: list[Any] = [after]
        if states:
            sql += f" AND f.state IN ({', '.join('?' * len(states))})"
            params += list(states)
        if job_id is not None:
            sql += " AND f.job_id = ?"
            params.append(job_id)
        sql += " ORDER BY f.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with _journal_errors(self.path):
            return list(self.db.query(sql, params))

    def job(self, job_id: int) -> dict[str, Any] | None:
        with _journal_errors(self.path):
            for r in self.db.query("SELECT * FROM jobs WHERE id = ?", [job_id]):
                return {**r, "spec": json.loads(r["spec"])}
            return None

    def job_counts(self, job_id: int | None = None) -> dict[int, dict[str, int]]:
        """Each job's files by state (one summary query over an index)."""
        sql = "SELECT job_id, state, COUNT(*) AS n FROM files"
        params: list[Any] = []
        if job_id is not None:
            sql += " WHERE job_id = ?"
            params.append(job_id)
        out: dict[int, dict[str, int]] = {}
        with _journal_errors(self.path):
            for r in self.db.query(sql + " GROUP BY job_id, state", params):
                out.setdefault(r["job_id"], {})[r["state"]] = r["n"]
        return out

    def service_limits(self) -> dict[str, int]:
        """The limits a service last set (bytes/s, 0: none)."""
        with _journal_errors(self.path):
            for r in self.db.query("SELECT max_speed, max_file_speed FROM limits WHERE id = 1"):
                return r
            return {"max_speed": 0, "max_file_speed": 0}

    def status_rows(self) -> list[dict[str, Any]]:
        with _journal_errors(self.path):
            return list(
                self.db.query(
                    """SELECT f.*, j.collection, j.state AS job_state, j.pid AS job_pid, j.heartbeat,
                              (SELECT COALESCE(SUM(done), 0) FROM segments s WHERE s.file_id = f.id) AS bytes_done
                       FROM files f LEFT JOIN jobs j ON j.id = f.job_id ORDER BY f.id"""
                )
            )


class Journal(JournalQueries):
    def __init__(self, path: Path | str | None = None, *, readonly: bool = False,
                 handed_over: bool = False) -> None:
        """``handed_over``: made on one thread, then used on another (one at
        a time), as the service's engine journal is."""
        self.path = Path(path) if path is not None else default_path()
        self.readonly = readonly
        with _journal_errors(self.path):
            if readonly:
                if not self.path.exists():
                    raise JournalError(f"no journal at {self.path}")
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
            else:
                from .storage import make_dirs

                make_dirs(self.path.parent)
                new = _private(self.path)
                conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=not handed_over)
            conn.isolation_level = None  # transactions are explicit (_Db.atomic)
            self.db = _Db(conn)
            self.db.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                if new:
                    self._sync_creation()
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.execute("PRAGMA foreign_keys = ON")
            self._check_schema()

    def _sync_creation(self) -> None:
        """A new journal's file and name, made durable before anything is
        committed to it.  SQLite syncs the folder for the WAL it creates,
        never for the database file itself: after a power cut the WAL could
        be there without the database it belongs to."""
        from .storage import fsync_dir

        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)

    def _applied(self) -> list[str]:
        if not list(self.db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'")):
            return []
        return [r["name"] for r in self.db.query(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid", [MIGRATION_SET])]

    def _check_schema(self) -> None:
        known = [fn.__name__ for fn in MIGRATION_STEPS]
        applied = set(self._applied())
        unknown = applied - set(known)
        if unknown:
            raise JournalError(
                f"journal {self.path} was written by a newer segdl "
                f"(schema {sorted(unknown)[-1]}); upgrade segdl or use another --journal"
            )
        if applied == set(known):
            return
        if self.readonly:
            raise JournalError(f"journal {self.path} has an older schema; run a segdl command that writes to it first")
        sqlite_utils, _ = _load_sqlite_utils_lean()
        _migrations().apply(sqlite_utils.Database(self.db.conn, execute_plugins=False))

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def atomic(self, durable: bool = False) -> Iterator[_Db]:
        """The one transaction helper every write goes through.  Commits
        are not synced (``synchronous=NORMAL``) unless ``durable``; a
        durable one makes every earlier commit durable too."""
        with _journal_errors(self.path):
            with self.db.atomic(durable) as db:
                yield db

    @contextmanager
    def turn(self) -> Iterator[None]:
        """The engine's loop: every write of one turn in one transaction,
        one commit (synced if a write was ``durable``); see ``_Db.turn``."""
        with _journal_errors(self.path):
            with self.db.turn():
                yield

    # ------------------------------------------------------------- jobs

    def create_job(self, dest: Path, spec: dict[str, Any], collection: str | None = None) -> int:
        with self.atomic() as db:
            cur = db.execute(
                "INSERT INTO jobs (created, dest, collection, spec, state) VALUES (?, ?, ?, ?, 'running')",
                [time.time(), str(dest), collection, json.dumps(spec)],
            )
            return cur.lastrowid

    def finish_job(self, job_id: int) -> None:
        with self.atomic() as db:
            db.execute("UPDATE jobs SET state = 'finished', pid = NULL WHERE id = ?", [job_id])

    def update_job(self, job_id: int, **fields: Any) -> None:
        with self.atomic() as db:
            db.execute(
                f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                [*fields.values(), job_id],
            )

    def heartbeat(self, job_ids: list[int], live: dict[int, tuple[float, int, list | None]],
                  durable: bool = True) -> None:
        """Live numbers for ``status``: file id -> (speed, received bytes,
        per-mirror stats).  Once a second; ``durable`` (every
        ``Settings.commit_interval``, 1 s by default) makes its commit the
        synced one, which bounds the recorded progress a power cut loses."""
        with self.atomic(durable=durable) as db:
            now = time.time()
            db.conn.executemany("UPDATE jobs SET heartbeat = ? WHERE id = ?", [(now, j) for j in job_ids])
            if live:
                db.conn.executemany(
                    "UPDATE files SET speed = ?, received = ?, mirrors = ? WHERE id = ?",
                    [(sp, rc, json.dumps(m) if m else None, fid) for fid, (sp, rc, m) in live.items()],
                )

    def drop_provisional(self, path: Path, keep: int) -> None:
        """A file registered under the name its URL gave it started under
        another (the server named it): its provisional row goes."""
        with self.atomic() as db:
            db.execute("""DELETE FROM files WHERE path = ? AND id != ? AND state = 'queued'
                          AND NOT EXISTS (SELECT 1 FROM segments WHERE file_id = files.id)""", [str(path), keep])

    def set_service_limits(self, max_speed: int, max_file_speed: int) -> None:
        """The service's limits, kept across restarts (a ``limits`` event
        when they change)."""
        with self.atomic() as db:
            db.execute("UPDATE limits SET max_speed = ?, max_file_speed = ? WHERE id = 1",
                       [max_speed, max_file_speed])

    def set_paused(self, file_ids: list[int], paused: bool) -> None:
        with self.atomic() as db:
            db.conn.executemany("UPDATE files SET paused = ? WHERE id = ?", [(int(paused), f) for f in file_ids])

    # ------------------------------------------------------------- files

    def put_file(self, job_id: int, url: str, path: Path, **fields: Any) -> int:
        """Create the row for ``path`` (or take it over for this job)."""
        now = time.time()
        with self.atomic() as db:
            existing = list(db.query("SELECT id FROM files WHERE path = ?", [str(path)]))
            if existing:
                fid = existing[0]["id"]
                sets = {"job_id": job_id, "url": url, "updated": now, **fields}
                db.execute(
                    f"UPDATE files SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                    [*sets.values(), fid],
                )
                return fid
            row = {"job_id": job_id, "url": url, "path": str(path), "state": "queued",
                   "created": now, "updated": now, **fields}
            cur = db.execute(
                f"INSERT INTO files ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                list(row.values()),
            )
            return cur.lastrowid

    def update_file(self, file_id: int, *, durable: bool = False, **fields: Any) -> None:
        fields["updated"] = time.time()
        with self.atomic(durable) as db:
            db.execute(
                f"UPDATE files SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                [*fields.values(), file_id],
            )

    def mark_verified(self, items: list[tuple[int, str, str | None, str | None]]) -> None:
        """(file id, blake3, sha256, git sha1) of files whose digests
        matched: one synced commit, made before any of them is renamed
        into place."""
        now = time.time()
        with self.atomic(durable=True) as db:
            db.conn.executemany(
                "UPDATE files SET state = 'verified', blake3 = ?, sha256 = ?, git_sha1 = ?, updated = ? WHERE id = ?",
                [(b3, sha, git, now, fid) for fid, b3, sha, git in items])

    def mark_done(self, items: list[tuple[int, float, int]]) -> None:
        """(file id, mtime, size) of files renamed into place."""
        now = time.time()
        with self.atomic() as db:
            db.conn.executemany(
                "UPDATE files SET state = 'done', mtime = ?, size = ?, updated = ? WHERE id = ?",
                [(mtime, size, now, fid) for fid, mtime, size in items])

    # ---------------------------------------------------------- segments

    def replace_segments(self, file_id: int, ranges: list[tuple[int, int | None]], **file_fields: Any) -> list[int]:
        """Start a file over: forget its segments, record a fresh plan and
        the file's new facts, all in one transaction."""
        with self.atomic() as db:
            db.execute("DELETE FROM segments WHERE file_id = ?", [file_id])
            ids = []
            for start, end in ranges:
                cur = db.execute(
                    'INSERT INTO segments (file_id, start, "end", done) VALUES (?, ?, ?, 0)',
                    [file_id, start, end],
                )
                ids.append(cur.lastrowid)
            if file_fields:
                file_fields["updated"] = time.time()
                db.execute(
                    f"UPDATE files SET {', '.join(f'{k} = ?' for k in file_fields)} WHERE id = ?",
                    [*file_fields.values(), file_id],
                )
            return ids

    def record(self, done: dict[int, int], splits: list[tuple[int, int, int, int]] = ()) -> dict[int, int]:
        """One commit of durable progress and accepted splits.

        ``done``: segment id -> durable bytes from its start.
        ``splits``: (segment id, new end, tail start, tail end); returns
        {segment id: tail segment id}.
        """
        tails: dict[int, int] = {}
        with self.atomic() as db:
            if done:
                db.conn.executemany(
                    "UPDATE segments SET done = MAX(done, ?) WHERE id = ?",
                    [(d, sid) for sid, d in done.items()],
                )
            for sid, new_end, t_start, t_end in splits:
                db.execute('UPDATE segments SET "end" = ? WHERE id = ?', [new_end, sid])
                fid = list(db.query("SELECT file_id FROM segments WHERE id = ?", [sid]))[0]["file_id"]
                cur = db.execute(
                    'INSERT INTO segments (file_id, start, "end", done) VALUES (?, ?, ?, 0)',
                    [fid, t_start, t_end],
                )
                tails[sid] = cur.lastrowid
        return tails

    # ------------------------------------------------------------ status

    # ------------------------------------------------------------- events

    def prune_progress(self, older_than: float) -> None:
        """Progress events are many and only the latest of each file
        matters after a while: drop the old ones (state events stay: they
        are the history)."""
        with self.atomic() as db:
            db.execute("DELETE FROM events WHERE kind = 'progress' AND time < ?", [older_than])

