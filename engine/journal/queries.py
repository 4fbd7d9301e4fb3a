"""The journal's reads: what the engine, ``status``, ``ls`` and the
service's API ask of it.  A SQLite door, like ``journal.py``: no write
happens here (the writer is :class:`~segdl.engine.journal.writer.Journal`, which
has these reads as a base class).

The engine's own reads hand back rows as dicts (its parts index them by
column); what ``status`` reads lives in ``journal_status.py``, as small
frozen values.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..rules import lifecycle
from .db import Db, journal_errors
from .schema import sql_set

_COMPLETE = sql_set(lifecycle.COMPLETE)
# What ``ls`` needs of a row to say here, partial or missing.
_PRESENCE = "id, path, state, size, mtime, blake3, sha256, git_sha1, etag, last_modified"


class JournalQueries:
    """The journal's reads (no transaction, no write): what status, ls,
    the service's API and the engine ask of it."""

    db: "Db"
    path: Path

    def control_state(self, job_ids: list[int]) -> tuple[dict[str, Any], dict[int, int]]:
        """What other processes asked of running jobs: the limits (of the
        oldest job), and the paused flag of each of their files."""
        marks = ", ".join("?" * len(job_ids))
        with journal_errors(self.path):
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
        with journal_errors(self.path):
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
        with journal_errors(self.path):
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
        with journal_errors(self.path):
            return list(self.db.query("SELECT * FROM jobs WHERE state = 'running' AND pid IS NOT NULL"))

    def all_jobs(self) -> list[dict[str, Any]]:
        with journal_errors(self.path):
            out = []
            for r in self.db.query(
                    "SELECT j.*, s.spec FROM jobs j LEFT JOIN job_specs s ON s.job_id = j.id ORDER BY j.id"):
                r["spec"] = json.loads(r["spec"] or "{}")
                out.append(r)
            return out

    def file_by_path(self, path: Path) -> dict[str, Any] | None:
        with journal_errors(self.path):
            rows = list(self.db.query("SELECT * FROM files WHERE path = ?", [str(path)]))
            return rows[0] if rows else None

    def files_by_path(self, paths: list[Path]) -> dict[str, dict[str, Any]]:
        """The rows of these paths, by path: a query per 500 paths, not one
        per path (``ls`` of a 100,000-file manifest)."""
        out: dict[str, dict[str, Any]] = {}
        names = [str(p) for p in paths]
        with journal_errors(self.path):
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                for r in self.db.query(f"SELECT {_PRESENCE} FROM files WHERE path IN ({', '.join('?' * len(chunk))})", chunk):
                    out[r["path"]] = r
        return out

    def files_with_digest(self, blake3: str | None, sha256: str | None,
                          git_sha1: str | None = None) -> list[dict[str, Any]]:
        """Finished files whose recorded digest matches."""
        with journal_errors(self.path):
            rows = []
            if git_sha1:
                rows += list(self.db.query(
                    "SELECT * FROM files WHERE git_sha1 = ? AND state IN " + _COMPLETE, [git_sha1.lower()]))
            if blake3:
                rows += list(self.db.query(
                    "SELECT * FROM files WHERE blake3 = ? AND state IN " + _COMPLETE, [blake3.lower()]))
            if sha256:
                rows += list(self.db.query(
                    "SELECT * FROM files WHERE sha256 = ? AND state IN " + _COMPLETE, [sha256.lower()]))
            return rows

    def done_bytes(self, file_id: int) -> int:
        """Durable bytes of a file (its segments' ``done``)."""
        with journal_errors(self.path):
            rows = list(self.db.query("SELECT COALESCE(SUM(done), 0) AS n FROM segments WHERE file_id = ?", [file_id]))
            return rows[0]["n"] if rows else 0

    def files(self, job_id: int | None = None) -> list[dict[str, Any]]:
        with journal_errors(self.path):
            if job_id is None:
                return list(self.db.query("SELECT * FROM files ORDER BY id"))
            return list(self.db.query("SELECT * FROM files WHERE job_id = ? ORDER BY id", [job_id]))

    def last_source(self, key: str) -> dict[str, Any] | None:
        """The ``source`` (a hub reference and the commit it was pinned
        to) of the latest job started from the reference ``key``."""
        with journal_errors(self.path):
            for r in self.db.query(
                    "SELECT spec FROM job_specs WHERE json_extract(spec, '$.source.key') = ? ORDER BY job_id DESC LIMIT 1",
                    [key]):
                return json.loads(r["spec"]).get("source")
            return None

    def segments(self, file_id: int) -> list[dict[str, Any]]:
        with journal_errors(self.path):
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
        with journal_errors(self.path):
            rows = list(self.db.query(sql + " ORDER BY seq LIMIT ?", [*params, limit]))
        for r in rows:
            r["data"] = json.loads(r["data"])
        return rows

    def last_event(self) -> int:
        with journal_errors(self.path):
            rows = list(self.db.query("SELECT COALESCE(MAX(seq), 0) AS n FROM events"))
            return rows[0]["n"]

    def file(self, file_id: int) -> dict[str, Any] | None:
        with journal_errors(self.path):
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
        with journal_errors(self.path):
            self.db.execute("BEGIN")
        try:
            yield
        finally:
            with journal_errors(self.path):
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
        with journal_errors(self.path):
            return list(self.db.query(sql, params))

    def job(self, job_id: int) -> dict[str, Any] | None:
        with journal_errors(self.path):
            for r in self.db.query("SELECT j.*, s.spec FROM jobs j LEFT JOIN job_specs s ON s.job_id = j.id "
                                   "WHERE j.id = ?", [job_id]):
                return {**r, "spec": json.loads(r["spec"] or "{}")}
            return None

    def job_counts(self, job_id: int | None = None) -> dict[int, dict[str, int]]:
        """Each job's files by state (one summary query over an index)."""
        sql = "SELECT job_id, state, COUNT(*) AS n FROM files"
        params: list[Any] = []
        if job_id is not None:
            sql += " WHERE job_id = ?"
            params.append(job_id)
        out: dict[int, dict[str, int]] = {}
        with journal_errors(self.path):
            for r in self.db.query(sql + " GROUP BY job_id, state", params):
                out.setdefault(r["job_id"], {})[r["state"]] = r["n"]
        return out

    def service_limits(self) -> dict[str, Any]:
        """The limits a service last set (bytes/s, 0: none), and its slow
        mode: ``slow``, and ``slow_before``, the limit it puts back."""
        with journal_errors(self.path):
            for r in self.db.query("SELECT max_speed, max_file_speed, slow_before FROM limits WHERE id = 1"):
                return {**r, "slow": r["slow_before"] is not None}
            return {"max_speed": 0, "max_file_speed": 0, "slow": False, "slow_before": None}

    def status_rows(self) -> list[dict[str, Any]]:
        with journal_errors(self.path):
            return list(
                self.db.query(
                    """SELECT f.*, j.collection, j.state AS job_state, j.pid AS job_pid, j.heartbeat,
                              (SELECT COALESCE(SUM(done), 0) FROM segments s WHERE s.file_id = f.id) AS bytes_done
                       FROM files f LEFT JOIN jobs j ON j.id = f.job_id ORDER BY f.id"""
                )
            )
