"""The coordinator: turns requests into planned files, hands segments to
worker processes, is the only writer of the journal, verifies and renames.

Its loop: probe a few files ahead (in a thread), activate them (journal row
first, then the preallocated part file), ask the :class:`Scheduler` for
actions and send them to workers, apply the workers' events, commit durable
progress, verify finished files (in a thread), emit progress snapshots.

The state has owners, each with a small interface: the run's files and
jobs (:class:`Files`), the connection slots (:class:`Scheduler`), the
limits (:class:`Limits`), the journal writer (:class:`Journal`), the
worker processes (:class:`Workers`).  The parts are given the owners (and
the peer parts) they need, never the coordinator.
"""

from __future__ import annotations

import math
import queue
import time
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Callable

import multiprocess

from .activation import Activation
from .commands import Commands
from .control import Control
from .dispatch import Dispatch
from ..values.errors import SegdlError
from .existing import Existing
from .filerun import JobRun
from .files import Files
from .finishing import Finishing
from .intake import Intake
from .jobs import Jobs
from ..journal.writer import Journal
from .limits import Limits
from ..rules.progress import Snapshot
from ..rules.ranges import MiB
from .reports import Reports
from ..values.request import Request, Settings
from .restarts import Restarts
from ..values.results import FileResult, Results
from ..rules.scheduler import Scheduler
from .worker import WorkerSettings
from .workers import Workers


def _shape(s: Settings, files_at_once: int | None) -> tuple[int, int, int]:
    """(connections in all, worker processes, connections per worker) for
    ``files_at_once`` files together (at most -j; default -j)."""
    files_at_once = max(1, min(s.concurrent_files, files_at_once or s.concurrent_files))
    total = max(1, min(s.max_connections, s.connections * files_at_once))
    # A file's segments all go to one worker (see Scheduler), so more
    # workers than files at once would only sit idle.
    count = max(1, min(s.workers, total, files_at_once))
    return total, count, min(total, s.connections * math.ceil(files_at_once / count))


def _fork_workers(count: int, ws: WorkerSettings) -> Workers:
    # Load libcurl (pycurl) before forking: the workers inherit it
    # instead of each loading it again (~70 ms of CPU apiece at the
    # start).  No libcurl handle exists yet; each process makes its own.
    from .. import net  # noqa: F401

    return Workers(multiprocess.get_context("fork"), count, ws)


_early: tuple[int, WorkerSettings, Workers] | None = None


def start_workers_early(s: Settings) -> None:
    """Fork the workers of a job of at least -j files now, before its
    manifest is read.  Forked after, each worker maps the coordinator's heap
    as it is then (100,000 requests: 85 MB a worker, counted in each one's
    RSS, partly copied as reference counts change) though it never reads
    it.  The next engine started with these settings takes them
    (:meth:`Coordinator.start`); a job of fewer files stops them and forks
    its own."""
    global _early
    _, count, slots = _shape(s, None)
    ws = worker_settings(s, slots)
    _early = (count, ws, _fork_workers(count, ws))


