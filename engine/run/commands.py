"""What a client asks of a running engine (``segdl serve``'s API, the TUI):
add a job, pause or resume a file, change its priority or speed, cancel it,
change the limits, retry the failures.

Each method runs on the loop's thread (through ``Coordinator.submit``), so
it may touch the loop's state freely; each returns a small JSON-able dict
and raises ``LookupError`` for an unknown file, ``ConflictError`` for a
file whose state does not allow the change.  Values come checked
(:mod:`~segdl.engine.doors.validation`, in :class:`~segdl.engine.doors.service.Service`):
a command applies all of a request or, when it raises, none of it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..rules import lifecycle
from ..disk import storage
from ..values.errors import ConflictError, SegdlError
from .files import Files
from ..journal.writer import Journal
from .limits import Limits
from ..values.request import Request, request_from_spec
from ..values.results import FileResult
from ..rules.scheduler import Scheduler


class Commands:
    def __init__(self, files: Files, journal: Journal, sched: Scheduler, limits: Limits, on_result, *,
                 jobs: "Jobs", intake: "Intake", dispatch: "Dispatch", finishing: "Finishing",
                 control: "Control") -> None:
        self.files, self.journal, self.sched, self.limits, self.on_result = files, journal, sched, limits, on_result
        self.jobs, self.intake, self.dispatch, self.finishing, self.control = jobs, intake, dispatch, finishing, control

    def add(self, requests: list[Request], *, dest: Path, collection: str | None = None,
            source: dict | None = None, connections: int | None = None, priority: int = 0,
            reuse: int | None = None) -> dict:
        job = self.jobs.add(requests, dest=dest, collection=collection, source=source,
                            connections=connections, register=True, priority=priority, reuse=reuse,
                            origin="serve")
        ids = ([r.id for r in self.files.queued() if r.job is job]
               + [r.id for r in self.files.runs.values() if r.job is job])
        return {"job": job.id, "files": sorted(i for i in ids if i)}

    def _find(self, fid: int):
        run = self.files.runs.get(fid) or self.files.find_waiting(fid)
        if run is None:
            if self.journal.file(fid) is None:
                raise LookupError(f"no file {fid}")
            raise ConflictError(f"file {fid} is not running (see its state); only a running or queued file changes")
        return run

    def running(self, fid: int) -> bool:
        """The file runs or waits in this engine (it can be cancelled)."""
        run = self.files.runs.get(fid) or self.files.find_waiting(fid)
        return run is not None and not lifecycle.is_final(run.state)

    def set_file(self, fid: int, *, paused: bool | None = None, priority: int | None = None,
                 max_speed: int | None = None) -> None:
        """Change a running or queued file: all of it in one commit (one
        ``changed`` event, and a ``state`` event when it pauses or
        resumes)."""
        run = self._find(fid)
        if paused is not None and run.state not in (lifecycle.QUEUED, lifecycle.DOWNLOADING, lifecycle.PAUSED):
            raise ConflictError(f"file {fid} is {run.state}: it cannot pause or resume now")
        with self.journal.atomic():
            if priority is not None and priority != run.priority:
                self.intake.reprioritise(run, priority)
                self.sched.set_priority(fid, priority)
                self.journal.update_file(fid, priority=priority)
            if max_speed is not None and max_speed != run.speed_cap:
                run.speed_cap = max_speed
                self.limits.changed()
                self.journal.update_file(fid, max_speed=max_speed or None)
            if paused is not None and paused != run.paused:
                if run.state == lifecycle.QUEUED:
                    run.paused = paused  # it starts paused
                    self.journal.update_file(fid, paused=int(paused))
                else:
                    self.control.set_paused(run, paused)

    def cancel(self, fid: int, keep_partial: bool = False) -> dict:
        """Stop a file and forget it in this job: its transfers end, its
        part file goes (unless ``keep_partial``), its row says removed."""
        run = self._find(fid)
        if self.finishing.finalizing(fid):
            raise ConflictError(f"file {fid} is verified and being renamed into place: it is done in a moment")
        if run.state == lifecycle.QUEUED:
            self.intake.drop_waiting(run)
        else:
            self.dispatch.drop_file(fid)
            self.dispatch.release(fid)
        self.finishing.forget(fid)
        part = run.part
        result = FileResult(run.request.url, str(run.final or run.provisional or ""), lifecycle.REMOVED,
                            run.remote.size if run.remote else None, error="cancelled")
        self.files.set_result(run, result)
        self.finishing.final(run, lifecycle.REMOVED)
        self.journal.update_file(fid, state=lifecycle.REMOVED, error="cancelled", paused=0, speed=0)
        self.finishing.retire(run, hold_lock=True)
        if part is not None and not keep_partial:
            try:
                storage.remove(run.job.root, part)
            except SegdlError:
                pass
        self.on_result(result)
        return {"id": fid, "state": lifecycle.REMOVED, "kept_partial": bool(keep_partial and part and part.exists())}

    def set_limits(self, max_speed: int | None = None, max_file_speed: int | None = None,
                   slow: bool | None = None) -> dict:
        """The service's limits (bytes/s, 0: none), at once, and in the
        journal: kept across a restart, and mirrored on the running jobs'
        rows, where another process's ``segdl limit`` writes them.

        ``slow``: True starts slow mode at ``max_speed``, remembering the
        limit before; False ends it, putting that limit
        back (or ``max_speed``, if given).  A new ``max_speed`` without
        ``slow`` ends slow mode too: the limit set last is the one kept."""
        before = self.journal.service_limits()["slow_before"]
        if slow:
            if before is None:
                before = self.limits.values()["max_speed"] or 0
        elif slow is False:
            if max_speed is None and before is not None:
                max_speed = before
            before = None
        elif max_speed is not None:
            before = None
        self.limits.set(**{k: v for k, v in (("max_speed", max_speed), ("max_file_speed", max_file_speed))
                           if v is not None})
        self.limits.changed()
        values = self.limits.values()
        with self.journal.atomic():
            self.journal.set_service_limits(values["max_speed"] or 0, values["max_file_speed"] or 0, before)
            for job in self.files.jobs:  # so the journal's polling agrees
                self.journal.update_job(job, **values)
        return {**{k: v or 0 for k, v in values.items()}, "slow": before is not None, "slow_before": before}

    def retry(self, allowed=lambda dest: True, ids: set[int] | None = None, of_job: int | None = None) -> dict:
        """The failed files the journal knows (those of ``ids``, if given),
        again, as one new job per job they came from (its destination and
        collection), for those whose destination is ``allowed``.
        ``of_job``: every file of that job that is not here instead
        (:func:`not_here`)."""
        jobs = {j["id"]: j for j in self.journal.all_jobs()}
        if of_job is not None and of_job not in jobs:
            raise LookupError(f"no job {of_job}")
        rows = (self.journal.find_files(states=tuple(lifecycle.FAILURES)) if of_job is None
                else [r for r in self.journal.find_files(job_id=of_job) if not_here(r)])
        groups: dict[int, list] = {}
        for row in rows:
            if self.files.holds(row["id"]) or (ids is not None and row["id"] not in ids):
                continue
            if self.files.writer_of(Path(row["path"])) is not None or not allowed(Path(row["path"]).parent):
                continue
            groups.setdefault(row["job_id"], []).append(row)
        added = []
        for job_id, rows in groups.items():
            job = jobs.get(job_id)
            if job is None:
                continue
            dest = Path(job["dest"])
            by_url = {e["url"]: e for e in job["spec"].get("requests", [])}
            reqs = []
            for row in rows:
                entry = by_url.get(row["url"], {"url": row["url"]})
                rel = str(Path(row["path"]).relative_to(dest)) if Path(row["path"]).is_relative_to(dest) else None
                reqs.append(request_from_spec(entry, path=rel or entry.get("path")))
            added.append(self.add(reqs, dest=dest, collection=job["collection"]))
        return {"jobs": added}


def not_here(row: dict) -> bool:
    """A journal row whose file is not here: failed, a hash mismatch,
    cancelled, or finished but gone from disk since."""
    if row["state"] in lifecycle.FAILURES or row["state"] == lifecycle.REMOVED:
        return True
    return row["state"] in lifecycle.COMPLETE and not on_disk(row)


def on_disk(row: dict) -> bool:
    """Is the row's file at its path?  (Whether its bytes are still the
    ones verified is for ``segdl verify`` to say.)"""
    return os.path.isfile(row["path"])
