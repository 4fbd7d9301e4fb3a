"""The journal's schema: tables, indexes and triggers, as versioned
migrations.  A SQLite door (see ``journal.py``); the state names the
triggers test come from :mod:`segdl.engine.rules.lifecycle`.

The schema is versioned with sqlite-utils ``Migrations``: each step is a
function below, applied once, in order, and recorded by name; a journal
that carries a step this segdl does not know is refused, not guessed at.
An old journal is brought up to date when a command that writes opens it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..rules import lifecycle
from ..values.errors import JournalError
from .db import Db

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
               "job_added", "job_ended", "limits", "checked")

_NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # unixepoch('subsec') before SQLite 3.42


def sql_set(states) -> str:
    """A set of the lifecycle's states as SQL: ('a', 'b')."""
    return "(" + ", ".join(f"'{s}'" for s in sorted(states)) + ")"


# The event a file's new state makes; the lifecycle names the groups.
_EVENT_KIND = ("CASE WHEN NEW.state IN " + sql_set(lifecycle.COMPLETE) + " THEN 'finished' "
               "WHEN NEW.state IN " + sql_set(lifecycle.FAILURES) + " THEN 'failed' "
               f"WHEN NEW.state = '{lifecycle.REMOVED}' THEN 'removed' ELSE 'state' END")
_FAILURES = sql_set(lifecycle.FAILURES)


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
                {_EVENT_KIND},
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
                                       AND state IN {_FAILURES})));
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
                            'speed', CASE WHEN NEW.state = '{lifecycle.DOWNLOADING}' THEN COALESCE(NEW.speed, 0) ELSE 0 END,
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


def applied_steps(db: Db) -> list[str]:
    """The migrations a journal has had, in the order they ran."""
    if not list(db.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'")):
        return []
    return [r["name"] for r in db.query(
        "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid", [MIGRATION_SET])]


def bring_up_to_date(db: Db, path: Path, readonly: bool) -> None:
    """Refuse a journal from a newer segdl; apply the steps an older one
    lacks (a read-only opening cannot: it says which command to run)."""
    known = [fn.__name__ for fn in MIGRATION_STEPS]
    applied = set(applied_steps(db))
    unknown = applied - set(known)
    if unknown:
        raise JournalError(
            f"journal {path} was written by a newer segdl "
            f"(schema {sorted(unknown)[-1]}); upgrade segdl or use another --journal"
        )
    if applied == set(known):
        return
    if readonly:
        raise JournalError(f"journal {path} has an older schema; run a segdl command that writes to it first")
    sqlite_utils, _ = _load_sqlite_utils_lean()
    _migrations().apply(sqlite_utils.Database(db.conn, execute_plugins=False))



@_migration
def m007_status_at_scale(db) -> None:
    """``segdl status`` counts a job's files by state and paused flag in one
    ``GROUP BY``: an index in that order reads them in groups, with no
    sort (half the time on 100,000 files).  It starts with (job_id) and
    (job_id, state), so those two indexes go: each was one more b-tree
    written for every file added or changed."""
    db.executescript(
        """
        CREATE INDEX files_job_state_paused ON files(job_id, state, paused);
        DROP INDEX files_job_state;
        DROP INDEX files_job;
        """
    )


@_migration
def m008_job_specs(db) -> None:
    """A job's spec (every request of it, as JSON: 10 MB for 100,000 files)
    moves out of its ``jobs`` row into ``job_specs``.  SQLite rewrites a
    whole row for any change to it, and a running job's row changes every
    second (its heartbeat): with the spec in it, each heartbeat rewrote
    the spec into the WAL (14 ms for 20,000 files, 49 ms and 15 MB for
    100,000)."""
    db.executescript(
        """
        CREATE TABLE job_specs (
            job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
            spec TEXT NOT NULL            -- JSON: how to run the job again
        );
        INSERT INTO job_specs (job_id, spec) SELECT id, spec FROM jobs;
        """
    )
    import sqlite3

    if sqlite3.sqlite_version_info >= (3, 35):
        db.executescript("ALTER TABLE jobs DROP COLUMN spec;")
    else:  # (no DROP COLUMN before SQLite 3.35: the column stays, empty)
        db.executescript("UPDATE jobs SET spec = '';")


@_migration
def m009_checks_and_slow_mode(db) -> None:
    """What the last re-verify (``segdl verify``, the page's) found of a
    file, and when: ``ok``, ``corrupt`` or ``missing`` (cleared when the
    file is downloaded again), told by a ``checked`` event.  The service's slow mode: the limit to put
    back when it ends (NULL: slow mode is off), so every client of the
    service, and a restarted one, sees it; a ``limits`` event says so."""
    db.executescript(
        f"""
        ALTER TABLE files ADD COLUMN checked TEXT;
        ALTER TABLE files ADD COLUMN checked_at REAL;
        ALTER TABLE limits ADD COLUMN slow_before INTEGER;
        DROP TRIGGER events_limits;
        CREATE TRIGGER events_limits AFTER UPDATE ON limits
            WHEN NEW.max_speed IS NOT OLD.max_speed OR NEW.max_file_speed IS NOT OLD.max_file_speed
                 OR NEW.slow_before IS NOT OLD.slow_before BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'limits', NULL, NULL,
                json_object('max_speed', NEW.max_speed, 'max_file_speed', NEW.max_file_speed,
                            'slow', json(CASE WHEN NEW.slow_before IS NULL THEN 'false' ELSE 'true' END),
                            'slow_before', NEW.slow_before));
        END;
        CREATE TRIGGER events_file_checked AFTER UPDATE OF checked, checked_at ON files
            WHEN NEW.checked IS NOT OLD.checked OR NEW.checked_at IS NOT OLD.checked_at BEGIN
            INSERT INTO events (time, kind, job_id, file_id, data) VALUES ({_NOW}, 'checked', NEW.job_id, NEW.id,
                json_object('checked', json(CASE WHEN NEW.checked IS NULL THEN NULL
                                                 ELSE json_object('result', NEW.checked, 'at', NEW.checked_at) END)));
        END;
        """
    )