def _take_early(count: int, ws: WorkerSettings) -> Workers | None:
    global _early
    early, _early = _early, None
    if early is None:
        return None
    if early[:2] == (count, ws):
        return early[2]
    early[2].stop(lambda _ev: None)
    early[2].reap()
    return None


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
        self._results: list[FileResult] = []  # told once the turn that made them is committed
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # (function, future) from other threads
        self.stopping = False
        self.started_up = False

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
            self.jobs.end_finished()
        finally:
            self._shutdown()
        return Results(r for r in job.results if r is not None)

    def start(self, files_at_once: int | None = None) -> None:
        """Start the workers and the loop's parts.  ``files_at_once``: how
        many files this engine will run together at most (default -j)."""
        s = self.s
        total, count, slots = _shape(s, files_at_once)
        buffer_size = int(min(s.transfer.buffer_size, max(64 * 1024, s.buffer_budget // total)))
        options = replace(s.transfer, buffer_size=buffer_size)
        # The owners of the run's state.
        self.files = files = Files()
        self.sched = sched = Scheduler(count, slots, total=total, min_split=s.min_split, retry=s.retry,
                                       max_per_host=s.max_per_host or max(s.connections, 32))
        self.limits = limits = Limits(s.max_speed, s.max_file_speed)
        ws = worker_settings(s, slots)
        self.workers = workers = _take_early(count, ws) or _fork_workers(count, ws)
        journal, say = self.journal, self.on_message
        # The parts, each given the owners it needs; then the peers they call.
        self.intake = Intake(files, journal, sched, workers, s, options, say)
        self.existing = Existing(files, journal, workers, say)
        self.activation = Activation(files, journal, sched, s, say)
        self.dispatch = Dispatch(files, sched, workers, limits, s, options)
        self.reports = Reports(files, journal, sched, workers, limits, say)
        self.restarts = Restarts(files, sched, workers, s, options, say)
        self.finishing = Finishing(files, journal, workers, self._results.append)
        self.control = Control(files, journal, sched, workers, limits, s, say, self.on_progress)
        self.jobs = Jobs(files, journal, self.intake, limits, s)
        self.intake.activation, self.intake.existing = self.activation, self.existing
        self.intake.dispatch, self.intake.finishing = self.dispatch, self.finishing
        self.existing.activation, self.existing.finishing = self.activation, self.finishing
        self.activation.intake, self.activation.existing = self.intake, self.existing
        self.activation.control, self.activation.finishing = self.control, self.finishing
        self.dispatch.control, self.dispatch.finishing = self.control, self.finishing
        self.reports.dispatch, self.reports.restarts, self.reports.finishing, self.reports.intake = \
            self.dispatch, self.restarts, self.finishing, self.intake
        self.restarts.dispatch = self.dispatch
        self.finishing.activation, self.finishing.dispatch, self.finishing.intake = \
            self.activation, self.dispatch, self.intake
        self.control.dispatch = self.dispatch
        self.commands = Commands(files, journal, sched, limits, self._results.append, jobs=self.jobs,
                                 intake=self.intake, dispatch=self.dispatch, finishing=self.finishing,
                                 control=self.control)
        self.started_up = True

    def add_job(self, requests: list[Request], **how) -> JobRun:
        """A new job for the loop (call it on the loop's thread: directly
        before :meth:`run`'s loop, else through :meth:`submit`); see
        :meth:`Jobs.add`."""
        return self.jobs.add(requests, **how)

    def submit(self, fn: Callable[["Coordinator"], object]) -> Future:
        """Run ``fn(self)`` on the loop's thread at its next turn (thread
        safe); the future holds what it returns or raises."""
        fut: Future = Future()
        self.inbox.put((fn, fut))
        self.workers.wake()
        return fut

    def serve(self) -> None:
        """Run the loop until :meth:`stop` (from any thread), between jobs
        too; then stop the workers."""
        self.control.as_service()
        try:
            self._loop(until=lambda: self.stopping)
            self.jobs.end_finished()
        finally:
            self._shutdown()

    def stop(self) -> None:
        self.stopping = True
        if self.started_up:
            self.workers.wake()

    # ------------------------------------------------------------ loop

    def _loop(self, until: Callable[[], bool]) -> None:
        """The data path, once a turn: what the workers wrote and synced
        (disk), applied with what clients asked; files verified; new input
        (probes, files already here, files that start); the scheduler's
        plan sent as transfers; all of it written to the journal in one
        transaction (synced when it records files verified); then, that
        commit made, those files renamed into place and the results told."""
        first = True
        while True:
            reports = self.reports.wait(0.0 if first else 0.05)  # the one wait, no transaction open
            first = False
            self._take_commands()  # committed on their own: a client reads what it asked for
            with self.journal.turn():
                self.reports.apply(reports)
                self.finishing.collect_verifications()
                self.intake.start_probes()
                self.intake.collect_probes()
                self.intake.collect_hashes()
                self.restarts.collect_resolutions()
                self.control.poll_control()
                self.dispatch.dispatch(self.sched.plan(time.monotonic()))
                self.control.apply_limits()
                self.control.heartbeat()
                self.jobs.end_finished()
            self.finishing.committed()
            self._tell_results()
            if until():
                break
            self.control.snapshot()
            self.workers.check()
        self.control.snapshot(force=True)

    def _tell_results(self) -> None:
        """Results of files whose state the last commit holds."""
        while self._results:
            self.on_result(self._results.pop(0))

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
        return self.intake.idle() and self.finishing.idle() and self.files.all_final()

    # ------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        # Collect the last durable positions the workers report while stopping.
        self.workers.stop(self.reports.last_words)
        try:
            self.reports.commit([])
        except SegdlError:
            pass
        self.workers.reap()
        self.intake.close()
        self.restarts.close()
        self.existing.close()
        self.finishing.close()
        # Nothing writes any more (workers gone, renames done): release the
        # part files, wherever their runs are.
        for run in [*self.files.runs.values(), *self.files.queued(), *self.intake.held_runs()]:
            self.activation.unlock(run)
        self.activation.release_held()
        for job in self.files.jobs.values():
            job.root.close()
