"""What ``segdl status`` shows: a line per collection or job, or the files,
each in the state a person wants to see (a ``downloading`` file whose
job died is ``interrupted``), with bytes, speed and ETA.

The rules (liveness, the shown state, ETA, a group's figures) are pure
functions of values; :func:`summary` and :func:`files` read the journal's
typed queries (:mod:`segdl.engine.journal.status`) and apply them.  The
work is proportional to the jobs and the lines asked for: the summary is
one ``GROUP BY``, and a filter on the shown state becomes SQL.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Callable, Iterator

from ..rules import lifecycle
from ..journal.status import FileRow, JobRow, StateFilter, StateGroup

INTERRUPTED = "interrupted"  # shown only: its job is gone, the file is resumable
HEARTBEAT_STALE = 10.0  # seconds: a job that has not written for this long is not alive
SHOWN_STATES = (*lifecycle.RECORDED, INTERRUPTED)


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def job_alive(job: JobRow, now: float, pid_exists: Callable[[int], bool] = pid_exists) -> bool:
    """A job is alive while it is running, wrote its heartbeat lately and
    its process (if recorded) exists."""
    if job.state != "running" or not job.heartbeat or now - job.heartbeat >= HEARTBEAT_STALE:
        return False
    return not job.pid or pid_exists(job.pid)


def shown_state(state: str, paused: bool, alive: bool) -> str:
    """The state a file shows as, from its recorded state, its paused flag
    and whether its job is alive."""
    if state in lifecycle.ACTIVE or state in (lifecycle.QUEUED, lifecycle.PAUSED):
        if not alive:
            if paused:
                return lifecycle.PAUSED
            return INTERRUPTED if state != lifecycle.QUEUED else lifecycle.QUEUED
        if paused:
            return lifecycle.PAUSED
    return state


def state_filters(wanted: tuple[str, ...]) -> list[StateFilter]:
    """The (recorded state, paused, alive) combinations that show as one of
    ``wanted``: the SQL form of a filter on shown states.  Exact, because
    :func:`shown_state` is tried on every combination."""
    out = []
    for state, paused in product(lifecycle.RECORDED, (False, True)):
        alive = [a for a in (True, False) if shown_state(state, paused, a) in wanted]
        if alive:
            out.append(StateFilter(state, paused, alive[0] if len(alive) == 1 else None))
    return out


def eta(size: int | None, done: int, speed: float, final: bool) -> float | None:
    """Seconds left at the current speed: 0 once complete, None when it
    cannot be said (no speed, no size)."""
    if final:
        return 0.0
    if speed > 0 and size is not None:
        return round(max(0, size - done) / speed, 1)
    return None


@dataclass(frozen=True)
class GroupLine:
    """One line of the summary: a collection (or a job without one)."""
    name: str
    collection: str | None
    job_ids: tuple[int, ...]
    counts: tuple[tuple[str, int], ...]  # shown state -> files, by state name
    files: int
    bytes_done: int
    size: int  # bytes of the files whose size is known
    unknown_size: int  # files of unknown size
    speed: float
    eta: float | None

    def as_json(self) -> dict:
        return {"collection": self.collection, "name": self.name, "jobs": list(self.job_ids),
                "counts": dict(self.counts), "files": self.files, "bytes_done": self.bytes_done,
                "size": self.size, "unknown_size": self.unknown_size, "speed": self.speed, "eta": self.eta}


@dataclass(frozen=True)
class FileLine:
    """One file as status shows it (and ``--json`` prints it)."""
    id: int
    collection: str | None
    path: str
    url: str  # redacted: no query string, no password
    state: str
    size: int | None
    bytes_done: int
    speed: float
    eta: float | None
    blake3: str | None
    error: str | None
    mirrors: list | None

    def as_json(self) -> dict:
        return {"id": self.id, "collection": self.collection, "path": self.path, "url": self.url,
                "state": self.state, "size": self.size, "bytes_done": self.bytes_done, "speed": self.speed,
                "eta": self.eta, "blake3": self.blake3, "error": self.error, "mirrors": self.mirrors}


def group_line(name: str, collection: str | None, groups: list[StateGroup], alive: set[int]) -> GroupLine:
    """A collection's (or a job's) figures from its state groups."""
    counts: dict[str, int] = {}
    done = size = unknown = 0
    speed = 0.0
    open_size = 0  # bytes of the files not complete yet, and their done bytes
    open_done = 0
    open_unknown = False
    for g in groups:
        live = g.job_id in alive
        shown = shown_state(g.state, g.paused, live)
        counts[shown] = counts.get(shown, 0) + g.files
        done += g.bytes_done
        size += g.size
        unknown += g.unknown_size
        if shown == lifecycle.DOWNLOADING:
            speed += g.speed
        if g.state not in lifecycle.FINAL:
            open_size += g.size
            open_done += g.bytes_done
            open_unknown = open_unknown or g.unknown_size > 0
    everything_final = all(g.state in lifecycle.FINAL for g in groups)
    left = eta(None if open_unknown else open_size, open_done, speed, everything_final)
    return GroupLine(name, collection, tuple(sorted({g.job_id for g in groups})), tuple(sorted(counts.items())),
                     sum(counts.values()), done, size, unknown, speed, left)


def file_line(row: FileRow, alive: bool) -> FileLine:
    from ..inputs.naming import redact_url

    state = shown_state(row.state, row.paused, alive)
    complete = state in lifecycle.COMPLETE
    moving = state in lifecycle.ACTIVE or state == lifecycle.PAUSED
    if complete:
        done = row.size or 0
    else:
        done = max(row.bytes_done or 0, row.received or 0) if moving else (row.bytes_done or 0)
    speed = (row.speed or 0.0) if state == lifecycle.DOWNLOADING else 0.0
    return FileLine(row.id, row.collection, row.path, redact_url(row.url), state, row.size, done, speed,
                    eta(row.size, done, speed, complete),
                    row.blake3, row.error, json.loads(row.mirrors) if row.mirrors else None)


def _open(journal_path: Path | None):
    from ..journal.writer import Journal

    return Journal(journal_path, readonly=True)


def _alive_jobs(jobs: list[JobRow], now: float) -> set[int]:
    return {j.id for j in jobs if job_alive(j, now)}


def summary(journal_path: Path | None, collection: str | None = None,
            now: float | None = None) -> list[GroupLine]:
    """One line per collection, and per job of no collection, oldest first."""
    j = _open(journal_path)
    try:
        with j.reading():
            jobs = j.status_jobs(collection)
            groups = j.state_groups([x.id for x in jobs])
    finally:
        j.close()
    alive = _alive_jobs(jobs, time.time() if now is None else now)
    by_job: dict[int, list[StateGroup]] = {}
    for g in groups:
        by_job.setdefault(g.job_id, []).append(g)
    lines: dict[str, tuple[str | None, list[StateGroup]]] = {}
    for job in jobs:
        if job.id not in by_job:
            continue
        name = job.collection if job.collection is not None else f"job {job.id}"
        lines.setdefault(name, (job.collection, []))[1].extend(by_job[job.id])
    return [group_line(name, coll, gs, alive) for name, (coll, gs) in lines.items()]


def files(journal_path: Path | None, collection: str | None = None, states: tuple[str, ...] = (),
          glob: str | None = None, limit: int | None = None, now: float | None = None) -> Iterator[FileLine]:
    """The files (of ``collection``, showing one of ``states``, whose path
    matches ``glob``), in id order, at most ``limit``, streamed."""
    unknown = [s for s in states if s not in SHOWN_STATES]
    if unknown:
        raise ValueError(f"unknown state {unknown[0]!r}; one of: {', '.join(SHOWN_STATES)}")
    j = _open(journal_path)
    try:
        with j.reading():
            jobs = j.status_jobs(collection)
            alive = _alive_jobs(jobs, time.time() if now is None else now)
            filters = state_filters(states) if states else None
            for row in j.status_files([x.id for x in jobs], sorted(alive), filters, glob, limit):
                yield file_line(row, row.job_id in alive)
    finally:
        j.close()
