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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import multiprocess

from . import storage
from .bandwidth import FLOOR, demand, share
from .errors import (
    AccessExpiredError,
    BusyError,
    DownloadError,
    ExistsError,
    HashMismatchError,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
    StorageError,
    UsageError,
)
from .http import RemoteInfo
from .journal import Journal
from .messages import (
    Cancel,
    Digest,
    Durable,
    Fetch,
    Finished,
    Hashed,
    Limit,
    Notice,
    Release,
    Shrink,
    Shrunk,
    Stop,
    Track,
    Wakeup,
    WorkerCrashed,
    Written,
)
from .naming import choose_name, inside, is_credential, part_path, redact_url, same_origin
from .progress import FileProgress, Snapshot
from .ranges import MiB, plan_units, unit_for_latency
from .request import Request, Settings, job_spec
from .retry import RetryPolicy
from .results import FileResult, Results
from .scheduler import Assign, CancelSegment, FileComplete, FileFailed, RequestSplit, Scheduler
from .verify import Digests, digest_file, same_digest
from .worker import WorkerSettings, run_worker

PROBE_AHEAD = 16
# How often (seconds) files are judged by what they can use of a job-wide
# speed limit; an allotment must have held this long to be judged.
DEMAND_PERIOD = 1.5


@dataclass(slots=True)
class FileRun:
    """A file being worked on in this run."""

    index: int
    request: Request
    id: int = 0
    final: Path | None = None
    part: Path | None = None
    remote: RemoteInfo | None = None
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    plain: bool = False  # forced to one plain stream (server ignores Range)
    fresh: bool = False  # do not resume: start over
    received: int = 0  # bytes taken off the wire in this run
    snap: int = 0  # ``received`` at the last snapshot
    done: int = 0  # bytes on disk (estimate, includes earlier runs)
    seen: dict[int, int] = field(default_factory=dict)
    speed: float = 0.0
    state: str = "queued"
    draining: set[int] = field(default_factory=set)
    restart_reason: SegdlError | None = None
    sources: list["Source"] = field(default_factory=list)  # the URL and its mirrors
    source_of: dict[int, int] = field(default_factory=dict)  # segment -> source index
    paused: bool = False
    resolving: bool = False  # re-resolving an expired signed URL
    probe_retry: RetryPolicy = field(default_factory=RetryPolicy)
    not_before: float = 0.0  # do not probe before this (monotonic)
    limit: int = 0  # bytes/s for each of its connections (0: none)
    allotted: float = 0.0  # bytes/s for the whole file under the job's limit
    allotted_at: float = 0.0  # when ``allotted`` last changed (monotonic)
    demand: float | None = None  # what it can use, if less than allotted
    lock: tuple[Path, int] | None = None  # (part file, descriptor holding its flock)
    busy: bool = False  # another process downloads it: leave its journal row alone
    # The sha256 the server publishes for this download (not the user's
    # expectation: never journaled as one, learnt again by every probe).
    published_sha256: str | None = None
    updating: bool = False  # its final file is segdl's and out of date: replace it


@dataclass(slots=True)
class Source:
    """One URL that serves a file: the original or a mirror."""

    url: str
    remote: RemoteInfo
    failures: int = 0
    disabled: bool = False
    received: int = 0
    running: int = 0
    rate: float = 0.0  # bytes/s per connection, smoothed
    snap: int = 0  # ``received`` at the last snapshot


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


class _Hashing(Exception):
    """A file already on disk is being hashed off the loop; its run is
    taken up again when ``fut`` is done."""

    def __init__(self, fut: Future) -> None:
        super().__init__()
        self.fut = fut


