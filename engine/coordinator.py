"""The coordinator: turns requests into planned files, hands segments to
worker processes, is the only writer of the journal, verifies and renames.

Its loop: probe a few files ahead (in a thread), activate them (journal row
first, then the preallocated part file), ask the :class:`Scheduler` for
actions and send them to workers, apply the workers' events, commit durable
progress, verify finished files (in a thread), emit progress snapshots.
"""

from __future__ import annotations

import math
import os
import queue
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Callable

import multiprocess

from . import lifecycle, storage
from .activation import Activation
from .commands import Commands
from .control import Control
from .dispatch import Dispatch
from .errors import (
    SegdlError,
)
from .existing import Existing
from .filerun import FileRun, JobRun
from .finishing import Finishing
from .intake import PROBE_AHEAD, PROBE_STREAMS, Intake
from .journal import Journal
from .messages import (
    Durable,
    Finished,
    Stop,
    Wakeup,
)
from .progress import Snapshot
from .ranges import MiB
from .reports import Reports
from .request import Request, Settings, job_spec
from .restarts import Restarts
from .results import FileResult, Results
from .scheduler import Scheduler
from .verify import Digests
from .worker import WorkerSettings, run_worker


def worker_settings(s: Settings, slots: int) -> WorkerSettings:
    """A worker's disk side for ``slots`` connections: one staging buffer
    each while they fill, what the hasher may hold ahead of its frontier,
    and some more queued for the writers (so the pool never runs dry with
    every buffer held).  Many connections get smaller buffers, half the
    hash window and half the writers' queue, so memory stays flat: they
    are usually slow ones (a throttled mirror), where the disk keeps up
    and reading a little more back to hash it costs no time."""
    many = slots > 32
    size = MiB if slots <= 16 else 512 * 1024 if not many else 256 * 1024
    hold = s.hash_budget // 2 if many else s.hash_budget
    queued = 8 * MiB if many else 16 * MiB
    return WorkerSettings(s.checkpoint_bytes, s.checkpoint_seconds, max_unsynced=s.max_unsynced,
                          stage_size=size, stages=slots + (hold + queued) // size,
                          direct_io=s.direct_io, hash_budget=hold)


