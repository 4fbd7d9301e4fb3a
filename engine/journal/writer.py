"""The journal of jobs, files (sub-resources) and segments: opening it,
and every write.

Rules this module keeps for everyone:

* Every write goes through :meth:`Journal.atomic` (one transaction).
* A segment's ``done`` only ever records bytes that an ``fdatasync`` has
  already made durable; callers hand in positions they got from a
  :class:`~segdl.engine.values.messages.Durable` or ``Finished`` event.
* WAL with ``synchronous=NORMAL``: a power cut may lose the last commits,
  never corrupt the file; since data is synced *before* each commit, an
  older journal state always claims less than is on disk, never more.
  Two kinds of commit are synced (``durable``): the heartbeat, once a
  second, which bounds the progress a power cut can lose; and a file's
  ``verified``, which must be on disk before its part file is renamed.
* The schema is versioned with sqlite-utils ``Migrations``; a journal that
  carries migrations this segdl does not know is refused, not guessed at.

The journal is five modules, the only ones that talk to SQLite: this
one opens the journal and writes to it; ``journal_db.py`` is the
connection (one transaction helper, SQLite's errors named);
``journal_schema.py`` the schema, its migrations and triggers;
``journal_queries.py`` (the engine's reads) and ``journal_status.py``
(``status``'s summary and listing, as frozen values) the reads.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..values.errors import JournalError
from .queries import JournalQueries
from .db import Db, journal_errors
from .schema import EVENT_KINDS, MIGRATION_STEPS, bring_up_to_date
from .status import StatusQueries

__all__ = ["EVENT_KINDS", "MIGRATION_STEPS", "Journal", "default_path"]


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


_KEPT = object()  # (set_service_limits: slow mode as the limit says)


class Journal(StatusQueries, JournalQueries):
    def __init__(self, path: Path | str | None = None, *, readonly: bool = False,
                 handed_over: bool = False) -> None:
        """``handed_over``: made on one thread, then used on another (one at
        a time), as the service's engine journal is."""
        self.path = Path(path) if path is not None else default_path()
        self.readonly = readonly
        with journal_errors(self.path):
            if readonly:
                if not self.path.exists():
                    raise JournalError(f"no journal at {self.path}")
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
            else:
                from ..disk.storage import make_dirs

                make_dirs(self.path.parent)
                new = _private(self.path)
                conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=not handed_over)
            conn.isolation_level = None  # transactions are explicit (Db.atomic)
            self.db = Db(conn)
            self.db.execute("PRAGMA busy_timeout = 30000")
            if not readonly:
                self.db.execute("PRAGMA journal_mode = WAL")
                if new:
                    self._sync_creation()
                self.db.execute("PRAGMA synchronous = NORMAL")
                self.db.execute("PRAGMA foreign_keys = ON")
            self._check_schema()
            if not readonly:
                # Temporary storage in memory: above all the statement and
                # savepoint journals (the pages a statement or savepoint
                # changes, kept to roll it back alone), which went to a
                # temporary file in /var/tmp, a 4-byte and a 4 KiB write
                # for every page first touched, on the engine's loop (most
                # of a 20,000-file run's write calls).  They are never read
                # after a crash.  Set after the migrations, whose index
                # builds on an old, large journal may still sort on disk.
                self.db.execute("PRAGMA temp_store = MEMORY")
        # The device of the journal's file system when one syncfs there
        # makes its commits durable (None: read-only, or not such a file
        # system): a finishing's syncfs on it, before its renames, makes
        # the turn's commit of those files durable without a sync of its
        # own (Finishing.covered).
        self.syncfs_dev: int | None = None
        if not readonly:
            from ..disk.storage import syncfs_device

            self.syncfs_dev = syncfs_device(self.path.parent)

    def _sync_creation(self) -> None:
        """A new journal's file and name, made durable before anything is
        committed to it.  SQLite syncs the folder for the WAL it creates,
        never for the database file itself: after a power cut the WAL could
        be there without the database it belongs to."""
        from ..disk.storage import disk_errors, fsync_dir

        with disk_errors(f"cannot create the journal {self.path}"):
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.path.parent)

    def _check_schema(self) -> None:
        bring_up_to_date(self.db, self.path, self.readonly)
        # SQLite before 3.35 cannot drop a column: m008 left jobs.spec (NOT
        # NULL, now unused), which a new job's row must then fill.
        self._spec_column = any(r["name"] == "spec" for r in self.db.query("PRAGMA table_info(jobs)"))

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def atomic(self, durable: bool = False, one: bool = False) -> Iterator[Db]:
        """The one transaction helper every write goes through.  Commits
        are not synced (``synchronous=NORMAL``) unless ``durable``; a
        durable one makes every earlier commit durable too.  ``one``: the
        block writes with a single statement (see ``Db.atomic``)."""
        with journal_errors(self.path):
            with self.db.atomic(durable, one) as db:
                yield db

    @contextmanager
    def turn(self) -> Iterator[None]:
        """The engine's loop: every write of one turn in one transaction,
        one commit (synced if a write was ``durable``); see ``_Db.turn``."""
        with journal_errors(self.path):
            with self.db.turn():
                yield

    # ------------------------------------------------------------- jobs

    def create_job(self, dest: Path, spec: dict[str, Any], collection: str | None = None) -> int:
        with self.atomic() as db:
            cur = db.execute(
                "INSERT INTO jobs (created, dest, collection, state) VALUES (?, ?, ?, 'running')"
                if not self._spec_column else
                "INSERT INTO jobs (created, dest, collection, state, spec) VALUES (?, ?, ?, 'running', '')",
                [time.time(), str(dest), collection],
            )
            db.execute("INSERT INTO job_specs (job_id, spec) VALUES (?, ?)", [cur.lastrowid, json.dumps(spec)])
            return cur.lastrowid

    def set_job_spec(self, job_id: int, spec: dict[str, Any]) -> None:
        with self.atomic() as db:
            db.execute("UPDATE job_specs SET spec = ? WHERE job_id = ?", [json.dumps(spec), job_id])

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

    def set_service_limits(self, max_speed: int, max_file_speed: int, slow_before: Any = _KEPT) -> None:
        """The service's limits, kept across restarts, and its slow mode
        (``slow_before``: the limit it puts back; None: off).  Not given,
        slow mode holds while ``max_speed`` is the one it set, and ends
        with another.  A ``limits`` event when they change."""
        with self.atomic() as db:
            if slow_before is _KEPT:  # (SET reads the row as it was before this UPDATE)
                db.execute("UPDATE limits SET slow_before = CASE WHEN max_speed = ? THEN slow_before END, "
                           "max_speed = ?, max_file_speed = ? WHERE id = 1", [max_speed, max_speed, max_file_speed])
            else:
                db.execute("UPDATE limits SET max_speed = ?, max_file_speed = ?, slow_before = ? WHERE id = 1",
                           [max_speed, max_file_speed, slow_before])

    def set_paused(self, file_ids: list[int], paused: bool) -> None:
        with self.atomic() as db:
            db.conn.executemany("UPDATE files SET paused = ? WHERE id = ?", [(int(paused), f) for f in file_ids])

    # ------------------------------------------------------------- files

    def put_file(self, job_id: int, url: str, path: Path, row_id: int | None = 0, **fields: Any) -> int:
        """Create the row for ``path`` (or take it over for this job).
        ``row_id``: the caller has just read the path's row (its id, or None
        when there is none), so it is not looked up again; 0 (no row has
        it), the default: look it up here."""
        now = time.time()
        with self.atomic(one=True) as db:  # (the SELECT writes nothing)
            if row_id == 0:
                existing = list(db.query("SELECT id FROM files WHERE path = ?", [str(path)]))
                row_id = existing[0]["id"] if existing else None
            if row_id is not None:
                fid = row_id
                sets = {"job_id": job_id, "url": url, "updated": now, **fields}
                if "state" in fields:  # (a file set going anew: its last re-verify says nothing of it now)
                    sets.setdefault("checked", None)
                    sets.setdefault("checked_at", None)
                db.execute(
                    f"UPDATE files SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                    [*sets.values(), fid],
                )
                return fid
            return _insert_file(db, job_id, url, path, now, fields).lastrowid

    def add_file(self, job_id: int, url: str, path: Path, **fields: Any) -> int | None:
        """A new row for ``path``; None, and nothing written, when a row has
        that path already (another process's, added since it was looked
        up)."""
        with self.atomic(one=True) as db:
            cur = _insert_file(db, job_id, url, path, time.time(), fields, " ON CONFLICT(path) DO NOTHING")
            return cur.lastrowid if cur.rowcount == 1 else None

    def add_files(self, rows: list[tuple[int, str, Path, dict[str, Any]]]) -> list[int | None]:
        """New rows, (job id, url, path, fields) each, as :meth:`add_file`
        adds one: in statements of many rows (each statement on the
        engine's loop gives up the GIL); their ids, None for a path that
        has a row already.  The rows' fields name the same columns."""
        if not rows or sqlite3.sqlite_version_info < (3, 35):  # (no RETURNING before 3.35)
            return [self.add_file(j, u, p, **f) for j, u, p, f in rows]
        now = time.time()
        ids: dict[str, int] = {}
        with self.atomic() as db:
            for i in range(0, len(rows), _ROWS_AT_ONCE):
                chunk = rows[i:i + _ROWS_AT_ONCE]
                built = [_file_row(job_id, url, path, now, fields) for job_id, url, path, fields in chunk]
                cols = list(built[0])
                values = [row[c] for row in built for c in cols]
                one = f"({', '.join('?' * len(cols))})"
                for r in db.query(f"INSERT INTO files ({', '.join(cols)}) VALUES {', '.join([one] * len(chunk))} "
                                  "ON CONFLICT(path) DO NOTHING RETURNING id, path", values):
                    ids[r["path"]] = r["id"]
        return [ids.get(str(p)) for _, _, p, _ in rows]

    def update_file(self, file_id: int, *, durable: bool = False, **fields: Any) -> None:
        fields["updated"] = time.time()
        with self.atomic(durable, one=True) as db:
            db.execute(
                f"UPDATE files SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                [*fields.values(), file_id],
            )

    def delete_file(self, file_id: int) -> None:
        """Forget a file: its row and its segments go (a ``removed`` event
        with ``deleted`` says so)."""
        with self.atomic(one=True) as db:
            db.execute("DELETE FROM files WHERE id = ?", [file_id])

    def mark_verified(self, items: list[tuple[int, str, str | None, str | None]], durable: bool = True) -> None:
        """(file id, blake3, sha256, git sha1) of files whose digests
        matched: one commit, durable before any of them is renamed into
        place: synced, unless the caller's rename makes it durable
        (``durable`` False: a syncfs of the journal's file system before
        the renames, see ``storage.finalize_many``)."""
        now = time.time()
        with self.atomic(durable=durable) as db:
            db.conn.executemany(
                "UPDATE files SET state = 'verified', blake3 = ?, sha256 = ?, git_sha1 = ?, updated = ?, checked = NULL, "
                "checked_at = NULL WHERE id = ?",
                [(b3, sha, git, now, fid) for fid, b3, sha, git in items])

    def mark_done(self, items: list[tuple[int, float, int]]) -> None:
        """(file id, mtime, size) of files renamed into place."""
        now = time.time()
        with self.atomic() as db:
            db.conn.executemany(
                "UPDATE files SET state = 'done', mtime = ?, size = ?, updated = ?, checked = NULL, checked_at = NULL "
                "WHERE id = ?",
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


#: Rows in one INSERT of :meth:`Journal.add_files` (about 25 columns each:
#: SQLite takes 32,766 values in a statement since 3.32).
_ROWS_AT_ONCE = 500


def _file_row(job_id: int, url: str, path: Path, now: float, fields: dict[str, Any]) -> dict[str, Any]:
    """A new file's row: queued unless ``fields`` say otherwise."""
    return {"job_id": job_id, "url": url, "path": str(path), "state": "queued", "created": now, "updated": now,
            **fields}


def _insert_file(db: Db, job_id: int, url: str, path: Path, now: float, fields: dict[str, Any], tail: str = ""):
    """INSERT a file's row (see :func:`_file_row`); ``tail`` ends the
    statement (an ON CONFLICT clause)."""
    row = _file_row(job_id, url, path, now, fields)
    return db.execute(f"INSERT INTO files ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)}){tail}",
                      list(row.values()))
