"""Reports: what the workers say (bytes written, bytes durable, segments
shrunk or finished, digests, notices) applied to the scheduler and
committed to the journal, durable progress first.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..values.errors import (
    AccessExpiredError,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
    StorageError,
)
from ..values.messages import (
    Durable,
    Finalized,
    Finished,
    Hashed,
    Probed,
    Notice,
    Shrunk,
    Wakeup,
    WorkerCrashed,
    Written,
)
from .files import Files
from ..journal.writer import Journal
from .limits import Limits
from ..inputs.naming import redact_url
from ..rules.scheduler import Scheduler
from .workers import Workers


class Reports:
    """Owns the durable progress not yet committed, and the notices told."""

    dispatch: "Dispatch"  # the peers, set by the coordinator once every part exists
    restarts: "Restarts"
    finishing: "Finishing"
    intake: "Intake"

    def __init__(self, files: Files, journal: Journal, sched: Scheduler, workers: Workers, limits: Limits,
                 on_message) -> None:
        self.files, self.journal, self.sched, self.workers, self.limits = files, journal, sched, workers, limits
        self.on_message = on_message
        self._pending: dict[int, int] = {}  # segment id -> durable bytes from its start, to commit
        self._notices: set[str] = set()

    def wait(self, longest: float = 0.05) -> list:
        """What the workers said, waiting up to ``longest`` seconds (less
        when the scheduler has something due) for the first report; the
        loop's one place to wait (no transaction is open then)."""
        wake = self.sched.next_wakeup()
        if wake is not None:
            longest = max(0.0, min(longest, wake - time.monotonic()))
        return self.workers.reports(longest)

    def apply(self, batch: list) -> None:
        """Apply the workers' reports: to the scheduler, and to the journal
        (durable progress and splits first, then what depends on them)."""
        if not batch:
            return
        splits: list[tuple] = []
        finished: list[Finished] = []
        for ev in batch:
            if isinstance(ev, Written):
                now = time.monotonic()
                for seg, pos in ev.positions.items():
                    self.sched.on_written(seg, pos, now)
                    self._saw(seg, pos)
            elif isinstance(ev, Durable):
                self.claim(ev)
            elif isinstance(ev, Shrunk):
                tail = self.sched.on_shrunk(ev.segment, ev.end)
                if tail is not None:
                    splits.append((ev.segment, ev.end, tail[0], tail[1]))
            elif isinstance(ev, Finished):
                self._saw(ev.segment, ev.position)
                self.claim(ev)
                finished.append(ev)
            elif isinstance(ev, Wakeup):
                pass
            elif isinstance(ev, Notice):
                if ev.text not in self._notices:  # once per job, whichever worker says it
                    self._notices.add(ev.text)
                    self.on_message(ev.text)
            elif isinstance(ev, Hashed):
                self.finishing.hashed(ev)
            elif isinstance(ev, Finalized):
                self.finishing.finalized(ev)
            elif isinstance(ev, Probed):
                self.intake.probed(ev)
            elif isinstance(ev, WorkerCrashed):
                raise SegdlError(f"worker {ev.worker} crashed: {ev.message}")
        # Durable progress and splits reach the journal before anything
        # that depends on them (new tail segments, file completion).
        self.commit(splits)
        for ev in finished:
            self._finished_segment(ev)
        self.finishing.flush_verified()

    def last_words(self, ev) -> None:
        """A report that came while the workers stopped: their last durable
        positions count."""
        if isinstance(ev, (Durable, Finished)):
            self.claim(ev)

    def claim(self, ev: Durable | Finished) -> None:
        """Take the positions a worker vouches for as durable.  A Finished
        that carries a storage error (its fdatasync failed) vouches for nothing."""
        if isinstance(ev, Durable):
            for seg, pos in ev.positions.items():
                self._durable(seg, pos)
        elif not isinstance(ev.error, StorageError):
            self._durable(ev.segment, ev.position)

    def _durable(self, seg: int, pos: int) -> None:
        st = self.sched.segments.get(seg)
        if st is None:
            return
        self.sched.on_durable(seg, pos)
        self._pending[seg] = max(self._pending.get(seg, 0), st.position - st.start)

    def _saw(self, seg: int, pos: int) -> None:
        st = self.sched.segments.get(seg)
        if st is None:
            return
        run = self.files.runs.get(st.file)
        if run is None:
            return
        before = run.seen.get(seg, pos)
        if pos > before:
            run.received += pos - before
            run.done += pos - before
            run.seen[seg] = pos
            i = run.source_of.get(seg)
            if i is not None:
                run.sources[i].received += pos - before

    def commit(self, splits: list[tuple]) -> None:
        splits = [sp for sp in splits if sp[0] in self.sched.segments]  # its file may be gone
        if not self._pending and not splits:
            return
        tails = self.journal.record(self._pending, splits)
        self._pending = {}
        for seg, new_end, t_start, t_end in splits:
            fid = self.sched.segments[seg].file
            self.sched.add_segment(fid, tails[seg], t_start, t_end, 0)
            self.files.runs[fid].seen[tails[seg]] = t_start

    def _finished_segment(self, ev: Finished) -> None:
        st = self.sched.segments.get(ev.segment)
        if st is None:  # a segment of a file that was dropped (restart)
            for run in self.files.runs.values():
                run.draining.discard(ev.segment)
            self.restarts.restart_drained()
            return
        run = self.files.runs[st.file]
        if ev.link is not None and ev.link.requests:
            run.conns.update((ev.worker, conn) for conn in ev.link.connections)
            run.protocols.add(ev.link.protocol)
            run.connect_s += ev.link.connect
            run.tls_s += ev.link.tls
        i = run.source_of.pop(ev.segment, None)
        if i is not None:
            src = run.sources[i]
            src.running = max(0, src.running - 1)
            if ev.outcome == "error" and ev.error is not None and ev.error.retryable:
                src.failures += 1
                healthy = [x for x in run.sources if not x.disabled and x is not src]
                if src.failures >= 3 and healthy and not src.disabled:
                    src.disabled = True
                    self.on_message(f"{run.final.name}: mirror {redact_url(src.url)} dropped after "
                                    f"{src.failures} failures ({ev.error.message})")
            elif ev.outcome == "done":
                src.failures = 0
        self.limits.changed()
        if ev.outcome != "done":
            run.carried = None  # fetched again: hashed from disk, not from what the probe carried
        if ev.outcome == "error" and isinstance(ev.error, (RemoteChangedError, RangeIgnoredError)):
            self.sched.on_finished(ev.segment, ev.position, "cancelled", None, time.monotonic())
            self.restarts.restart(run, ev.error)
            return
        if ev.outcome == "error" and isinstance(ev.error, AccessExpiredError) and i is not None:
            self.restarts.reresolve(run, i)
        if ev.outcome == "done" and st.end is None and ev.total is not None:
            self.journal.update_file(run.id, size=ev.total)
            run.remote = replace(run.remote, size=ev.total)
        if ev.outcome != "done" and not run.remote.ranged:
            run.done -= ev.position  # a plain stream starts over
            run.seen[ev.segment] = 0
        self.dispatch.dispatch(self.sched.on_finished(ev.segment, ev.position, ev.outcome, ev.error,
                                              time.monotonic(), total=ev.total))

