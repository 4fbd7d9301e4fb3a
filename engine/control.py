"""Control: what changes while the job runs.  Pause, resume and limits from
other processes (through the journal), bandwidth shared among files by
demand, the heartbeat (the synced commit) and progress snapshots.
"""

from __future__ import annotations

import time

from . import lifecycle
from .bandwidth import FLOOR, demand, share
from .messages import (
    Limit,
)
from .naming import redact_url
from .progress import FileProgress, Snapshot

# How often (seconds) files are judged by what they can use of a job-wide
# speed limit; an allotment must have held this long to be judged.
DEMAND_PERIOD = 1.5
PRUNE_EVERY = 60.0  # seconds between prunings of old progress events
PROGRESS_KEPT = 600.0  # seconds a progress event stays in the journal


class Control:
    def __init__(self, c) -> None:
        self.c = c  # the Coordinator: the run's shared state

    def poll_control(self) -> None:
        """Pick up what other processes wrote to the journal: paused flags
        and speed limits (``segdl pause``, ``resume``, ``limit``)."""
        now = time.monotonic()
        if now - self.c.last_control < 0.25:
            return
        self.c.last_control = now
        if not self.c.jobs:
            return
        limits, paused = self.c.journal.control_state(list(self.c.jobs))
        if limits and {k: limits.get(k) or None for k in self.c.limits} != self.c.limits:
            self.c.limits = {k: limits.get(k) or None for k in self.c.limits}
            self.c._limits_dirty = True
            if self.c.serving:  # (``segdl limit --job``): the service's limits now, kept and told
                self.c.journal.set_service_limits(self.c.limits["max_speed"] or 0,
                                                  self.c.limits["max_file_speed"] or 0)
        for fid, flag in paused.items():
            run = self.c.runs.get(fid) or self.c.intake.find_waiting(fid)
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
            self.c.dispatch.dispatch(self.c.sched.pause_file(fid))
        else:
            run.move("downloading")
            if not run.resolving:
                self.c.sched.resume_file(fid)
        self.c.journal.update_file(fid, state=run.state, paused=int(paused))
        self.c.on_message(f"{run.final.name}: {'paused' if paused else 'resumed'}")
        self.c._limits_dirty = True
        return True

    def apply_limits(self, skip: set[int] = frozenset()) -> None:
        """Share the job's and each file's bandwidth among running
        connections (``skip``: segments about to start, told in their Fetch)."""
        now = time.monotonic()
        total = self.c.limits.get("max_speed") or 0
        judge = bool(total) and now - self.c.last_demand >= DEMAND_PERIOD
        if not self.c._limits_dirty and not judge:
            return  # the common case, every turn of the loop: nothing to do
        running = {fid: self.c.sched.running_count(fid) for fid in self.c.sched.files}
        if judge:
            # Judge each file by its speed under an allotment that has held
            # a while: spare bandwidth moves to the files that can use it.
            self.c.last_demand = now
            for fid, n in running.items():
                run = self.c.runs.get(fid)
                if run is None or not n or now - run.allotted_at < DEMAND_PERIOD:
                    continue
                d = demand(run.speed, run.allotted)
                if (d is None) != (run.demand is None) or (
                        d is not None and abs(d - run.demand) > 0.1 * max(run.demand, FLOOR)):
                    run.demand = d
                    self.c._limits_dirty = True
        if not self.c._limits_dirty:
            return
        self.c._limits_dirty = False
        per_conn = share(running, total, self.c.limits.get("max_file_speed") or 0,
                         {fid: r.demand for fid, r in self.c.runs.items()},
                         caps={fid: r.speed_cap for fid, r in self.c.runs.items() if r.speed_cap})
        for fid, limit in per_conn.items():
            run = self.c.runs.get(fid)
            if run is None:
                continue
            allotted = limit * running[fid]
            if abs(allotted - run.allotted) > 0.05 * max(allotted, run.allotted):
                run.allotted_at = now  # a new allotment: judge it once it has held
            run.allotted = allotted
            if run.limit == limit:
                continue
            run.limit = limit
            for key in self.c.sched.files[fid].segments:
                st = self.c.sched.segments[key]
                if st.worker is not None and st.state == "running" and key not in skip:
                    self.c.orders[st.worker].put(Limit(key, limit))

    def heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.c.last_heartbeat < min(self.c.s.progress_interval, self.c.s.commit_interval):
            return
        self.c.last_heartbeat = now
        durable = now - self.c.last_durable >= self.c.s.commit_interval
        if durable:
            self.c.last_durable = now
        live = {
            fid: (round(r.speed, 1) if r.state == "downloading" else 0.0, r.done,
                  [{"url": redact_url(x.url), "bytes": x.received, "connections": x.running,
                    "speed": round(x.rate * x.running, 1), "failures": x.failures, "dropped": x.disabled}
                   for x in r.sources] if len(r.sources) > 1 else None)
            for fid, r in self.c.runs.items() if r.state in lifecycle.ACTIVE or r.state == lifecycle.PAUSED
        }
        self.c.journal.heartbeat(list(self.c.jobs), live, durable=durable)
        if now - self.c.last_prune >= PRUNE_EVERY:
            # Progress events matter while they are fresh; the rest is history.
            self.c.last_prune = now
            self.c.journal.prune_progress(time.time() - PROGRESS_KEPT)

    def snapshot(self, force: bool = False) -> None:
        now = time.monotonic()
        dt = now - self.c.last_snapshot
        if not force and dt < 0.2:
            return
        files = []
        total_speed = 0.0
        for fid, run in self.c.runs.items():
            inst = (run.received - run.snap) / max(dt, 1e-3) if self.c.last_snapshot else 0.0
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
                                      self.c.sched.running_count(fid) if fid in self.c.sched.files else 0))
        self.c.last_snapshot = now
        if self.c.on_progress is None:
            return
        results = [r for job in self.c.job_history for r in job.results]
        finished = sum(1 for r in results if r is not None)
        ended = [r for r in results if r is not None and r.status in lifecycle.COMPLETE]
        ended_bytes = sum(r.size or 0 for r in ended)
        active_done = sum(f.done for f in files)
        active_size = sum(f.size or 0 for f in files)
        self.c.on_progress(Snapshot(tuple(files), finished, len(results), total_speed, now - self.c.started,
                                  done=ended_bytes + active_done, size=ended_bytes + active_size))