class Coordinator:
    """The engine: one loop that probes, activates, dispatches, applies the
    workers' reports, verifies and finishes files, made of the parts named
    below.  It runs a batch to its end (:meth:`run`, for ``segdl get``), or
    keeps running and takes jobs and changes at any moment from other
    threads (:meth:`start`, :meth:`submit`, :meth:`serve`, for ``segdl
    serve``)."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        *,
        on_progress: Callable[[Snapshot], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        on_result: Callable[[FileResult], None] | None = None,
    ) -> None:
        self.s = settings
        self.journal = journal
        self.on_progress = on_progress
        self.on_message = on_message or (lambda m: None)
        self.on_result = on_result or (lambda r: None)
        self.ctx = multiprocess.get_context("fork")
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # (function, future) from other threads
        self.stopping = False
        self.started_up = False
        self.serving = False  # a long-running service (serve()), not a batch (run())
        self.ended: list[JobRun] = []  # jobs whose last file is final, to record at the end of the turn

    # ------------------------------------------------------------ public

    def run(self, requests: list[Request], *, collection: str | None = None,
            source: dict | None = None) -> Results:
        """Download ``requests`` as one job, to the end of every file.
        ``source``: what the requests were resolved from (a hub reference
        and the commit it was pinned to), kept with the job."""
        self.start(files_at_once=len(requests))
        try:
            job = self.add_job(requests, collection=collection, source=source)
            self._loop(until=self._finished)
            self._end_jobs()
        finally:
            self._shutdown()
        return Results(r for r in job.results if r is not None)

    def start(self, files_at_once: int | None = None) -> None:
        """Start the workers and the loop's state.  ``files_at_once``: how
        many files this engine will run together at most (default -j)."""
        s = self.s
        self.runs: dict[int, FileRun] = {}  # file id -> run
        self.jobs: dict[int, JobRun] = {}  # running jobs
        self.targets: dict[Path, int] = {}  # final path -> the job writing it (until that job ends)
        self.queue: deque[FileRun] = deque()
        self.queued_ids: dict[int, FileRun] = {}  # registered files not started yet
        self.job_history: list[JobRun] = []  # for progress snapshots
        files_at_once = max(1, min(s.concurrent_files, files_at_once or s.concurrent_files))
        total = max(1, min(s.max_connections, s.connections * files_at_once))
        # A file's segments all go to one worker (see Scheduler), so more
        # workers than files at once would only sit idle.
        workers = max(1, min(s.workers, total, files_at_once))
        self.slots = min(total, s.connections * math.ceil(files_at_once / workers))
        self.buffer_size = int(min(s.transfer.buffer_size, max(64 * 1024, s.buffer_budget // total)))
        self.options = replace(s.transfer, buffer_size=self.buffer_size)
        self.sched = Scheduler(workers, self.slots, total=total, min_split=s.min_split, retry=s.retry,
                               max_per_host=s.max_per_host or max(s.connections, 32))
        self.tokens: dict[str, str | None] = {}  # credential -> "Authorization: ..." (memory only)
        self.started = time.monotonic()
        self.events = self.ctx.Queue()
        self.orders = [self.ctx.Queue() for _ in range(workers)]
        wsettings = worker_settings(s, self.slots)
        # Load libcurl (pycurl) before forking: the workers inherit it
        # instead of each loading it again (~70 ms of CPU apiece at the
        # start).  No libcurl handle exists yet; each process makes its own.
        from .net import ProbeFeed, Prober

        self.procs = [
            self.ctx.Process(target=run_worker, args=(i, self.orders[i], self.events, wsettings, os.getpid()),
                             name=f"segdl-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for p in self.procs:
            p.start()
        # Probes stream on a thread of their own (connections kept); the
        # resolver's probes (a mirror list) on another, in batches.
        self.probes = ProbeFeed(concurrency=PROBE_AHEAD, streams=PROBE_STREAMS, wake=lambda: self.events.put(Wakeup()))
        self.prober_aux = ThreadPoolExecutor(1, thread_name_prefix="segdl-resolve")
        self.resolve_client = Prober()
        self.resolving: dict[int, tuple[int, Future]] = {}
        self._limits_dirty = True
        self.last_demand = 0.0
        self.last_control = 0.0
        self.last_heartbeat = self.last_durable = 0.0
        self.last_workers_check = 0.0
        self.last_prune = time.monotonic()
        self.limits = {"max_speed": s.max_speed or None, "max_file_speed": s.max_file_speed or None}
        self.verifier = ThreadPoolExecutor(2, thread_name_prefix="segdl-verify")
        # Files already on disk are hashed apart, so a re-run over many large
        # files does not hold up verifying and renaming fresh downloads.
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="segdl-hash")
        self.held_locks: list[int] = []  # of failed files, released at shutdown
        self.probing_runs: dict[int, FileRun] = {}  # being probed, by their ProbeOrder key
        self.probe_dropped: set[int] = set()  # keys of runs taken out of the queue while being probed
        self.ready: deque[tuple[FileRun, dict]] = deque()  # probed, waiting for room
        self.verifying: dict[int, Future] = {}
        self.tracked: dict[int, int] = {}  # file id -> the worker hashing it as it is written
        self.awaiting_hash: set[int] = set()  # complete files whose worker is finishing their digest
        self.notices: set[str] = set()
        self.verified: list[tuple[int, Digests]] = []  # to mark verified and rename, in one batch
        self.hashes: dict[tuple, Future] = {}  # existing files being hashed
        self.hashing: list[tuple[FileRun, dict | None, Future]] = []  # runs waiting for them
        self.finalizing: dict[int, tuple[Digests, Future]] = {}
        self.pending_done: dict[int, int] = {}
        self.last_snapshot = 0.0
        self.intake, self.existing, self.activation = Intake(self), Existing(self), Activation(self)
        self.dispatch, self.reports, self.restarts = Dispatch(self), Reports(self), Restarts(self)
        self.finishing, self.control = Finishing(self), Control(self)
        self.commands = Commands(self)
        self.started_up = True

    def add_job(self, requests: list[Request], *, dest: Path | None = None, collection: str | None = None,
                source: dict | None = None, connections: int | None = None, force: bool | None = None,
                register: bool = False, priority: int = 0, reuse: int | None = None,
                origin: str | None = None) -> JobRun:
        """A new job for the loop (call it on the loop's thread: directly
        before :meth:`run`'s loop, else through :meth:`submit`).
        ``register``: give every file its journal row (and id) now, so it can
        be paused, reprioritised or cancelled before it starts.  ``reuse``:
        continue the journal's job of that id (a restarted service)."""
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
        self.jobs[job_id] = job
        self.job_history.append(job)
        self.journal.update_job(job_id, pid=os.getpid(), heartbeat=time.time(),
                                max_speed=self.limits["max_speed"], max_file_speed=self.limits["max_file_speed"])
        runs = [FileRun(i, r, job, probe_retry=s.retry, priority=priority) for i, r in enumerate(requests)]
        if register:
            self.intake.register(runs, restore=reuse is not None)
        self.intake.enqueue(runs)
        if not requests:
            self.job_ended(job)
        return job

    def job_ended(self, job: JobRun) -> None:
        """The job's last file is final.  Recorded at the end of this turn
        of the loop, after whatever else the turn writes of its files (a
        failure's row, a cancelled file's state): ``job_ended`` is the
        job's last event, and its counts are the files' final states."""
        if job.id in self.jobs and job not in self.ended:
            self.ended.append(job)

    def _end_jobs(self) -> None:
        while self.ended:
            job = self.ended.pop(0)
            if self.jobs.pop(job.id, None) is not None:
                self.journal.finish_job(job.id)
                for path in [p for p, j in self.targets.items() if j == job.id]:
                    del self.targets[path]
                job.root.close()

    def holds(self, file_id: int) -> bool:
        """Is a live run (started, or registered and waiting) on this row?"""
        return file_id in self.runs or file_id in self.queued_ids

    def submit(self, fn: Callable[["Coordinator"], object]) -> Future:
        """Run ``fn(self)`` on the loop's thread at its next turn (thread
        safe); the future holds what it returns or raises."""
        fut: Future = Future()
        self.inbox.put((fn, fut))
        self.events.put(Wakeup())
        return fut

    def serve(self) -> None:
        """Run the loop until :meth:`stop` (from any thread), between jobs
        too; then stop the workers."""
        self.serving = True
        try:
            self._loop(until=lambda: self.stopping)
            self._end_jobs()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self.stopping = True
        if self.started_up:
            self.events.put(Wakeup())

    # ------------------------------------------------------------ loop

    def _loop(self, until: Callable[[], bool]) -> None:
        while True:
            self._take_commands()
            self.intake.start_probes()
            self.intake.collect_probes()
            self.finishing.collect_verifications()
            self.intake.collect_hashes()
            self.restarts.collect_resolutions()
            self.control.poll_control()
            self.dispatch.dispatch(self.sched.plan(time.monotonic()))
            self.control.apply_limits()
            if until():
                break
            self.reports.drain_events()
            self.control.snapshot()
            self.control.heartbeat()
            self._end_jobs()
            self._check_workers()
        self.control.snapshot(force=True)

    def _take_commands(self) -> None:
        while True:
            try:
                fn, fut = self.inbox.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(self))
            except BaseException as e:  # the caller's error, handed back to it
                fut.set_exception(e)

    def _finished(self) -> bool:
        return (
            not self.queue and not self.probing_runs and not self.ready and not self.hashing
            and not self.verifying and not self.finalizing and not self.awaiting_hash and not self.verified
            and all(lifecycle.is_final(r.state) for r in self.runs.values())
        )

    def active_count(self) -> int:
        return sum(1 for r in self.runs.values() if r.state in lifecycle.ACTIVE)

    def wake_on(self, fut: Future) -> Future:
        """Have the loop look at ``fut`` as soon as it is done, instead of
        at the next event or timeout."""
        fut.add_done_callback(lambda _f: self.events.put(Wakeup()))
        return fut

    def _check_workers(self) -> None:
        """A worker killed from outside (OOM killer, a crash in libcurl)
        reports nothing: notice it, rather than wait for its segments."""
        now = time.monotonic()
        if now - self.last_workers_check < 0.5:
            return
        self.last_workers_check = now
        for i, p in enumerate(self.procs):
            if p.exitcode is not None:
                raise SegdlError(f"worker {i} died (exit {p.exitcode}); run the same command again to continue")


    # ------------------------------------------------------------ progress


    # ------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        for q in self.orders:
            q.put(Stop())
        deadline = time.monotonic() + 10
        # Collect the last durable positions the workers report while stopping.
        while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=0.05)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                break
            if isinstance(ev, (Durable, Finished)):
                self.reports.claim(ev)
        try:
            self.reports.commit([])
        except SegdlError:
            pass
        for p in self.procs:
            p.join(timeout=1)
            if p.is_alive():
                p.kill()
        self.probes.close()
        self.prober_aux.shutdown(wait=False, cancel_futures=True)
        self.resolve_client.close()  # now, or when its running probe ends
        self.hasher.shutdown(wait=False, cancel_futures=True)
        self.verifier.shutdown(wait=True, cancel_futures=True)
        # Nothing writes any more (workers gone, renames done): release the
        # part files, wherever their runs are.
        for run in [*self.runs.values(), *self.queue, *(r for r, _ in self.ready), *self.probing_runs.values(),
                    *(r for r, _, _ in self.hashing)]:
            self.activation.unlock(run)
        for fd in self.held_locks:
            storage.unlock(fd)
        self.held_locks.clear()
        for job in self.jobs.values():
            job.root.close()
