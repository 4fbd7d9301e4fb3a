"""What ``segdl status`` (and ``pause``, ``limit``) read from the journal,
as small frozen values rather than rows of columns.  A SQLite door, like
``journal.py``: reads only; :class:`~segdl.engine.journal.writer.Journal` has
them as a base class.

Every query here costs what its answer holds, not what the journal holds:
the summary is one ``GROUP BY`` over an index of (job, state, paused)
(m007), a listing filters by state through an index and stops at its
limit, and rows are streamed, never gathered.  What a state *shows as*
(a dead job's ``downloading`` is ``interrupted``) is decided in
:mod:`segdl.engine.doors.status`; this module is handed the SQL-shaped filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

from ..rules import lifecycle
from .db import Db, journal_errors
from .schema import sql_set


@dataclass(frozen=True)
class JobRow:
    """A job as status needs it: whose files, and whether it may be alive."""
    id: int
    collection: str | None
    dest: str
    state: str  # running | finished
    pid: int | None
    heartbeat: float | None


@dataclass(frozen=True)
class StateGroup:
    """The files of one job in one recorded state (and paused flag)."""
    job_id: int
    state: str
    paused: bool
    files: int
    size: int  # bytes, of the files whose size is known
    unknown_size: int  # files whose size is not known yet
    bytes_done: int  # durable bytes (all of a complete file)
    speed: float  # bytes/s of its downloading files, as last recorded


@dataclass(frozen=True)
class FileRow:
    """One file, as recorded (the state it shows as is status's to say)."""
    id: int
    job_id: int | None
    collection: str | None
    path: str
    url: str
    state: str
    paused: bool
    size: int | None
    bytes_done: int  # durable bytes: its segments' done
    received: int | None  # bytes arrived, durable or not (heartbeat)
    speed: float | None
    blake3: str | None
    error: str | None
    mirrors: str | None  # JSON, as the heartbeat recorded it


@dataclass(frozen=True)
class Target:
    """A file a command names (pause, resume)."""
    id: int
    path: str


@dataclass(frozen=True)
class StateFilter:
    """Which rows a shown state stands for: a recorded state and paused
    flag, and whether its job must be alive (None: either way)."""
    state: str
    paused: bool
    alive: bool | None


_COMPLETE = sql_set(lifecycle.COMPLETE)
_SEGMENTS_DONE = "(SELECT COALESCE(SUM(done), 0) FROM segments s WHERE s.file_id = f.id)"
# The bytes a row counts as done: all of a complete file, else its
# durable segments, or what arrived if a moving file got further.
_MOVING = sql_set(lifecycle.ACTIVE | {lifecycle.PAUSED})
_BYTES_DONE = (f"CASE WHEN f.state IN {_COMPLETE} THEN COALESCE(f.size, 0) "
               f"ELSE MAX({_SEGMENTS_DONE}, CASE WHEN f.state IN {_MOVING} THEN COALESCE(f.received, 0) ELSE 0 END) END")


class StatusQueries:
    db: "Db"
    path: Any

    def status_jobs(self, collection: str | None = None) -> list[JobRow]:
        """Every job (of ``collection``), oldest first."""
        sql = "SELECT id, collection, dest, state, pid, heartbeat FROM jobs"
        params: list[Any] = []
        if collection is not None:
            sql += " WHERE collection = ?"
            params.append(collection)
        with journal_errors(self.path):
            return [JobRow(*r) for r in self.db.execute(sql + " ORDER BY id", params)]

    def state_groups(self, job_ids: list[int]) -> list[StateGroup]:
        """Files by job, state and paused flag: counts, sizes, bytes, speed
        (one summary query; its cost grows with the files that are not
        complete, whose bytes come from their segments)."""
        if not job_ids:
            return []
        marks = ", ".join("?" * len(job_ids))
        sql = f"""SELECT f.job_id, f.state, f.paused, COUNT(*), COALESCE(SUM(f.size), 0),
                         COUNT(*) - COUNT(f.size), COALESCE(SUM({_BYTES_DONE}), 0),
                         COALESCE(SUM(CASE WHEN f.state = '{lifecycle.DOWNLOADING}' THEN f.speed END), 0)
                  FROM files f WHERE f.job_id IN ({marks})
                  GROUP BY f.job_id, f.state, f.paused"""
        with journal_errors(self.path):
            return [StateGroup(j, s, bool(p), n, size, unknown, done, speed)
                    for j, s, p, n, size, unknown, done, speed in self.db.execute(sql, job_ids)]

    def status_files(self, job_ids: list[int], alive: list[int], states: list[StateFilter] | None = None,
                     glob: str | None = None, limit: int | None = None) -> Iterator[FileRow]:
        """The files of ``job_ids`` in id order, streamed.  ``states``: only
        rows one of these filters takes (``alive``: the jobs that are);
        ``glob``: only paths it matches (SQLite GLOB: case-sensitive, ``*``
        crosses folders); at most ``limit``."""
        if not job_ids or states == []:
            return
        marks = ", ".join("?" * len(job_ids))
        sql = f"""SELECT f.id, f.job_id, j.collection, f.path, f.url, f.state, f.paused, f.size,
                         {_SEGMENTS_DONE}, f.received, f.speed, f.blake3, f.error, f.mirrors
                  FROM files f JOIN jobs j ON j.id = f.job_id WHERE f.job_id IN ({marks})"""
        params: list[Any] = list(job_ids)
        if states is not None:
            recorded = sorted({s.state for s in states})
            sql += f" AND f.state IN ({', '.join('?' * len(recorded))}) AND ("
            params += recorded
            alive_marks = ", ".join("?" * len(alive))  # SQLite takes "IN ()": none
            terms = []
            for s in states:
                term = "(f.state = ? AND f.paused = ?"
                params += [s.state, int(s.paused)]
                if s.alive is not None:
                    term += f" AND f.job_id {'' if s.alive else 'NOT '}IN ({alive_marks})"
                    params += list(alive)
                terms.append(term + ")")
            sql += " OR ".join(terms) + ")"
        if glob is not None:
            sql += " AND f.path GLOB ?"
            params.append(glob)
        sql += " ORDER BY f.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with journal_errors(self.path):
            cur = self.db.execute(sql, params)
            while True:
                batch = cur.fetchmany(500)
                if not batch:
                    return
                for r in batch:
                    yield FileRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), *r[7:])

    def targets(self, target: str) -> list[Target]:
        """The files TARGET names: a file id, a path, a URL or a collection."""
        return [Target(r["id"], r["path"]) for r in self.resolve_targets(target)]  # type: ignore[attr-defined]

    def running_job_ids(self) -> list[int]:
        """Jobs a process runs now (or ran until it died)."""
        return [r["id"] for r in self.running_jobs()]  # type: ignore[attr-defined]
