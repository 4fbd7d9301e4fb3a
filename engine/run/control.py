"""Control: what changes while the job runs.  Pause, resume and limits from
other processes (through the journal), bandwidth shared among files by
demand, the heartbeat (the synced commit) and progress snapshots.
"""

from __future__ import annotations

import time

from ..rules import lifecycle
from ..rules.bandwidth import FLOOR, demand, share
from .files import Files
from ..journal.writer import Journal
from .limits import Limits
from ..values.messages import (
    Limit,
)
from ..inputs.naming import redact_url
from ..rules.progress import FileProgress, Snapshot
from ..values.request import Settings
from ..rules.scheduler import Scheduler
from .workers import Workers

# How often (seconds) files are judged by what they can use of a job-wide
# speed limit; an allotment must have held this long to be judged.
DEMAND_PERIOD = 1.5
PRUNE_EVERY = 60.0  # seconds between prunings of old progress events
PROGRESS_KEPT = 600.0  # seconds a progress event stays in the journal


class Control:
    """Owns the clocks of what runs on a cadence (polling the journal,
    judging demand, heartbeat, snapshots)."""

    dispatch: "Dispatch"  # the peer, set by the coordinator once every part exists

    def __init__(self, files: Files, journal: Journal, sched: Scheduler, workers: Workers, limits: Limits,
                 settings: Settings, on_message, on_progress) -> None:
        self.files, self.journal, self.sched, self.workers, self.limits = files, journal, sched, workers, limits
        self.s, self.on_message, self.on_progress = settings, on_message, on_progress
        self._serving = False
        self._started = time.monotonic()
        self._last_control = self._last_demand = self._last_snapshot = 0.0
        self._last_heartbeat = self._last_durable = 0.0
        self._last_prune = time.monotonic()
        self._seen_event = journal.last_event()  # control changes are read from the event log after it

    def as_service(self) -> None:
        """A long-running service: a job's limits set from outside
        (``segdl limit --job``) become the service's, kept and told."""
        self._serving = True

    def poll_control(self) -> None:
        """Pick up what other processes wrote to the journal: paused flags
        and speed limits (``segdl pause``, ``resume``, ``limit``)."""
        now = time.monotonic()
        if now - self._last_control < 0.25:
            return
        self._last_control = now
        if not self.files.jobs:
            return
        limits, paused, self._seen_event = self.journal.control_changes(list(self.files.jobs), self._seen_event)
        if limits and self.limits.set(**{k: limits.get(k) for k in Limits.KEYS}) and self._serving:
            # (``segdl limit --job``): the service's limits now, kept and told
            self.journal.set_service_limits(self.limits.get("max_speed") or 0,
                                            self.limits.get("max_file_speed") or 0)
        for fid, flag in paused.items():
            run = self.files.runs.get(fid) or self.files.find_waiting(fid)
            if run is None or bool(flag) == run.paused:
                continue
            if run.state == "queued":
                run.paused = bool(flag)  # it starts so
            else:
                self.set_paused(run, bool(flag))

    def set_paused(self, run, paused: bool) -> bool:
        """Pause or resume a running file now: its connections stop (the
        others get them) or come back.  False if it is not running."""
        if run.state not in (lifecycle.DOWNLOADING, lifecycle.PAUSED) or run.paused == paused:
            return False
        fid = run.id
        run.paused = paused
        if paused:
            run.move("paused")
            self.dispatch.dispatch(self.sched.pause_file(fid))
        else:
            run.move("downloading")
            if not run.resolving:
                self.sched.resume_file(fid)
        self.journal.update_file(fid, state=run.state, paused=int(paused))
        self.on_message(f"{run.final.name}: {'paused' if paused else 'resumed'}")
        self.limits.changed()
        return True

    def apply_limits(self, skip: set[int] = frozenset()) -> None:
        """Share the job's and each file's bandwidth among running
        connections (``skip``: segments about to start, told in their Fetch)."""
        now = time.monotonic()
        total = self.limits.get("max_speed") or 0
        judge = bool(total) and now - self._last_demand >= DEMAND_PERIOD
        if not self.limits.stale() and not judge:
            return  # the common case, every turn of the loop: nothing to do
        running = {fid: self.sched.running_count(fid) for fid in self.sched.files}
        if judge:
            # Judge each file by its speed under an allotment that has held
            # a while: spare bandwidth moves to the files that can use it.
            self._last_demand = now
            for fid, n in running.items():
                run = self.files.runs.get(fid)
                if run is None or not n or now - run.allotted_at < DEMAND_PERIOD:
                    continue
                d = demand(run.speed, run.allotted)
                if (d is None) != (run.demand is None) or (
                        d is not None and abs(d - run.demand) > 0.1 * max(run.demand, FLOOR)):
                    run.demand = d
                    self.limits.changed()
        if not self.limits.take_stale():
            return
        runs = self.files.runs
        per_conn = share(running, total, self.limits.get("max_file_speed") or 0,
                         {fid: r.demand for fid, r in runs.items()},
                         caps={fid: r.speed_cap for fid, r in runs.items() if r.speed_cap})
        for fid, limit in per_conn.items():
            run = runs.get(fid)
            if run is None:
                continue
            allotted = limit * running[fid]
            if abs(allotted - run.allotted) > 0.05 * max(allotted, run.allotted):
                run.allotted_at = now  # a new allotment: judge it once it has held
            run.allotted = allotted
            if run.limit == limit:
                continue
            run.limit = limit
            for key in self.sched.files[fid].segments:
                st = self.sched.segments[key]
                if st.worker is not None and st.state == "running" and key not in skip:
                    self.workers.send(st.worker, Limit(key, limit))

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < min(self.s.progress_interval, self.s.commit_interval):
            return
        self._last_heartbeat = now
        durable = now - self._last_durable >= self.s.commit_interval
        if durable:
            self._last_durable = now
        live = {
            fid: (round(r.speed, 1) if r.state == "downloading" else 0.0, r.done,
                  [{"url": redact_url(x.url), "bytes": x.received, "connections": x.running,
                    "speed": round(x.rate * x.running, 1), "failures": x.failures, "dropped": x.disabled}
                   for x in r.sources] if len(r.sources) > 1 else None)
            for fid, r in self.files.runs.items() if r.state in lifecycle.ACTIVE or r.state == lifecycle.PAUSED
        }
        self.journal.heartbeat(list(self.files.jobs), live, durable=durable)
        if now - self._last_prune >= PRUNE_EVERY:
            # Progress events matter while they are fresh; the rest is history.
            self._last_prune = now
            self.journal.prune_progress(time.time() - PROGRESS_KEPT)

    def snapshot(self, force: bool = False) -> None:
        now = time.monotonic()
        dt = now - self._last_snapshot
        if not force and dt < 0.2:
            return
        files = []
        total_speed = 0.0
        for fid, run in self.files.runs.items():
            inst = (run.received - run.snap) / max(dt, 1e-3) if self._last_snapshot else 0.0
            run.snap = run.received
            for src in run.sources:  # per-connection speed of each mirror
                got = (src.received - src.snap) / max(dt, 1e-3)
                src.snap = src.received
                if src.running:
                    per = got / src.running
                    src.rate = per if not src.rate else 0.7 * src.rate + 0.3 * per
            run.speed = inst if run.speed == 0 else 0.7 * run.speed + 0.3 * inst
            total_speed += run.speed if run.state == "downloading" else 0.0
            files.append(FileProgress(fid, str(run.final), run.request.url, run.state,
                                      run.remote.size if run.remote else None, run.done,
                                      run.speed if run.state == "downloading" else 0.0,
                                      self.sched.running_count(fid) if fid in self.sched.files else 0))
        self._last_snapshot = now
        if self.on_progress is None:
            return
        # The totals over every result are kept as results come (Files),
        # so a snapshot costs the files in flight, not the job's size.
        ended_bytes = self.files.complete_bytes
        active_done = sum(f.done for f in files)
        active_size = sum(f.size or 0 for f in files)
        self.on_progress(Snapshot(tuple(files), self.files.finished, self.files.requested, total_speed,
                                  now - self._started, done=ended_bytes + active_done, size=ended_bytes + active_size))

