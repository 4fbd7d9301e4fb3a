"""Jobs: a batch of requests becomes a job (its journal row, its runs in
the queue), and a job whose last file is final is recorded finished.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from .filerun import FileRun, JobRun
from .files import Files, Queued
from .intake import Intake
from ..journal.writer import Journal
from .limits import Limits
from ..values.request import Request, Settings, job_spec


class Jobs:
    def __init__(self, files: Files, journal: Journal, intake: Intake, limits: Limits, settings: Settings) -> None:
        self.files, self.journal, self.intake, self.limits, self.s = files, journal, intake, limits, settings

    def add(self, requests: list[Request], *, dest: Path | None = None, collection: str | None = None,
            source: dict | None = None, connections: int | None = None, force: bool | None = None,
            register: bool = False, priority: int = 0, reuse: int | None = None,
            origin: str | None = None) -> JobRun:
        """A new job for the loop (on the loop's thread).  ``register``:
        give every file its journal row (and id) now, so it can be paused,
        reprioritised or cancelled before it starts.  ``reuse``: continue
        the journal's job of that id (a restarted service)."""
        s = replace(self.s, dest=dest or self.s.dest, connections=connections or self.s.connections,
                    force=self.s.force if force is None else force)
        spec = job_spec(requests, s)
        if source:
            spec["source"] = source
        if origin:
            spec["origin"] = origin  # e.g. "serve": a restarted service continues it
        if reuse is not None:
            job_id = reuse
            self.journal.update_job(job_id, state="running")
        else:
            job_id = self.journal.create_job(s.dest, spec, collection)
        job = JobRun(job_id, Path(s.dest), s.connections, s.force, [None] * len(requests), collection,
                     left=len(requests))
        self.files.add_job(job)
        self.journal.update_job(job_id, pid=os.getpid(), heartbeat=time.time(),
                                max_speed=self.limits.get("max_speed"), max_file_speed=self.limits.get("max_file_speed"))
        if register:  # each a run now: it has a row, and can be changed before it starts
            runs = [FileRun(i, r, job, probe_retry=s.retry, priority=priority) for i, r in enumerate(requests)]
            self.intake.register(runs, restore=reuse is not None)
            self.files.enqueue(runs)
        else:
            self.files.enqueue(Queued(i, r, job, priority, s.retry) for i, r in enumerate(requests))
        if not requests:
            self.files.job_ended(job)
        return job

    def end_finished(self) -> None:
        """Record the jobs whose last file became final (at the end of the
        turn: ``job_ended`` is a job's last event, and its counts are the
        files' final states)."""
        for job in self.files.take_ended():
            self.journal.finish_job(job.id)
            job.root.close()
