"""Intake: the files waiting to start.  Probes a few ahead of need (in a
thread), settles those already here without the network, and picks the
URL and the mirrors that answered and agree.
"""

from __future__ import annotations

import time
from pathlib import Path

from collections import deque
from concurrent.futures import Future

from ..rules import lifecycle
from ..values.errors import (
    DownloadError,
    SegdlError,
)
from .existing import Hashing
from .filerun import FileRun, Source
from .files import Files
from ..rules.http import RemoteInfo
from ..net import ProbeOrder
from ..net.probe import PROBE_BIG
from ..values.messages import Probed
from ..journal.writer import Journal
from ..inputs.naming import choose_name, inside, part_path, redact_url
from ..values.request import Settings
from ..values.results import FileResult
from ..rules.scheduler import Scheduler
from .workers import Workers

PROBE_AHEAD = 32  # files probed ahead of need (or being probed)
#: Probes share an HTTP/2 connection two at a time: while one waits for its
#: answer, the other's body moves, and a host gets PROBE_AHEAD / 2
#: connections for them.  (Probes are small answers, or end at their
#: headers; a file's ranges never share a connection.)
PROBE_STREAMS = 2


#: A probed file waits up to this long for a file ahead of it in the queue
#: whose probe is still out, so files start in the queue's order (the order
#: the web page shows) when probes answer out of order; a slow probe holds
#: the others back no longer than this.
HOLD_FOR_EARLIER = 1.0


def _whole(found: dict) -> bool:
    """Did a probe bring the whole file (which then takes no slot of -j)?"""
    return any(isinstance(r, RemoteInfo) and r.whole for r in found.values())


def start_rank(run: FileRun) -> tuple:
    """The order files start in: the highest priority, then the oldest (the
    lowest id), as the queue and the web page order them, so a file whose
    priority changed after its probe starts in its new place; one without
    an id yet last of its priority, in its job's order."""
    return (run.priority, -(run.id or float("inf")), -run.index)


def in_start_order(ready) -> deque:
    """The probed files waiting for room, (run, findings) pairs, in the
    order they start.  (At most PROBE_AHEAD wait.)"""
    return deque(sorted(ready, key=lambda x: start_rank(x[0]), reverse=True))


def sources_of(run: FileRun, found: dict, on_message) -> list[Source]:
    """The URL and the mirrors that answered and agree with each other."""
    urls = [run.request.url, *run.request.mirrors]
    ok: list[Source] = []
    first_error: SegdlError | None = None
    for u in urls:
        got = found.get(u) or DownloadError("no probe result")
        if isinstance(got, SegdlError):
            first_error = first_error or got
            if u != run.request.url:
                on_message(f"mirror {redact_url(u)} dropped: {got.message}")
            continue
        if ok:
            ref = ok[0].remote
            why = None
            if got.size != ref.size:
                why = f"size {got.size} differs from {ref.size}"
            elif ref.etag and got.etag and got.etag != ref.etag:
                why = f"ETag {got.etag} differs from {ref.etag}"
            elif got.ranged != ref.ranged:
                why = "Range support differs"
            if why:
                on_message(f"mirror {redact_url(u)} dropped: {why}")
                continue
        ok.append(Source(u, got))
    if not ok:
        raise first_error or DownloadError("no source answered")
    return ok


def probed_in_worker(run: FileRun) -> bool:
    """Is ``run`` probed by the worker that will fetch it, on the connection
    that then carries its first range, so that ``-x N`` is N connections in
    all (as aria2's first connection goes on with the file)?  Yes for a job
    of one file, or a file known to be large: its ranges come anyway.  No
    for the files of a list: the probe feed probes them, two streams to a
    connection, and brings a small file's bytes whole."""
    return not run.plain and (len(run.job.results) == 1 or (run.request.size or 0) >= PROBE_BIG)


