"""The files and jobs of a run, and their one owner: which files are
running (by journal id), which wait to start (in priority order), which
targets a job is writing, which jobs run and which have ended.

The coordinator's parts ask :class:`Files` and change it through its
methods; none keeps a list of files of its own that another part must
know about.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Iterable, Iterator

from ..rules import lifecycle
from .filerun import FileRun, JobRun
from ..values.results import FileResult


class Queued:
    """A file of a job that has not been touched yet, held compactly (a
    manifest of 100,000 files waits as these); it becomes a
    :class:`FileRun` when it comes up."""

    __slots__ = ("index", "request", "job", "priority", "retry")

    def __init__(self, index: int, request, job: JobRun, priority: int, retry) -> None:
        self.index, self.request, self.job, self.priority, self.retry = index, request, job, priority, retry

    def run(self) -> FileRun:
        return FileRun(self.index, self.request, self.job, probe_retry=self.retry, priority=self.priority)


class Files:
    """Runs by id, the waiting queue, targets, and jobs (running, ended)."""

    def __init__(self) -> None:
        self.runs: dict[int, FileRun] = {}  # file id -> a started run (read freely; change by the methods)
        self._queue: deque[FileRun] = deque()  # not started, in priority order
        self._waiting_ids: dict[int, FileRun] = {}  # registered (has a row), not started
        # Final path -> the job writing it (until that job ends), keyed by
        # the path's string, which the file's result keeps anyway: a Path
        # per file held to the job's end (its parts, its interned name) was
        # 42 MB of a 100,000-file job's peak RSS.
        self._targets: dict[str, int] = {}
        self.jobs: dict[int, JobRun] = {}  # running jobs
        self._history: list[JobRun] = []  # every job of this engine, for progress
        self._ended: list[JobRun] = []  # jobs whose last file is final, to record at the end of the turn
        # Totals over every job's results, kept as results arrive, so a
        # progress snapshot costs what is running, not the job's size.
        self.requested = 0
        self.finished = 0
        self.complete_bytes = 0

    # ------------------------------------------------------------ jobs

    def add_job(self, job: JobRun) -> None:
        self.jobs[job.id] = job
        self._history.append(job)
        self.requested += len(job.results)

    def job_ended(self, job: JobRun) -> None:
        """The job's last file is final: it ends at the end of this turn
        (after whatever else the turn writes of its files)."""
        if job.id in self.jobs and job not in self._ended:
            self._ended.append(job)

    def take_ended(self) -> Iterator[JobRun]:
        """Jobs that have ended, each once; their targets are free again."""
        while self._ended:
            job = self._ended.pop(0)
            if self.jobs.pop(job.id, None) is not None:
                for path in [p for p, j in self._targets.items() if j == job.id]:
                    del self._targets[path]
                yield job

    def set_result(self, run: FileRun, result: FileResult) -> None:
        """A file's result, in its job's request order (counted once)."""
        before = run.job.results[run.index]
        if before is None:
            self.finished += 1
        elif before.status in lifecycle.COMPLETE:
            self.complete_bytes -= before.size or 0
        if result.status in lifecycle.COMPLETE:
            self.complete_bytes += result.size or 0
        run.job.results[run.index] = result

    # ------------------------------------------------------------ targets

    def writer_of(self, path: Path) -> int | None:
        """The job writing ``path`` in this engine, if any."""
        return self._targets.get(str(path))

    def claim_target(self, path: Path, job_id: int) -> None:
        self._targets[str(path)] = job_id

    def free_target(self, path: Path | None) -> None:
        if path is not None:
            self._targets.pop(str(path), None)

    # ------------------------------------------------------------ waiting

    def enqueue(self, runs: Iterable[FileRun | Queued]) -> None:
        """New files join the queue behind those of the same priority or
        higher (a job's files keep their order)."""
        q = self._queue
        for run in runs:
            if not q or q[-1].priority >= run.priority:
                q.append(run)  # the common case: one job's files, one priority
                continue
            i = len(q)
            while i > 0 and q[i - 1].priority < run.priority:
                i -= 1
            q.insert(i, run)

    def requeue(self, run: FileRun, first: bool = True) -> None:
        """A file goes back to wait: first in line (starting over, hashed)
        or last (waiting to retry its first request)."""
        if first:
            self._queue.appendleft(run)
        else:
            self._queue.append(run)

    def next_waiting(self) -> FileRun | None:
        if not self._queue:
            return None
        run = self._queue.popleft()
        return run.run() if isinstance(run, Queued) else run

    def put_back(self, runs: list[FileRun]) -> None:
        """Runs taken with :meth:`next_waiting` and not started, first again
        in their order."""
        self._queue.extendleft(reversed(runs))

    def waiting(self) -> int:
        return len(self._queue)

    def queued(self) -> Iterator[FileRun]:
        """The waiting files that have a run (registered, or back in line)."""
        return (r for r in self._queue if isinstance(r, FileRun))

    def unqueue(self, run: FileRun) -> None:
        try:
            self._queue.remove(run)
        except ValueError:
            pass

    def register_waiting(self, run: FileRun) -> None:
        self._waiting_ids[run.id] = run

    def forget_waiting(self, fid: int) -> None:
        self._waiting_ids.pop(fid, None)

    def find_waiting(self, fid: int) -> FileRun | None:
        """A registered file that has not started."""
        run = self._waiting_ids.get(fid)
        return run if run is not None and run.state == lifecycle.QUEUED else None

    # ------------------------------------------------------------ running

    def start(self, run: FileRun) -> None:
        """A file becomes a download under its row's id."""
        self._waiting_ids.pop(run.id, None)
        self.runs[run.id] = run

    def drop(self, fid: int, run: FileRun | None = None) -> bool:
        """A run leaves the running set (only ``run``, when given)."""
        if fid in self.runs and (run is None or self.runs[fid] is run):
            del self.runs[fid]
            return True
        return False

    def holds(self, file_id: int) -> bool:
        """Is a live run (started, or registered and waiting) on this row?"""
        return file_id in self.runs or file_id in self._waiting_ids

    def may_start(self, files_at_once: int) -> bool:
        """Is there room for one more file (``lifecycle.may_start``)?"""
        downloading = verifying = 0
        for r in self.runs.values():
            if r.state == lifecycle.DOWNLOADING:
                downloading += 1
            elif r.state == lifecycle.VERIFYING:
                verifying += 1
        return lifecycle.may_start(downloading, verifying, files_at_once)

    def all_final(self) -> bool:
        return not self._queue and all(lifecycle.is_final(r.state) for r in self.runs.values())