class Coordinator:
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

    # ------------------------------------------------------------ public

    def run(self, requests: list[Request], *, collection: str | None = None,
            source: dict | None = None) -> Results:
        """``source``: what the requests were resolved from (a hub
        reference and the commit it was pinned to), kept with the job."""
        s = self.s
        self.results: list[FileResult | None] = [None] * len(requests)
        self.runs: dict[int, FileRun] = {}  # file id -> run
        self.targets: set[Path] = set()
        self.queue: deque[FileRun] = deque(FileRun(i, r, probe_retry=s.retry) for i, r in enumerate(requests))
        files_at_once = max(1, min(s.concurrent_files, len(requests)))
        total = max(1, min(s.max_connections, s.connections * files_at_once))
        # A file's segments all go to one worker (see Scheduler), so more
        # workers than files at once would only sit idle.
        workers = max(1, min(s.workers, total, files_at_once))
        self.slots = min(total, s.connections * math.ceil(files_at_once / workers))
        self.buffer_size = int(min(s.transfer.buffer_size, max(64 * 1024, s.buffer_budget // total)))
        self.options = replace(s.transfer, buffer_size=self.buffer_size)
        self.sched = Scheduler(workers, self.slots, total=total, min_split=s.min_split, retry=s.retry,
                               max_per_host=s.max_per_host or max(s.connections, 32))
        spec = job_spec(requests, s)
        if source:
            spec["source"] = source
        self.job = self.journal.create_job(s.dest, spec, collection)
        self.tokens: dict[str, str | None] = {}  # credential -> "Authorization: ..." (memory only)
        self.started = time.monotonic()
        self.events = self.ctx.Queue()
        self.orders = [self.ctx.Queue() for _ in range(workers)]
        wsettings = worker_settings(s, self.slots)
        # Load libcurl (pycurl) before forking: the workers inherit it
        # instead of each loading it again (~70 ms of CPU apiece at the
        # start).  No libcurl handle exists yet; each process makes its own.
        from .transport import Prober

        self.procs = [
            self.ctx.Process(target=run_worker, args=(i, self.orders[i], self.events, wsettings, os.getpid()),
                             name=f"segdl-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        for p in self.procs:
            p.start()
        # One thread each, with its own connections kept between batches.
        self.prober = ThreadPoolExecutor(1, thread_name_prefix="segdl-probe")
        self.probe_client = Prober()
        self.prober_aux = ThreadPoolExecutor(1, thread_name_prefix="segdl-resolve")
        self.resolve_client = Prober()
        self.resolving: dict[int, tuple[int, Future]] = {}
        self._limits_dirty = True
        self.last_demand = 0.0
        self.last_control = 0.0
        self.last_heartbeat = self.last_durable = 0.0
        self.last_workers_check = 0.0
        self.limits = {"max_speed": s.max_speed or None, "max_file_speed": s.max_file_speed or None}
        self.journal.update_job(self.job, pid=os.getpid(), heartbeat=time.time(),
                                max_speed=s.max_speed or None, max_file_speed=s.max_file_speed or None)
        self.verifier = ThreadPoolExecutor(2, thread_name_prefix="segdl-verify")
        # Files already on disk are hashed apart, so a re-run over many large
        # files does not hold up verifying and renaming fresh downloads.
        self.hasher = ThreadPoolExecutor(1, thread_name_prefix="segdl-hash")
        self.held_locks: list[int] = []  # of failed files, released at shutdown
        self.probing: Future | None = None
        self.probing_runs: list[FileRun] = []
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
        try:
            self._loop()
        finally:
            self._shutdown()
        self.journal.finish_job(self.job)
        return Results(r for r in self.results if r is not None)

    # ------------------------------------------------------------ loop

    def _loop(self) -> None:
        while True:
            self._start_probes()
            self._collect_probes()
            self._collect_verifications()
            self._collect_hashes()
            self._collect_resolutions()
            self._poll_control()
            self._dispatch(self.sched.plan(time.monotonic()))
            self._apply_limits()
            if self._finished():
                break
            self._drain_events()
            self._snapshot()
            self._heartbeat()
            self._check_workers()
        self._snapshot(force=True)

    def _finished(self) -> bool:
        return (
            not self.queue and self.probing is None and not self.ready and not self.hashing
            and not self.verifying and not self.finalizing and not self.awaiting_hash and not self.verified
            and all(r.state in ("done", "skipped", "failed", "hash_mismatch") for r in self.runs.values())
        )

    def _active_count(self) -> int:
        return sum(1 for r in self.runs.values() if r.state in ("downloading", "verifying"))

    # ------------------------------------------------------------ probe

    def _start_probes(self) -> None:
        """Probe files ahead of need (up to PROBE_AHEAD waiting), so a file
        can start the moment another finishes."""
        if self.probing is not None or not self.queue:
            return
        want = PROBE_AHEAD - len(self.ready)
        if want <= 0:
            return
        batch: list[FileRun] = []
        now = time.monotonic()
        later: list[FileRun] = []
        while self.queue and len(batch) < want and len(self.hashing) < PROBE_AHEAD:
            run = self.queue.popleft()
            if run.not_before > now:
                later.append(run)  # waiting to retry its first request
                continue
            if self._precheck(run):
                continue  # settled without the network
            batch.append(run)
        self.queue.extend(later)
        if not batch:
            return
        urls = [u for r in batch for u in (r.request.url, *r.request.mirrors)]
        per_url = {u: self._options_for(r, u) for r in batch for u in (r.request.url, *r.request.mirrors)}
        with_data = frozenset(r.request.url for r in batch if self._fresh_target(r))
        self.probing_runs = batch
        self.probing = self._wake_on(self.prober.submit(self.probe_client.probe, urls, self.options,
                                                        per_url=per_url, with_data=with_data))

    def _fresh_target(self, run: FileRun) -> bool:
        """Nothing of the file is here yet (no final file, no part file): its
        probe may fetch its first bytes too, which will not be wasted.  (A
        file already here is probed for one byte, to see if it changed.)"""
        try:
            final = self._target(run, None)
        except SegdlError:
            return False
        return not final.exists() and not part_path(final).exists()

    def _collect_probes(self) -> None:
        if self.probing is not None and self.probing.done():
            try:
                found = self.probing.result()
            except Exception as e:  # a bug, not a remote problem: report per file
                found = {r.request.url: DownloadError(f"probe failed: {e}") for r in self.probing_runs}
            batch, self.probing, self.probing_runs = self.probing_runs, None, []
            self.ready.extend((run, found) for run in batch)
        while self.ready and self._active_count() < self.s.concurrent_files:
            run, found = self.ready.popleft()
            try:
                self._activate(run, self._sources(run, found))
            except _Hashing as h:
                self.hashing.append((run, found, h.fut))
            except SegdlError as e:
                if e.retryable and run.final is None:
                    try:
                        run.probe_retry = run.probe_retry.increment(e)
                    except SegdlError:
                        pass
                    else:  # the first request failed transiently: try again later
                        run.not_before = time.monotonic() + run.probe_retry.delay(e)
                        self.queue.append(run)
                        continue
                self._settle(run, FileResult.failed(run.request.url, self._shown(run), e))

    def _shown(self, run: FileRun) -> str:
        """The path a result reports: the target, as far as it is known."""
        if run.final is not None:
            return str(run.final)
        try:
            return str(self._target(run, None))
        except SegdlError:
            return run.request.path or run.request.url

    def _sources(self, run: FileRun, found: dict) -> list[Source]:
        """The URL and the mirrors that answered and agree with each other."""
        urls = [run.request.url, *run.request.mirrors]
        ok: list[Source] = []
        first_error: SegdlError | None = None
        for u in urls:
            got = found.get(u) or DownloadError("no probe result")
            if isinstance(got, SegdlError):
                first_error = first_error or got
                if u != run.request.url:
                    self.on_message(f"mirror {redact_url(u)} dropped: {got.message}")
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
                    self.on_message(f"mirror {redact_url(u)} dropped: {why}")
                    continue
            ok.append(Source(u, got))
        if not ok:
            raise first_error or DownloadError("no source answered")
        return ok

    # ------------------------------------------------------------ activation

    def _target(self, run: FileRun, remote: RemoteInfo | None) -> Path:
        req = run.request
        rel = req.path or choose_name(req.url, remote.filename if remote else None, None)
        return inside(self.s.dest, rel)

    def _precheck(self, run: FileRun) -> bool:
        """Settle a file without the network when its path is known and it
        is already there with the expected digest.  True when settled."""
        req = run.request
        if req.path is None or run.fresh or not (req.blake3 or req.sha256 or req.git_sha1):
            return False
        try:
            final = self._target(run, None)
        except SegdlError as e:
            self._settle(run, FileResult.failed(run.request.url, run.request.path or "", e))
            return True
        if not final.exists():
            return self._link_known_copy(run, final)
        run.final = final
        try:
            return self._existing(run, final, None)
        except _Hashing as h:
            self.hashing.append((run, None, h.fut))
            return True  # out of the batch; back in the queue once hashed
        except SegdlError as e:
            self._settle(run, FileResult.failed(run.request.url, str(final), e))
            return True

    def _existing(self, run: FileRun, final: Path, remote: RemoteInfo | None) -> bool:
        """The final file exists: skip it, update it, or refuse to overwrite it.

        True when the file is settled (skipped).  False when it should be
        downloaded again: ``--force``, or the journal says segdl wrote this
        very file (same size and mtime) and the remote has changed since.
        """
        req = run.request
        if self.s.force or run.updating:
            return False
        row = self.journal.file_by_path(final)
        st = final.stat()
        # One hash of the file per pass, whichever check needs it first
        # (each ready digest is handed out once).
        digest: list[Digests] = []

        def hashed() -> Digests:
            if not digest:
                digest.append(self._digest_existing(final, sha256=bool(req.sha256), git_sha1=bool(req.git_sha1)))
            return digest[0]

        if row and row["state"] == "verified" and row["blake3"] and row["size"] == st.st_size:
            # A crash came between the rename and the journal's "done".
            if hashed().blake3 == row["blake3"]:
                self.journal.update_file(row["id"], state="done", mtime=st.st_mtime)
                row = self.journal.file_by_path(final)
        ours = bool(row and row["state"] in ("done", "skipped") and row["size"] == st.st_size
                    and row["mtime"] == st.st_mtime)
        if ours and self._expected(req, row):
            why = self._why_restart(row, remote) if remote is not None else None
            if why is None:
                self._settle(run, FileResult(req.url, str(final), "skipped", st.st_size, row["blake3"], row["sha256"]))
                return True
            self.on_message(f"{final.name}: {why} since it was downloaded; updating it")
            return False
        if ours and req.hub:
            # segdl wrote this file from a hub, and the hub now lists other
            # content for it (a branch moved on): replace it.
            self.on_message(f"{final.name}: changed on the hub since it was downloaded; updating it")
            run.updating = True
            return False
        if req.blake3 or req.sha256 or req.git_sha1:
            d = hashed()
            if same_digest(req.blake3, d.blake3) and same_digest(req.sha256, d.sha256) and same_digest(req.git_sha1, d.git_sha1):
                self._remember_done(run, final, d, st.st_size)
                self._settle(run, FileResult(req.url, str(final), "skipped", st.st_size, d.blake3, d.sha256))
                return True
        raise ExistsError(f"{final} exists and differs from the download; use --force to overwrite it")

    @staticmethod
    def _expected(req: Request, row: dict) -> bool:
        """Does the journal's record of a file match every digest the
        request expects?"""
        return (same_digest(req.blake3, row["blake3"])
                and (req.sha256 is None or same_digest(req.sha256, row["sha256"]))
                and (req.git_sha1 is None or same_digest(req.git_sha1, row["git_sha1"])))

    def _digest_existing(self, path: Path, sha256: bool, git_sha1: bool = False) -> Digests:
        """Digests of a file already on disk, computed in the hasher pool
        so the loop keeps serving running transfers meanwhile (a re-run over
        many large files hashes them all).  Raises :class:`_Hashing` until
        they are ready."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, sha256, git_sha1)
        fut = self.hashes.get(key)
        if fut is None:
            fut = self.hashes[key] = self._wake_on(self.hasher.submit(digest_file, path, sha256=sha256,
                                                                      git_sha1=git_sha1))
        if not fut.done():
            raise _Hashing(fut)
        del self.hashes[key]
        return fut.result()

    def _collect_hashes(self) -> None:
        """Take up the runs whose existing file has been hashed: back to
        the queue (not probed yet) or to the ready list (probed)."""
        for item in [x for x in self.hashing if x[2].done()]:
            self.hashing.remove(item)
            run, found, _ = item
            if found is None:
                self.queue.appendleft(run)
            else:
                self.ready.appendleft((run, found))

    def _link_known_copy(self, run: FileRun, final: Path) -> bool:
        """The same content (by expected digest) is already downloaded
        elsewhere, intact: hard-link it (or copy it) instead of fetching."""
        req = run.request
        for row in self.journal.files_with_digest(req.blake3, req.sha256, req.git_sha1):
            src = Path(row["path"])
            try:
                st = src.stat()
            except OSError:
                continue
            if st.st_size != row["size"] or st.st_mtime != row["mtime"] or src == final:
                continue
            if req.size is not None and req.size != st.st_size:
                continue
            if not self._expected(req, row):
                continue  # it matches one digest the request expects, not all
            try:
                self.targets.add(final)
                run.final, run.part = final, part_path(final)
                self._lock(run)  # link_or_copy goes through the part file
                storage.link_or_copy(src, final)
            except SegdlError as e:
                self._unlock(run)
                self.on_message(f"{final.name}: cannot reuse {src}: {e.message}")
                return False
            d = Digests(row["blake3"], row["sha256"], row["git_sha1"])
            self._remember_done(run, final, d, st.st_size, state="done")
            self.on_message(f"{final.name}: same content as {src}; linked, not downloaded")
            self._settle(run, FileResult(req.url, str(final), "done", st.st_size, d.blake3, d.sha256))
            return True
        return False

    def _remember_done(self, run: FileRun, final: Path, d: Digests, size: int, state: str = "skipped") -> None:
        self.journal.put_file(self.job, run.request.url, final, state=state, size=size,
                              blake3=d.blake3, sha256=d.sha256, git_sha1=d.git_sha1,
                              expected_git_sha1=run.request.git_sha1,
                              mtime=final.stat().st_mtime, error=None)

    def _activate(self, run: FileRun, sources: list[Source]) -> None:
        req = run.request
        if run.plain:
            sources = [Source(x.url, replace(x.remote, ranged=False)) for x in sources[:1]]
        run.sources = sources
        remote = sources[0].remote
        # The server publishes the file's sha256 (Repr-Digest, Digest, a
        # hub's X-Linked-ETag): the download is checked against it too.
        run.published_sha256 = remote.sha256
        if req.size is not None and remote.size is not None and req.size != remote.size:
            raise RemoteChangedError(f"the server reports {remote.size} bytes, the manifest says {req.size}")
        final = self._target(run, remote)
        if final in self.targets and run.final != final:
            raise UsageError(f"two downloads in this job would write {final}")
        self.targets.add(final)
        run.final, run.part, run.remote = final, part_path(final), remote
        if final.exists() and self._existing(run, final, remote):
            return
        self._lock(run)  # before the journal or the part file is touched
        row = self.journal.file_by_path(final)
        facts = dict(final_url=redact_url(remote.final_url), size=remote.size, ranged=int(remote.ranged),
                     etag=remote.etag, last_modified=remote.last_modified,
                     expected_blake3=req.blake3, expected_sha256=req.sha256, expected_git_sha1=req.git_sha1,
                     state="downloading", error=None, exit_code=None, paused=0)
        old = self.journal.segments(row["id"]) if row else []
        resume = self._resumable(run, row, old, remote)
        fid = self.journal.put_file(self.job, req.url, final,
                                    **(facts if resume else {"state": "queued", "paused": 0}))
        run.id = fid
        if resume:
            segments = old
            storage.prepare(run.part, remote.size, keep=True)
        else:
            if row and row["state"] not in ("done", "skipped") and old:
                why = run.restart_reason or self._why_restart(row, remote) or (
                    None if row["ranged"] else "the server does not support ranges, so a partial download cannot continue")
                if why:
                    self.on_message(f"{final.name}: {why}; restarting from zero")
            plan = (
                [(r.start, r.end) for r in plan_units(remote.size, unit_for_latency(remote.latency, self.s.min_segment))]
                if remote.ranged and remote.size is not None
                else ([(0, remote.size)] if remote.size != 0 else [])
            )
            ids = self.journal.replace_segments(fid, plan, **facts)  # journal row and plan first ...
            segments = [{"id": i, "start": a, "end": b, "done": 0} for i, (a, b) in zip(ids, plan)]
            storage.prepare(run.part, remote.size, keep=False)  # ... then the bytes' home
        run.state = "downloading"
        run.started = time.monotonic()
        self.runs[fid] = run
        self.sched.add_file(fid, ranged=remote.ranged, max_connections=self.s.connections,
                            host=urlsplit(remote.final_url).netloc.lower())
        for seg in segments:
            self.sched.add_segment(fid, seg["id"], seg["start"], seg["end"], seg["done"])
            run.seen[seg["id"]] = seg["start"] + seg["done"]
        run.done = sum(seg["done"] for seg in segments)
        if self.sched.file_done(fid):
            self._complete(fid)

    def _lock(self, run: FileRun) -> None:
        if run.lock is not None and run.lock[0] == run.part:
            return  # kept across a restart
        self._unlock(run)
        try:
            run.lock = (run.part, storage.lock_part(run.part))
        except BusyError:
            run.busy = True
            raise

    @staticmethod
    def _unlock(run: FileRun) -> None:
        if run.lock is not None:
            storage.unlock(run.lock[1])
            run.lock = None

    def _resumable(self, run: FileRun, row: dict | None, segments: list[dict], remote: RemoteInfo) -> bool:
        if run.fresh or row is None or not remote.ranged or remote.size is None:
            return False
        if row["state"] in ("done", "skipped", "hash_mismatch", "queued"):
            return False
        if self._why_restart(row, remote) or not row["ranged"]:
            return False
        if storage.file_size(run.part) != remote.size:
            return False
        return bool(segments) or remote.size == 0

    @staticmethod
    def _why_restart(row: dict, remote: RemoteInfo) -> str | None:
        if row["size"] != remote.size:
            return f"the remote size changed ({row['size']} -> {remote.size})"
        if row["etag"] and remote.etag and row["etag"] != remote.etag:
            return f"the remote ETag changed ({row['etag']} -> {remote.etag})"
        if row["last_modified"] and remote.last_modified and row["last_modified"] != remote.last_modified:
            return "the remote Last-Modified changed"
        return None

    # ------------------------------------------------------------ actions

    def _dispatch(self, actions) -> None:
        if any(isinstance(a, Assign) for a in actions):
            # New connections start with their share already applied: a
            # connection that starts uncapped bursts (socket buffers).
            self._limits_dirty = True
            self._apply_limits(skip={a.segment for a in actions if isinstance(a, Assign)})
        for a in actions:
            if isinstance(a, Assign):
                seg = self.sched.segments[a.segment]
                run = self.runs[seg.file]
                self._track(run, a.worker)
                i = self._pick_source(run)
                src = run.sources[i]
                src.running += 1
                run.source_of[a.segment] = i
                remote = src.remote
                self.orders[a.worker].put(
                    Fetch(a.segment, run.id, remote.final_url, str(run.part), a.position, a.end,
                          remote.expect(), self._options_for(run, remote.final_url, remote.multiplexed),
                          redirected=remote.redirected,
                          max_speed=run.limit, written=self._write_probed(run, a))
                )
            elif isinstance(a, RequestSplit):
                self.orders[a.worker].put(Shrink(a.segment, a.at, self.s.min_split))
            elif isinstance(a, CancelSegment):
                self.orders[a.worker].put(Cancel(a.segment))
            elif isinstance(a, FileComplete):
                self._complete(a.file)
            elif isinstance(a, FileFailed):
                self._fail(a.file, a.error)

    @staticmethod
    def _write_probed(run: FileRun, a: Assign) -> int:
        """Write the file's first bytes that its probe fetched, for the
        segment that starts with them (once: a retry asks the server
        again); the worker syncs them with the rest.  Returns how many."""
        first = run.sources[0].remote.first_bytes if run.sources else b""
        if not first:
            return 0
        for src in run.sources:
            src.remote = replace(src.remote, first_bytes=b"")  # (its memory goes now)
        run.remote = run.sources[0].remote
        if a.end is None or a.position >= len(first):
            return 0
        try:
            storage.write_at(run.part, first[a.position:min(len(first), a.end)], a.position)
        except StorageError:
            return 0  # the worker fetches them, and meets the trouble itself
        return min(len(first), a.end) - a.position

    @staticmethod
    def _pick_source(run: FileRun) -> int:
        """Least loaded healthy source, weighted by its measured speed; a
        source not measured yet is tried first."""
        best, best_score = 0, None
        for i, src in enumerate(run.sources):
            if src.disabled:
                continue
            score = ((src.rate or float("inf")) / (src.running + 1), -src.running, -i)
            if best_score is None or score > best_score:
                best, best_score = i, score
        return best

    def _options_for(self, run: FileRun, url: str | None = None, multiplexed: bool = False):
        """Transfer options for a request of ``run`` to ``url``.

        Credentials (Authorization, Cookie) given for the URL the user named
        are not sent to another host that a redirect led to, as curl does.
        ``multiplexed``: the probe saw HTTP/2, so new transfers wait to share
        a connection."""
        req = run.request
        headers = self.options.headers + tuple(req.headers)
        if req.credential and (url is None or same_origin(url, req.url)):
            token = self._token(req.credential)
            if token:
                headers += (token,)
        if url is not None and not same_origin(url, req.url, *req.mirrors):
            headers = tuple(h for h in headers if not is_credential(h))
        if headers == self.options.headers and not multiplexed and not req.hub:
            return self.options
        return replace(self.options, headers=headers, pipewait=multiplexed, hub=req.hub)

    def _token(self, credential: str) -> str | None:
        """The Authorization header a credential name stands for, read from
        the environment once per job (a re-run reads it again); never
        journaled, never printed."""
        if credential not in self.tokens:
            from .hubs.tokens import auth_header

            self.tokens[credential] = auth_header(credential)
        return self.tokens[credential]

    # ------------------------------------------------------------ events

    def _wake_on(self, fut: Future) -> Future:
        """Have the loop look at ``fut`` as soon as it is done, instead of
        at the next event or timeout."""
        fut.add_done_callback(lambda _f: self.events.put(Wakeup()))
        return fut

    def _drain_events(self) -> None:
        timeout = 0.05
        wake = self.sched.next_wakeup()
        if wake is not None:
            timeout = max(0.0, min(timeout, wake - time.monotonic()))
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            return
        batch = [ev]
        while len(batch) < 1000:
            try:
                batch.append(self.events.get_nowait())
            except queue.Empty:
                break
        splits: list[tuple] = []
        finished: list[Finished] = []
        for ev in batch:
            if isinstance(ev, Written):
                now = time.monotonic()
                for seg, pos in ev.positions.items():
                    self.sched.on_written(seg, pos, now)
                    self._saw(seg, pos)
            elif isinstance(ev, Durable):
                self._claim(ev)
            elif isinstance(ev, Shrunk):
                tail = self.sched.on_shrunk(ev.segment, ev.end)
                if tail is not None:
                    splits.append((ev.segment, ev.end, tail[0], tail[1]))
            elif isinstance(ev, Finished):
                self._saw(ev.segment, ev.position)
                self._claim(ev)
                finished.append(ev)
            elif isinstance(ev, Wakeup):
                pass
            elif isinstance(ev, Notice):
                if ev.text not in self.notices:  # once per job, whichever worker says it
                    self.notices.add(ev.text)
                    self.on_message(ev.text)
            elif isinstance(ev, Hashed):
                self._hashed(ev)
            elif isinstance(ev, WorkerCrashed):
                raise SegdlError(f"worker {ev.worker} crashed: {ev.message}")
        # Durable progress and splits reach the journal before anything
        # that depends on them (new tail segments, file completion).
        self._commit(splits)
        for ev in finished:
            self._finished_segment(ev)
        self._flush_verified()

    def _claim(self, ev: Durable | Finished) -> None:
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
        self.pending_done[seg] = max(self.pending_done.get(seg, 0), st.position - st.start)

    def _saw(self, seg: int, pos: int) -> None:
        st = self.sched.segments.get(seg)
        if st is None:
            return
        run = self.runs.get(st.file)
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

    def _commit(self, splits: list[tuple]) -> None:
        splits = [sp for sp in splits if sp[0] in self.sched.segments]  # its file may be gone
        if not self.pending_done and not splits:
            return
        tails = self.journal.record(self.pending_done, splits)
        self.pending_done = {}
        for seg, new_end, t_start, t_end in splits:
            fid = self.sched.segments[seg].file
            self.sched.add_segment(fid, tails[seg], t_start, t_end, 0)
            self.runs[fid].seen[tails[seg]] = t_start

    def _finished_segment(self, ev: Finished) -> None:
        st = self.sched.segments.get(ev.segment)
        if st is None:  # a segment of a file that was dropped (restart)
            for run in self.runs.values():
                run.draining.discard(ev.segment)
            self._restart_drained()
            return
        run = self.runs[st.file]
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
        self._limits_dirty = True
        if ev.outcome == "error" and isinstance(ev.error, (RemoteChangedError, RangeIgnoredError)):
            self.sched.on_finished(ev.segment, ev.position, "cancelled", None, time.monotonic())
            self._restart(run, ev.error)
            return
        if ev.outcome == "error" and isinstance(ev.error, AccessExpiredError) and i is not None:
            self._reresolve(run, i)
        if ev.outcome == "done" and st.end is None and ev.total is not None:
            self.journal.update_file(run.id, size=ev.total)
            run.remote = replace(run.remote, size=ev.total)
        if ev.outcome != "done" and not run.remote.ranged:
            run.done -= ev.position  # a plain stream starts over
            run.seen[ev.segment] = 0
        self._dispatch(self.sched.on_finished(ev.segment, ev.position, ev.outcome, ev.error,
                                              time.monotonic(), total=ev.total))

    def _restart(self, run: FileRun, error: SegdlError) -> None:
        """Start a file over (it changed remotely, or ignores Range), once
        every transfer of its old plan has stopped."""
        if run.state == "restarting":
            return  # already starting over; its draining set stands
        run.restarts += 1
        if run.restarts > self.s.restart_limit:
            self._dispatch(self.sched.fail_file(run.id, error))
            return
        if isinstance(error, RangeIgnoredError):
            run.plain = True
        run.restart_reason = error
        cancels = self.sched.remove_file(run.id)
        self._dispatch(cancels)
        run.draining = {c.segment for c in cancels}
        run.state = "restarting"
        self._restart_drained()

    # ------------------------------------------------------------ signed URLs

    def _reresolve(self, run: FileRun, i: int) -> None:
        """A signed URL expired: ask the original URL again for a fresh one.

        The file's segments wait (paused) meanwhile; if size and ETag are
        unchanged they continue where they were, else the file restarts."""
        if run.resolving:
            return
        run.resolving = True
        self._dispatch(self.sched.pause_file(run.id))
        src = run.sources[i]
        self.on_message(f"{run.final.name}: {redact_url(src.remote.final_url)} expired; resolving it again")
        fut = self._wake_on(self.prober_aux.submit(self.resolve_client.probe, [src.url], self.options,
                                                   per_url={src.url: self._options_for(run, src.url)}))
        self.resolving[run.id] = (i, fut)

    def _collect_resolutions(self) -> None:
        for fid, (i, fut) in list(self.resolving.items()):
            if not fut.done():
                continue
            del self.resolving[fid]
            run = self.runs.get(fid)
            if run is None or run.state not in ("downloading", "paused"):
                continue  # it ended or is starting over meanwhile
            run.resolving = False
            src = run.sources[i]
            try:
                got = fut.result()[src.url]
            except Exception as e:  # pragma: no cover - a bug in probing
                got = DownloadError(f"cannot resolve {redact_url(src.url)} again: {e}")
            if isinstance(got, SegdlError):
                self._dispatch(self.sched.fail_file(fid, got))
                continue
            old = src.remote
            if got.size != old.size or (old.etag and got.etag and got.etag != old.etag):
                why = RemoteChangedError(f"the remote file changed when its URL was resolved again "
                                         f"(size {old.size} -> {got.size}, ETag {old.etag} -> {got.etag})")
                self._restart(run, why)
                continue
            src.remote = got
            if not run.paused:
                self.sched.resume_file(fid)

    def _restart_drained(self) -> None:
        for fid, run in list(self.runs.items()):
            if run.state == "restarting" and not run.draining:
                del self.runs[fid]
                self._release(fid)
                self.targets.discard(run.final)
                self.queue.appendleft(
                    FileRun(run.index, run.request, restarts=run.restarts, plain=run.plain, fresh=True,
                            restart_reason=run.restart_reason, probe_retry=self.s.retry, lock=run.lock,
                            updating=run.updating)
                )
                run.lock = None  # the new run holds it now

    # ------------------------------------------------------------ file ends

    def _release(self, fid: int) -> None:
        self.tracked.pop(fid, None)
        for q in self.orders:
            q.put(Release(fid))

    def _track(self, run: FileRun, worker: int) -> None:
        """Have the worker that gets the file's first connection hash it as
        it writes it (a file's segments all go to that worker)."""
        if run.id in self.tracked:
            return
        self.tracked[run.id] = worker
        on_disk = tuple((st.start, st.position) for key in self.sched.files[run.id].segments
                        if (st := self.sched.segments[key]).position > st.start)
        self.orders[worker].put(Track(run.id, str(run.part), run.remote.size, self._wants_sha256(run), on_disk))

    @staticmethod
    def _wants_sha256(run: FileRun) -> bool:
        return bool(run.request.sha256 or run.published_sha256)

    def _complete(self, fid: int) -> None:
        run = self.runs[fid]
        run.state = "verifying"
        self.journal.update_file(fid, state="verifying")
        worker = self.tracked.get(fid)
        if worker is not None and not run.request.git_sha1:
            self.orders[worker].put(Digest(fid, run.remote.size))  # answered by a Hashed event
            self.awaiting_hash.add(fid)
        else:
            self._digest_from_disk(run)
        self._release(fid)

    def _digest_from_disk(self, run: FileRun) -> None:
        self.verifying[run.id] = self._wake_on(
            # A git blob sha1 (a small file a hub keeps in git) is read back:
            # the workers hash blake3 and sha256 only.
            self.verifier.submit(digest_file, run.part, sha256=self._wants_sha256(run),
                                 git_sha1=bool(run.request.git_sha1)))

    def _hashed(self, ev: Hashed) -> None:
        if ev.file not in self.awaiting_hash:
            return  # the file ended or restarted meanwhile
        self.awaiting_hash.discard(ev.file)
        run = self.runs[ev.file]
        if ev.blake3 is None:
            self._digest_from_disk(run)  # the worker did not see every byte
            return
        self._verify(ev.file, Digests(ev.blake3, ev.sha256))

    def _collect_verifications(self) -> None:
        for fid, fut in list(self.verifying.items()):
            if not fut.done():
                continue
            del self.verifying[fid]
            try:
                d: Digests = fut.result()
            except SegdlError as e:
                self._fail(fid, e)
                continue
            self._verify(fid, d)
        self._flush_verified()
        self._collect_finalizations()

    def _verify(self, fid: int, d: Digests) -> None:
        """Compare a finished file's digests with what is expected; rename
        it into place (off the loop) when they agree."""
        run = self.runs[fid]
        req = run.request
        if not (same_digest(req.blake3, d.blake3) and same_digest(req.sha256, d.sha256)
                and same_digest(run.published_sha256, d.sha256) and same_digest(req.git_sha1, d.git_sha1)):
            if req.blake3 and not same_digest(req.blake3, d.blake3):
                want, got = f"blake3 {req.blake3}", d.blake3
            elif not same_digest(req.sha256, d.sha256):
                want, got = f"sha256 {req.sha256}", d.sha256
            elif not same_digest(req.git_sha1, d.git_sha1):
                want, got = f"git blob sha1 {req.git_sha1} (listed by the hub)", d.git_sha1
            else:
                want, got = f"sha256 {run.published_sha256} (published by the server)", d.sha256
            err = HashMismatchError(
                f"hash mismatch: expected {want}, got {got}; the data is left in {run.part}"
            )
            self.journal.update_file(fid, state="hash_mismatch", blake3=d.blake3, sha256=d.sha256,
                                     error=err.message, exit_code=err.exit_code)
            self._end(run, "hash_mismatch", err, d)
            return
        # The digest is recorded before the rename: a crash between the
        # two leaves a final file that the next run recognises by it.
        self.verified.append((fid, d))

    def _flush_verified(self) -> None:
        """Files verified on this turn of the loop: their 'verified' in one
        synced commit (durable before any rename: after a power cut a final
        file without it would look like someone else's, "exists and
        differs"), then their renames in one job (one fsync per folder)."""
        if not self.verified:
            return
        batch, self.verified = self.verified, []
        self.journal.mark_verified([(fid, d.blake3, d.sha256, d.git_sha1) for fid, d in batch])
        runs = [self.runs[fid] for fid, _ in batch]
        fut = self._wake_on(self.verifier.submit(
            storage.finalize_many, [(r.part, r.final, r.remote.size) for r in runs]))
        self.finalizing[batch[0][0]] = (batch, fut)

    def _collect_finalizations(self) -> None:
        for key, (batch, fut) in list(self.finalizing.items()):
            if not fut.done():
                continue
            del self.finalizing[key]
            done = []
            for (fid, d), error in zip(batch, fut.result()):
                run = self.runs[fid]
                try:
                    if error is not None:
                        raise error
                    st = run.final.stat()
                except (SegdlError, OSError) as e:
                    self._fail(fid, e if isinstance(e, SegdlError) else StorageError(str(e)))
                    continue
                done.append((fid, d, st))
            self.journal.mark_done([(fid, st.st_mtime, st.st_size) for fid, _, st in done])
            for fid, d, _ in done:
                self._end(self.runs[fid], "done", None, d)

    def _fail(self, fid: int, error: SegdlError) -> None:
        run = self.runs.get(fid)
        if run is None or run.state in ("failed", "hash_mismatch", "done"):
            return
        self.journal.update_file(fid, state=error.status, error=error.message, exit_code=error.exit_code)
        self._end(run, error.status, error, None)  # cancels what still runs of it ...
        self._release(fid)  # ... before its descriptor is closed

    def _end(self, run: FileRun, status: str, error: SegdlError | None, d: Digests | None) -> None:
        run.state = status
        size = run.remote.size if run.remote else None
        self.results[run.index] = FileResult(
            run.request.url, str(run.final), status, size,
            d.blake3 if d else None, d.sha256 if d else None,
            error.message if error else None, error.exit_code if error else 0,
            round(time.monotonic() - run.started, 3), run.received,
        )
        self._retire(run)
        self.on_result(self.results[run.index])

    def _retire(self, run: FileRun) -> None:
        """A file in its final state leaves the working sets, so the loop's
        cost follows the files in flight, not the size of the job."""
        if run.state == "failed" and run.lock is not None:
            # Its cancelled transfers may still write: keep the part file
            # locked until the workers have stopped (end of the job).
            self.held_locks.append(run.lock[1])
            run.lock = None
        self._unlock(run)
        if run.id and self.runs.get(run.id) is run:
            del self.runs[run.id]
            self._dispatch(self.sched.remove_file(run.id))

    def _settle(self, run: FileRun, result: FileResult) -> None:
        run.state = result.status
        self.results[run.index] = result
        self._retire(run)
        self._record_failure(run, result)
        self.on_result(result)

    def _record_failure(self, run: FileRun, result: FileResult) -> None:
        if run.busy:
            return  # the row is the other process's
        if result.status == "failed" and run.id:
            self.journal.update_file(run.id, state="failed", error=result.error, exit_code=result.exit_code)
        elif result.status == "failed":
            # Failed before it had a row (at its first request): record it,
            # so status shows it and ``segdl retry`` finds it.
            try:
                path = run.final or self._target(run, None)
            except SegdlError:
                return  # an invalid target: nothing to retry
            row = self.journal.file_by_path(path)
            if row and row["state"] in ("done", "skipped"):
                return
            self.journal.put_file(self.job, run.request.url, path, state="failed", error=result.error,
                                  exit_code=result.exit_code, expected_blake3=run.request.blake3,
                                  expected_sha256=run.request.sha256, expected_git_sha1=run.request.git_sha1)

    # ------------------------------------------------------------ live control

    def _poll_control(self) -> None:
        """Pick up what other processes wrote to the journal: paused flags
        and speed limits (``segdl pause``, ``resume``, ``limit``)."""
        now = time.monotonic()
        if now - self.last_control < 0.25:
            return
        self.last_control = now
        limits, paused = self.journal.control_state(self.job)
        if limits and {k: limits.get(k) for k in self.limits} != self.limits:
            self.limits = {k: limits.get(k) for k in self.limits}
            self._limits_dirty = True
        for fid, flag in paused.items():
            run = self.runs.get(fid)
            if run is None or run.state not in ("downloading", "paused"):
                continue
            if flag and not run.paused:
                run.paused, run.state = True, "paused"
                self._dispatch(self.sched.pause_file(fid))
                self.journal.update_file(fid, state="paused")
                self.on_message(f"{run.final.name}: paused")
            elif not flag and run.paused:
                run.paused, run.state = False, "downloading"
                if not run.resolving:
                    self.sched.resume_file(fid)
                self.journal.update_file(fid, state="downloading")
                self.on_message(f"{run.final.name}: resumed")

    def _apply_limits(self, skip: set[int] = frozenset()) -> None:
        """Share the job's and each file's bandwidth among running
        connections (``skip``: segments about to start, told in their Fetch)."""
        now = time.monotonic()
        total = self.limits.get("max_speed") or 0
        judge = bool(total) and now - self.last_demand >= DEMAND_PERIOD
        if not self._limits_dirty and not judge:
            return  # the common case, every turn of the loop: nothing to do
        running = {fid: self.sched.running_count(fid) for fid in self.sched.files}
        if judge:
            # Judge each file by its speed under an allotment that has held
            # a while: spare bandwidth moves to the files that can use it.
            self.last_demand = now
            for fid, n in running.items():
                run = self.runs.get(fid)
                if run is None or not n or now - run.allotted_at < DEMAND_PERIOD:
                    continue
                d = demand(run.speed, run.allotted)
                if (d is None) != (run.demand is None) or (
                        d is not None and abs(d - run.demand) > 0.1 * max(run.demand, FLOOR)):
                    run.demand = d
                    self._limits_dirty = True
        if not self._limits_dirty:
            return
        self._limits_dirty = False
        per_conn = share(running, total, self.limits.get("max_file_speed") or 0,
                         {fid: r.demand for fid, r in self.runs.items()})
        for fid, limit in per_conn.items():
            run = self.runs.get(fid)
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
                    self.orders[st.worker].put(Limit(key, limit))

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

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_heartbeat < min(1.0, self.s.commit_interval):
            return
        self.last_heartbeat = now
        durable = now - self.last_durable >= self.s.commit_interval
        if durable:
            self.last_durable = now
        live = {
            fid: (round(r.speed, 1) if r.state == "downloading" else 0.0, r.done,
                  [{"url": redact_url(x.url), "bytes": x.received, "connections": x.running,
                    "speed": round(x.rate * x.running, 1), "failures": x.failures, "dropped": x.disabled}
                   for x in r.sources] if len(r.sources) > 1 else None)
            for fid, r in self.runs.items() if r.state in ("downloading", "paused", "verifying")
        }
        self.journal.heartbeat(self.job, live, durable=durable)

    # ------------------------------------------------------------ progress

    def _snapshot(self, force: bool = False) -> None:
        now = time.monotonic()
        dt = now - self.last_snapshot
        if not force and dt < 0.2:
            return
        files = []
        total_speed = 0.0
        for fid, run in self.runs.items():
            inst = (run.received - run.snap) / max(dt, 1e-3) if self.last_snapshot else 0.0
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
        self.last_snapshot = now
        if self.on_progress is None:
            return
        finished = sum(1 for r in self.results if r is not None)
        ended = [r for r in self.results if r is not None and r.status in ("done", "skipped")]
        ended_bytes = sum(r.size or 0 for r in ended)
        active_done = sum(f.done for f in files)
        active_size = sum(f.size or 0 for f in files)
        self.on_progress(Snapshot(tuple(files), finished, len(self.results), total_speed, now - self.started,
                                  done=ended_bytes + active_done, size=ended_bytes + active_size))

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
                self._claim(ev)
        try:
            self._commit([])
        except SegdlError:
            pass
        for p in self.procs:
            p.join(timeout=1)
            if p.is_alive():
                p.kill()
        for pool, client in ((self.prober, self.probe_client), (self.prober_aux, self.resolve_client)):
            pool.shutdown(wait=False, cancel_futures=True)
            client.close()  # now, or when its running probe ends
        self.hasher.shutdown(wait=False, cancel_futures=True)
        self.verifier.shutdown(wait=True, cancel_futures=True)
        # Nothing writes any more (workers gone, renames done): release the
        # part files, wherever their runs are.
        for run in [*self.runs.values(), *self.queue, *(r for r, _ in self.ready), *self.probing_runs,
                    *(r for r, _, _ in self.hashing)]:
            self._unlock(run)
        for fd in self.held_locks:
            storage.unlock(fd)
        self.held_locks.clear()