class Intake:
    """Owns the files between the queue and their start: the probes in
    flight (a stream, on a thread of its own), the probed files waiting
    for room, and those whose existing file is being hashed."""

    activation: "Activation"  # the peers, set by the coordinator once every part exists
    existing: "Existing"
    dispatch: "Dispatch"
    finishing: "Finishing"

    def __init__(self, files: Files, journal: Journal, sched: Scheduler, workers: Workers, settings: Settings,
                 options, on_message) -> None:
        self.files, self.journal, self.sched, self.workers = files, journal, sched, workers
        self.s, self.options, self.on_message = settings, options, on_message
        self._probing: dict[int, FileRun] = {}  # being probed, by their ProbeOrder key
        self._dropped: set[int] = set()  # keys of runs taken out of the queue while being probed
        self._ready: deque[tuple[FileRun, dict]] = deque()  # probed, waiting for room
        self._hashing: list[tuple[FileRun, dict | None, Future]] = []  # waiting for their existing file's hash
        self._from_workers: list[tuple[int, dict]] = []  # findings of probes a worker made
        # One thread, with its own connections kept between probes.
        from ..net import ProbeFeed

        self._probes = ProbeFeed(concurrency=PROBE_AHEAD, streams=PROBE_STREAMS, wake=workers.wake)

    def idle(self) -> bool:
        """Nothing is being probed, waits for room or for a hash."""
        return not self._probing and not self._ready and not self._hashing

    def held_runs(self) -> list[FileRun]:
        """The runs this part holds (for releasing their locks at the end)."""
        return [*(r for r, _ in self._ready), *self._probing.values(), *(r for r, _, _ in self._hashing)]

    def close(self) -> None:
        self._probes.close()  # now: a probe in flight is dropped

    def register(self, runs: list[FileRun], restore: bool = False) -> None:
        """Journal rows for files that have not started, so each has an id
        (``added`` events, control before it starts).  The row is the one
        for the name the file would get from its URL or path; a file that
        the server names otherwise gets a new row when it starts (and the
        provisional one goes).

        An existing row is taken over: by the same job continued after a
        restart (``restore``), whose controls (paused, priority, speed
        limit) then hold for the run as they did before; or by a new job (a
        retry, the same target again), which sets its own.  A failed or
        removed file taken over is queued again; a hash mismatch also
        forgets its segments, so it starts over."""
        for run in runs:
            try:
                path = self.target(run, None)
            except SegdlError:
                continue  # settled (refused) when it comes up
            row = self.journal.file_by_path(path)
            if row is not None and self.files.holds(row["id"]):
                continue  # another job is on this file now: this one fails when it comes up
            if row is None:
                run.id = self.journal.put_file(run.job.id, run.request.url, path, row_id=None, state="queued",
                                                 priority=run.priority, expected_blake3=run.request.blake3,
                                                 expected_sha256=run.request.sha256)
            elif restore and row["job_id"] == run.job.id:
                run.id = row["id"]
                run.paused, run.priority, run.speed_cap = bool(row["paused"]), row["priority"], row["max_speed"] or 0
            else:
                run.id = row["id"]
                self._take_over(run, row)
            run.provisional = path
            self.files.register_waiting(run)

    def _take_over(self, run: FileRun, row: dict) -> None:
        again = row["state"] in (lifecycle.FAILED, lifecycle.HASH_MISMATCH, lifecycle.REMOVED)
        with self.journal.atomic():
            self.journal.update_file(run.id, job_id=run.job.id)  # first: 'added' to this job ...
            controls = dict(paused=int(run.paused), priority=run.priority, max_speed=run.speed_cap or None)
            if again:  # ... then its state (and controls) under it
                controls.update(state=lifecycle.QUEUED, error=None, exit_code=None)
            self.journal.update_file(run.id, **controls)
            if row["state"] == lifecycle.HASH_MISMATCH:
                self.journal.replace_segments(run.id, [])

    def rename_provisional(self, run: FileRun, final) -> None:
        """The server names a registered file otherwise than its URL did:
        its row follows it to the new name (same id), unless that name has
        a row already (an earlier download of it), which it then takes."""
        if self.journal.file_by_path(final) is None:
            self.journal.update_file(run.id, path=str(final))
        else:
            self.files.forget_waiting(run.id)
            self.journal.drop_provisional(run.provisional, keep=-1)  # a 'removed' event says so
            run.id = 0
        run.provisional = final

    def drop_waiting(self, run: FileRun) -> None:
        """Take a file that has not started out of every waiting place."""
        self.files.unqueue(run)
        self._ready = deque((r, f) for r, f in self._ready if r is not run)
        self._hashing = [x for x in self._hashing if x[0] is not run]
        # A probe in flight comes back for it: collect_probes drops it then.
        if id(run) in self._probing:
            self._dropped.add(id(run))

    def reprioritise(self, run: FileRun, priority: int) -> None:
        run.priority = priority
        if run.state == lifecycle.QUEUED and run in self.files.queued():
            self.files.unqueue(run)
            self.files.enqueue([run])

    def start_probes(self) -> None:
        """Probe files ahead of need (up to PROBE_AHEAD probed or being
        probed), so a file can start the moment another finishes.  Probes
        stream: each file's findings come back as soon as they are in."""
        if not self.files.waiting():
            return
        want = PROBE_AHEAD - len(self._ready) - len(self._probing)
        if want <= 0:
            return
        batch: list[FileRun] = []
        now = time.monotonic()
        later: list[FileRun] = []
        held: list[FileRun] = []  # their host has no connection to spare for a probe now
        # Probes count against a per-host cap the user set: transfers
        # running to a host plus this batch's requests to it stay within it.
        # (The default cap, max(-x, 32), is a politeness default: holding
        # probes back for it made a collection from one host start each
        # next file later, about 10% slower in coll80.)
        cap = self.s.max_per_host
        per_host = self.sched.host_running() if cap else {}
        for h, n in self.sched.reserved.items():  # probes in flight
            per_host[h] = per_host.get(h, 0) + n
        while (len(batch) < want and len(self._hashing) < PROBE_AHEAD and len(held) < 4 * PROBE_AHEAD
               and (run := self.files.next_waiting()) is not None):
            if run.not_before > now:
                later.append(run)  # waiting to retry its first request
                continue
            hosts = run.host_names()
            if cap and any(per_host.get(h, 0) >= cap for h in hosts):
                held.append(run)
                continue
            if self._precheck(run):
                continue  # settled without the network
            for h in hosts:
                per_host[h] = per_host.get(h, 0) + 1
                if cap:  # held against the cap until its findings are taken
                    self.sched.reserved[h] = self.sched.reserved.get(h, 0) + 1
            batch.append(run)
        self.files.put_back(held)  # first again, in their order
        for run in later:
            self.files.requeue(run, first=False)
        if not batch:
            return
        orders = []
        for run in batch:
            urls = (run.request.url, *run.request.mirrors)
            options = tuple(self.dispatch.options_for(run, u) for u in urls)
            run.probed_by = worker = self._probe_worker(run)  # (chosen before it joins those being probed)
            self._probing[id(run)] = run
            run.probe_sent = now
            if worker is not None:
                self.workers.send(worker, ProbeOrder(id(run), urls, options))
                continue
            fresh = self._fresh_target(run)
            orders.append(ProbeOrder(id(run), urls, options, frozenset(urls[:1]) if fresh else frozenset()))
        self._probes.add(orders)

    def _probe_worker(self, run: FileRun) -> int | None:
        """The worker that probes ``run`` (see :func:`probed_in_worker`), and
        that its ranges then go to: the one with the most free slots once
        the connections of the files probed there and not started yet are
        counted.  None: the probe feed probes it."""
        if not probed_in_worker(run):
            return None
        promised: dict[int, int] = {}
        for r in [*self._probing.values(), *(r for r, _ in self._ready)]:
            if r.probed_by is not None:
                promised[r.probed_by] = promised.get(r.probed_by, 0) + r.job.connections
        return self.sched.worker_for_new_file(promised)

    def probed(self, ev: Probed) -> None:
        """A worker's findings for a file it probed (see _probe_worker)."""
        self._from_workers.append((ev.key, ev.found))

    def _fresh_target(self, run: FileRun) -> bool:
        """Nothing of the file was here when its job first looked (no final
        file, no part file): its probe may fetch its first bytes too, which
        will not be wasted.  (A file already here is probed for one byte, to
        see if it changed.)  A hint: its start looks again."""
        try:
            final = self.target(run, None)
        except SegdlError:
            return False
        if run.restarts or run.lock is not None:
            # Starting over in this job: its own part file is there now,
            # after the listing (and a file forced to one plain stream
            # takes no first bytes from a probe).
            return not final.exists() and not part_path(final).exists()
        return not run.job.had(final, part=True)

    def collect_probes(self) -> None:
        from_workers, self._from_workers = self._from_workers, []
        for key, found in [*self._probes.take(), *from_workers]:
            run = self._probing.pop(key)
            reserved = self.sched.reserved
            for h in run.host_names():
                if reserved.get(h, 0) > 1:
                    reserved[h] -= 1
                else:
                    reserved.pop(h, None)
            if key in self._dropped:
                self._dropped.discard(key)  # taken out of the queue meanwhile
            elif not lifecycle.is_final(run.state):
                self._ready.append((run, found))
        now = time.monotonic()
        ahead = max((start_rank(r) for k, r in self._probing.items()
                     if k not in self._dropped and now - r.probe_sent < HOLD_FOR_EARLIER), default=None)
        if len(self._ready) > 1:
            self._ready = in_start_order(self._ready)
        while self._ready and self.files.may_start(self.s.concurrent_files):
            run, found = self._ready[0]
            if ahead is not None and ahead > start_rank(run) and not _whole(found):
                break  # a file ahead of it is still being probed: it starts first (one carried whole takes no slot)
            self._ready.popleft()
            try:
                self.activation.activate(run, sources_of(run, found, self.on_message))
            except Hashing as h:
                self._hashing.append((run, found, h.fut))
            except SegdlError as e:
                if e.retryable and run.final is None:
                    try:
                        run.probe_retry = run.probe_retry.increment(e)
                    except SegdlError:
                        pass
                    else:  # the first request failed transiently: try again later
                        run.not_before = time.monotonic() + run.probe_retry.delay(e)
                        self.files.requeue(run, first=False)
                        continue
                self.finishing.settle(run, FileResult.failed(run.request.url, self._shown(run), e))
        self.activation.add_unwritten()

    def _shown(self, run: FileRun) -> str:
        """The path a result reports: the target, as far as it is known."""
        if run.final is not None:
            return str(run.final)
        try:
            return str(self.target(run, None))
        except SegdlError:
            return run.request.path or run.request.url

    def target(self, run: FileRun, remote: RemoteInfo | None) -> Path:
        req = run.request
        rel = req.path or choose_name(req.url, remote.filename if remote else None, None)
        if run.named is None or run.named[0] != rel:  # (checked once a name: at its probe, at its start)
            run.named = (rel, inside(run.job.dest, rel))
        return run.named[1]

    def _precheck(self, run: FileRun) -> bool:
        """Settle a file without the network when its path is known and it
        is already there with the expected digest.  True when settled."""
        req = run.request
        if req.path is None or run.fresh or not (req.blake3 or req.sha256 or req.git_sha1):
            return False
        try:
            final = self.target(run, None)
        except SegdlError as e:
            self.finishing.settle(run, FileResult.failed(run.request.url, run.request.path or "", e))
            return True
        if not final.exists():
            return self.existing.link_known_copy(run, final)
        run.final = final
        try:
            run.job.root.check(final)  # not one outside the folder, through a symlink
            return self.existing.existing(run, final, None)
        except Hashing as h:
            self._hashing.append((run, None, h.fut))
            return True  # out of the batch; back in the queue once hashed
        except SegdlError as e:
            self.finishing.settle(run, FileResult.failed(run.request.url, str(final), e))
            return True

    def collect_hashes(self) -> None:
        """Take up the runs whose existing file has been hashed: back to
        the queue (not probed yet) or to the ready list (probed)."""
        for item in [x for x in self._hashing if x[2].done()]:
            self._hashing.remove(item)
            run, found, _ = item
            if lifecycle.is_final(run.state):
                continue  # cancelled meanwhile
            if found is None:
                self.files.requeue(run)
            else:
                self._ready.appendleft((run, found))

