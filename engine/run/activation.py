"""Activation: a probed file becomes a download.  Its journal row and
segment plan first, then its locked, preallocated part file; resumed where
the journal says, or started over when the remote changed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from urllib.parse import urlsplit

from ..rules import lifecycle
from ..disk import storage
from ..values.errors import (
    BusyError,
    RemoteChangedError,
    SegdlError,
    UsageError,
)
from .filerun import FileRun, Source
from ..values.results import FileResult
from .files import Files
from ..rules.http import RemoteInfo, why_changed
from .finishing import mismatch
from ..journal.writer import Journal
from ..inputs.naming import part_path, redact_url
from ..rules.ranges import plan_units, unit_for_latency
from ..values.request import Settings
from ..rules.scheduler import Scheduler


class Activation:
    """Starts probed files, and owns their part files' locks: held while a
    file runs, kept to the end of the engine for a failed file whose
    cancelled transfers may still write."""

    intake: "Intake"  # the peers, set by the coordinator once every part exists
    existing: "Existing"
    control: "Control"
    finishing: "Finishing"

    def __init__(self, files: Files, journal: Journal, sched: Scheduler, settings: Settings, on_message) -> None:
        self.files, self.journal, self.sched, self.s, self.on_message = files, journal, sched, settings, on_message
        self._held: list[int] = []  # locks of failed files, released at shutdown
        self._unwritten: list[tuple[FileRun, dict, object]] = []  # new small files carried whole: rows to add

    def activate(self, run: FileRun, sources: list[Source]) -> None:
        req = run.request
        if run.plain:
            sources = [Source(x.url, replace(x.remote, ranged=False, first_bytes=b"")) for x in sources[:1]]
        run.sources = sources
        remote = sources[0].remote
        # The server publishes the file's sha256 (Repr-Digest, Digest, a
        # hub's X-Linked-ETag): the download is checked against it too.
        run.published_sha256 = remote.sha256
        if req.size is not None and remote.size is not None and req.size != remote.size:
            raise RemoteChangedError(f"the server reports {remote.size} bytes, the manifest says {req.size}")
        final = self.intake.target(run, remote)
        owner = self.files.writer_of(final)
        if owner is not None and owner != run.job.id and run.final != final:
            raise BusyError(f"another job of this engine is downloading {final}; add it again when that ends")
        if owner is not None and run.final != final:
            raise UsageError(f"two downloads in this job would write {final}")
        self.files.claim_target(final, run.job.id)
        run.final, run.part, run.remote = final, part_path(final), remote
        if run.provisional is not None and run.provisional != final:
            self.intake.rename_provisional(run, final)
        # A small file carried whole whose name was not there when the job
        # looked is not looked for again (each stat on this loop gave up the
        # GIL and waited to take it back): its rename never replaces a file
        # that appeared since.
        run.new = self._new(run, final, remote)
        if not run.new and final.exists():
            run.job.root.check(final)  # not one outside the folder, through a symlink
            if self.existing.existing(run, final, remote):
                return
        if self._queue_unwritten(run, remote):
            return
        self._start_written(run, remote, self.journal.file_by_path(final))

    def _start_written(self, run: FileRun, remote: RemoteInfo, row: dict | None) -> None:
        """The file starts from its part file: resumed, started over, or
        written from what its probe carried; ``row``: its path's row."""
        req, final = run.request, run.final
        if self.lock(run):  # before the journal or the part file is touched
            row = self.journal.file_by_path(final)  # (again: it may have changed before the lock)
        facts = self._facts(run, remote)
        old = self.journal.segments(row["id"]) if row else []
        resume = self._resumable(run, row, old, remote)
        whole = self._carried_whole(run, remote) if not resume else None
        if whole is not None:
            self._start_carried(run, row, old, facts, whole)
            return
        if resume:
            fid = self.journal.put_file(run.job.id, req.url, final, row_id=row["id"] if row else None, **facts)
            segments = old
            storage.prepare(run.lock, remote.size, keep=True)
        else:
            if row and row["state"] not in lifecycle.COMPLETE and old:
                why = run.restart_reason or why_changed(row, remote) or (
                    None if row["ranged"] else "the server does not support ranges, so a partial download cannot continue")
                if why:
                    self.on_message(f"{final.name}: {why}; restarting from zero")
            plan = (
                [(r.start, r.end) for r in plan_units(remote.size, unit_for_latency(remote.latency, self.s.min_segment))]
                if remote.ranged and remote.size is not None
                else ([(0, remote.size)] if remote.size != 0 else [])
            )
            # The row's new facts and its fresh plan in one commit: no row
            # pairs them with the old plan's progress, so a queued row's
            # plan can be trusted (a retried file resumes) ...
            with self.journal.atomic():
                fid = self.journal.put_file(run.job.id, req.url, final, row_id=row["id"] if row else None, **facts)
                ids = self.journal.replace_segments(fid, plan)
            segments = [{"id": i, "start": a, "end": b, "done": 0} for i, (a, b) in zip(ids, plan)]
            storage.prepare(run.lock, remote.size, keep=False)  # ... then the bytes' home
        self._begin(run, fid)
        self.sched.add_file(fid, ranged=remote.ranged, max_connections=run.job.connections, priority=run.priority,
                            host=urlsplit(remote.final_url).netloc.lower(), worker=run.probed_by)
        for seg in segments:
            self.sched.add_segment(fid, seg["id"], seg["start"], seg["end"], seg["done"])
            run.seen[seg["id"]] = seg["start"] + seg["done"]
        run.done = sum(seg["done"] for seg in segments)
        if run.paused:  # paused before it started (or before a restart)
            run.paused = False
            self.control.set_paused(run, True)
        if self.sched.file_done(fid):
            self.finishing.complete(fid)

    @staticmethod
    def _facts(run: FileRun, remote: RemoteInfo) -> dict:
        """What the file's row says at its start: paused if it was paused
        before it started, with its own priority and speed limit."""
        req = run.request
        return dict(final_url=redact_url(remote.final_url), size=remote.size, ranged=int(remote.ranged),
                    etag=remote.etag, last_modified=remote.last_modified,
                    expected_blake3=req.blake3, expected_sha256=req.sha256, expected_git_sha1=req.git_sha1,
                    state="paused" if run.paused else "downloading", error=None, exit_code=None,
                    paused=int(run.paused), priority=run.priority, max_speed=run.speed_cap or None)

    @staticmethod
    def _carried_whole(run: FileRun, remote: RemoteInfo) -> bytes | None:
        """The whole file, when its probe carried every byte of it (a small
        file) and it starts as it is (not paused)."""
        return remote.first_bytes if remote.whole and not run.paused and run.lock is not None else None

    @staticmethod
    def _new(run: FileRun, final, remote: RemoteInfo) -> bool:
        """Is ``run`` a small file carried whole whose name its folder did
        not hold when the job first looked?"""
        return (remote.whole and not run.paused and run.lock is None and not run.restarts
                and not run.job.had(final))

    def _queue_unwritten(self, run: FileRun, remote: RemoteInfo) -> bool:
        """A small file its probe carried whole, whose digests match, is
        started by :meth:`add_unwritten` at the end of this turn's intake,
        with the others of the turn: one INSERT for all their rows (each
        statement on the loop gives up the GIL, and waits to take it back
        from the probe thread).  False when it is not such a file."""
        if not remote.whole or run.paused or run.lock is not None:
            return False
        d = run.digests_of(remote.first_bytes)
        if mismatch(run, d) is not None:
            return False  # it fails as a file whose digest differs, from its part file
        facts = {**self._facts(run, remote), "state": "verified", "blake3": d.blake3, "sha256": d.sha256,
                 "git_sha1": d.git_sha1}
        self._unwritten.append((run, facts, d))
        return True

    def add_unwritten(self) -> None:
        """New small files carried whole (:meth:`_queue_unwritten`): their
        rows go in as verified in this turn's synced commit, and their part
        files are created, locked, written and renamed after that commit by
        the finishing, off the loop (many small files: most of a file's
        cost is the kernel's).  A file whose path has a row already (a
        failed download's, or another process's added since) starts as any
        file, its part file locked first: one that another process takes
        first fails as busy (it ends failed, alone)."""
        batch, self._unwritten = self._unwritten, []
        if not batch:
            return
        covered = self.finishing.covered(run for run, _, _ in batch)  # (else: a synced commit)
        with self.journal.atomic(durable=not covered):
            ids = self.journal.add_files([(run.job.id, run.request.url, run.final, facts) for run, facts, _ in batch])
        for (run, _, d), fid in zip(batch, ids):
            if fid is None:
                try:
                    self._start_written(run, run.remote, self.journal.file_by_path(run.final))
                except SegdlError as e:
                    self.finishing.settle(run, FileResult.failed(run.request.url, str(run.final), e))
                continue
            data = run.take_first_bytes()
            self._begin(run, fid)
            run.done = run.received = len(data)
            run.unwritten = data
            self.finishing.carried_verified(run, d, covered)

    def _start_carried(self, run: FileRun, row: dict | None, old: list, facts: dict, data: bytes) -> None:
        """A small file its probe carried whole is verified at its start:
        hashed from memory, written here, with no segment plan, no worker
        and no sync of its own.  Its row goes straight to ``verified``, with
        its digests, in this turn's synced commit: the commit a file
        verified later would have made (the journal claims none of its
        bytes: it has no segments, so a crash restarts it from zero, or
        finds its final file by that digest).  The finishing fsyncs it
        before its rename, as every file."""
        d = run.digests_of(data)
        verified = mismatch(run, d) is None
        if verified:  # recorded so in this turn's commit, which is synced, before its rename
            facts = {**facts, "state": "verified", "blake3": d.blake3, "sha256": d.sha256, "git_sha1": d.git_sha1}
        else:  # it fails as a file whose digest differs
            facts = {**facts, "state": "verifying"}
        run.take_first_bytes()
        with storage.disk_errors(f"cannot write {run.part}"):  # first: a failed write leaves the row as it was
            storage.pwrite_all(run.lock.fd, data, 0)  # (a longer leftover is cut before the rename)
        with self.journal.atomic(durable=verified):
            fid = self.journal.put_file(run.job.id, run.request.url, run.final, **facts,
                                        row_id=row["id"] if row else None)
            if old:
                self.journal.replace_segments(fid, [])
        self._begin(run, fid)
        run.done = run.received = len(data)
        if verified:
            self.finishing.carried_verified(run, d)
        else:
            self.finishing.carried(run, d)

    def _begin(self, run: FileRun, fid: int) -> None:
        """The run, registered under its row, starts downloading."""
        self.files.forget_waiting(run.id)
        run.id = fid
        run.move("downloading")
        run.started = time.monotonic()
        self.files.start(run)

    def lock(self, run: FileRun) -> bool:
        """Take the run's part file (see storage.lock_part); False when it
        already holds it (kept across a restart)."""
        if run.lock is not None and run.lock.path == run.part:
            return False
        self.unlock(run)
        try:
            run.lock = storage.lock_part(run.job.root, run.part)
        except BusyError:
            run.busy = True
            raise
        return True

    @staticmethod
    def unlock(run: FileRun) -> None:
        if run.lock is not None:
            storage.unlock(run.lock.fd)
            run.lock = None

    def hold_to_end(self, run: FileRun) -> None:
        """Keep the file's part locked until the workers have stopped (its
        cancelled transfers may still write)."""
        if run.lock is not None:
            self._held.append(run.lock.fd)
            run.lock = None

    def release_held(self) -> None:
        for fd in self._held:
            storage.unlock(fd)
        self._held.clear()

    def _resumable(self, run: FileRun, row: dict | None, segments: list[dict], remote: RemoteInfo) -> bool:
        if run.fresh or row is None or not remote.ranged or remote.size is None:
            return False
        if row["state"] in lifecycle.COMPLETE or row["state"] == lifecycle.HASH_MISMATCH:
            return False
        if why_changed(row, remote) or not row["ranged"]:
            return False
        if storage.file_size(run.part) != remote.size:
            return False
        return bool(segments) or remote.size == 0
