"""Finishing: a file whose segments are all durable is verified (the
worker's in-stream digest, or a read from disk), recorded as verified
(synced), renamed into place, and recorded done; or it fails, alone.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

from ..values.errors import (
    BusyError,
    HashMismatchError,
    SegdlError,
)
from ..disk import storage
from ..rules import lifecycle
from .filerun import FileRun
from .files import Files
from ..journal.writer import Journal
from ..values.messages import (
    Digest,
    Finalize,
    Finalized,
    Hashed,
)
from ..values.results import FileResult
from ..disk.verify import Digests, digest_file, same_digest
from .workers import Workers


class Finishing:
    """Owns the files between their last byte and their end: waiting for a
    worker's digest, hashed from disk, verified and not yet committed so,
    being renamed into place."""

    activation: "Activation"  # the peers, set by the coordinator once every part exists
    dispatch: "Dispatch"
    intake: "Intake"

    def __init__(self, files: Files, journal: Journal, workers: Workers, on_result) -> None:
        self.files, self.journal, self.workers, self.on_result = files, journal, workers, on_result
        self._awaiting_hash: set[int] = set()  # complete files whose worker is finishing their digest
        self._verifying: dict[int, Future] = {}  # hashed from disk
        self._verified: list[tuple[int, Digests]] = []  # to mark verified and rename, in one batch
        # Verified in this turn's commit, to rename after it: each batch with
        # whether its renames' syncfs makes that commit durable (covered).
        self._recorded: list[tuple[list[tuple[int, Digests]], bool]] = []
        self._recorded_now: list[tuple[int, Digests]] = []  # written verified by their activation in this turn
        self._now_covered = True  # ... each of them in a commit their syncfs makes durable
        self._finalizing: dict[int, list[tuple[int, Digests]]] = {}  # batches being renamed
        self._finalizing_here: dict[int, Future] = {}  # ... of them, by a thread of this process
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="segdl-verify")

    def idle(self) -> bool:
        return not (self._awaiting_hash or self._verifying or self._verified or self._recorded_now or self._recorded
                    or self._finalizing)

    def forget(self, fid: int) -> None:
        """A file cancelled while it was being verified."""
        self._verifying.pop(fid, None)
        self._awaiting_hash.discard(fid)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def complete(self, fid: int) -> None:
        run = self.files.runs[fid]
        run.move("verifying")
        self.journal.update_file(fid, state="verifying")
        worker = self.workers.tracker(fid)
        if run.carried is not None:
            self._verify(fid, run.carried)  # its probe carried it whole; the worker synced it
        elif worker is not None and not run.request.git_sha1:
            self.workers.send(worker, Digest(fid, run.remote.size))  # answered by a Hashed event
            self._awaiting_hash.add(fid)
        else:
            self._digest_from_disk(run)
        self.dispatch.release(fid)

    def carried(self, run: FileRun, d: Digests) -> None:
        """A small file its probe carried whole, written and hashed at its
        start, whose digests did not match (its row says verifying): it
        fails as any file whose digest differs."""
        run.move("verifying")
        self._verify(run.id, d)

    def covered(self, runs) -> bool:
        """Will the syncfs that makes these files' data durable before
        their renames (one per batch, ``storage.finalize_many``) make the
        journal's commit of them durable too?  Yes when the journal and
        every file's folder are on one file system whose syncfs is
        trusted: their commit need not sync the journal itself (many
        small files: one fdatasync of the WAL a turn, on the loop).
        A commit that something else asks to sync is synced anyway."""
        dev = self.journal.syncfs_dev
        if dev is None:
            return False
        seen: dict[int, bool] = {}
        for run in runs:
            root = run.job.root
            if id(root) not in seen:
                ident = _identity(root)
                seen[id(root)] = ident is not None and ident[0] == dev
            if not seen[id(root)]:
                return False
        return True

    def carried_verified(self, run: FileRun, d: Digests, covered: bool = False) -> None:
        """A small file its probe carried whole, hashed at its start, whose
        row was written as verified, with its digests, in this turn's
        synced commit: renamed into place after that commit
        (:meth:`committed`), as the files :meth:`flush_verified` records;
        its sync is the one before its rename.  Its part file is written
        then too (``run.unwritten``), when it was not at its start.
        ``covered``: that commit was not synced (:meth:`covered`)."""
        run.move("verifying")
        self._recorded_now.append((run.id, d))  # renamed after this turn's commit
        self._now_covered = self._now_covered and covered

    def _digest_from_disk(self, run: FileRun) -> None:
        self._verifying[run.id] = self.workers.wake_on(
            # A git blob sha1 (a small file a hub keeps in git) is read back:
            # the workers hash blake3 and sha256 only.
            self._pool.submit(digest_file, run.part, sha256=run.wants_sha256(),
                              git_sha1=bool(run.request.git_sha1)))

    def hashed(self, ev: Hashed) -> None:
        if ev.file not in self._awaiting_hash:
            return  # the file ended or restarted meanwhile
        self._awaiting_hash.discard(ev.file)
        run = self.files.runs[ev.file]
        if ev.blake3 is None:
            self._digest_from_disk(run)  # the worker did not see every byte
            return
        self._verify(ev.file, Digests(ev.blake3, ev.sha256))

    def collect_verifications(self) -> None:
        for fid, fut in list(self._verifying.items()):
            if not fut.done():
                continue
            del self._verifying[fid]
            try:
                d: Digests = fut.result()
            except SegdlError as e:
                self.fail(fid, e)
                continue
            self._verify(fid, d)
        self.flush_verified()
        self._collect_finalized_here()

    def _verify(self, fid: int, d: Digests) -> None:
        """Compare a finished file's digests with what is expected; rename
        it into place (off the loop) when they agree."""
        run = self.files.runs[fid]
        err = mismatch(run, d)
        if err is not None:
            self.journal.update_file(fid, state="hash_mismatch", blake3=d.blake3, sha256=d.sha256,
                                     error=err.message, exit_code=err.exit_code)
            self._end(run, "hash_mismatch", err, d)
            return
        # The digest is recorded before the rename: a crash between the
        # two leaves a final file that the next run recognises by it.
        self._verified.append((fid, d))

    def flush_verified(self) -> None:
        """Files verified on this turn of the loop: their 'verified' goes
        into the turn's commit, which is then synced (durable before any
        rename: after a power cut a final file without it would look like
        someone else's, "exists and differs"); their renames wait for
        :meth:`committed`."""
        if not self._verified:
            return
        batch, self._verified = self._verified, []
        covered = self.covered(self.files.runs[fid] for fid, _ in batch)
        self.journal.mark_verified([(fid, d.blake3, d.sha256, d.git_sha1) for fid, d in batch], durable=not covered)
        self._recorded.append((batch, covered))

    def committed(self) -> None:
        """The turn's synced commit holds the files verified in it: rename
        them into place, off the loop, a batch at a time (one sync, one
        fsync per folder).  A worker's process renames them: the kernel's
        work of many small files (create, write, sync, rename) took the
        GIL from the loop at every call when a thread here did it.  A file
        that came whole with more bytes than :data:`SEND_MAX` is written
        and renamed by a thread here, rather than sent."""
        if self._recorded_now:
            self._recorded.append((self._recorded_now, self._now_covered))
            self._recorded_now, self._now_covered = [], True
        for batch, covered in self._recorded:
            batch = [(fid, d) for fid, d in batch if fid in self.files.runs]
            big = {fid for fid, _ in batch if len(self.files.runs[fid].unwritten or b"") > SEND_MAX}
            here = [x for x in batch if x[0] in big]
            there = [x for x in batch if x[0] not in big]
            if here:
                self._finalizing_here[here[0][0]] = self.workers.wake_on(
                    self._pool.submit(_finalize_here, here[0][0], self._landing(here), covered))
            if there:
                roots: dict[int, tuple] = {}  # root -> (its path, its identity), once a batch
                items = []
                for root, *rest in self._landing(there):
                    if id(root) not in roots:
                        roots[id(root)] = (str(root.path), _identity(root))
                    items.append((roots[id(root)], *rest))
                self.workers.send(self.workers.next_finisher(), Finalize(there[0][0], tuple(items), covered))
        self._recorded.clear()

    def _landing(self, batch: list[tuple[int, Digests]]) -> list[tuple]:
        """The batch, as ``storage.finalize_many`` takes it (the bytes of a
        file that came whole go with it), being renamed from now on."""
        self._finalizing[batch[0][0]] = batch
        items = []
        for fid, _ in batch:
            r = self.files.runs[fid]
            items.append((r.job.root, r.part, r.final, r.remote.size, r.lock.ident if r.lock else None, r.unwritten,
                          not r.new))
            r.unwritten = None
        return items

    def _collect_finalized_here(self) -> None:
        for key, fut in list(self._finalizing_here.items()):
            if fut.done():
                del self._finalizing_here[key]
                self.finalized(fut.result())

    def finalized(self, ev: Finalized) -> None:
        """A batch is renamed into place (or each file says why not)."""
        batch = self._finalizing.pop(ev.batch, None)
        if batch is None:
            return
        done = []
        for (fid, d), landed in zip(batch, ev.results):
            if fid not in self.files.runs:
                continue  # it ended meanwhile
            if isinstance(landed, SegdlError):
                self.fail(fid, landed)
                continue
            done.append((fid, d, landed))
        self.journal.mark_done([(fid, mtime, size) for fid, _, (mtime, size) in done])
        for fid, d, _ in done:
            self._end(self.files.runs[fid], "done", None, d)

    def finalizing(self, fid: int) -> bool:
        """Is the file verified and being renamed into place right now?"""
        return any(fid == f for f, _ in (*self._verified, *self._recorded_now)) or any(
            fid == f for b, _ in self._recorded for f, _ in b) or any(
            fid == f for batch in self._finalizing.values() for f, _ in batch)

    def fail(self, fid: int, error: SegdlError) -> None:
        run = self.files.runs.get(fid)
        if run is None or run.state in lifecycle.FAILURES or run.state == lifecycle.DONE:
            return
        if isinstance(error, BusyError):
            run.busy = True  # another process downloads it: its row is that process's now
        if not run.busy:
            self.journal.update_file(fid, state=error.status, error=error.message, exit_code=error.exit_code)
        self._end(run, error.status, error, None)  # cancels what still runs of it ...
        self.dispatch.release(fid)  # ... before its descriptor is closed

    def _end(self, run: FileRun, status: str, error: SegdlError | None, d: Digests | None) -> None:
        self.final(run, status)
        size = run.remote.size if run.remote else None
        self.files.set_result(run, FileResult(
            run.request.url, str(run.final), status, size,
            d.blake3 if d else None, d.sha256 if d else None,
            error.message if error else None, error.exit_code if error else 0,
            round(time.monotonic() - run.started, 3), size if run.received == size else run.received,
            len(run.conns), ",".join(sorted(p for p in run.protocols if p)) or None,
            _ms(run.connect_s), _ms(run.tls_s),
        ))
        self.retire(run)
        self.on_result(run.job.results[run.index])

    def retire(self, run: FileRun, hold_lock: bool = False) -> None:
        """A file in its final state leaves the working sets, so the loop's
        cost follows the files in flight, not the size of the job."""
        if hold_lock or run.state in (lifecycle.FAILED, lifecycle.REMOVED):
            # Its cancelled transfers may still write: keep the part file
            # locked until the workers have stopped (end of the job).
            self.activation.hold_to_end(run)
        self.activation.unlock(run)
        if run.id and self.files.drop(run.id, run):
            self.dispatch.drop_file(run.id)

    def settle(self, run: FileRun, result: FileResult) -> None:
        self.final(run, result.status)
        self.files.set_result(run, result)
        self.retire(run)
        self._record_failure(run, result)
        self.on_result(result)

    def _record_failure(self, run: FileRun, result: FileResult) -> None:
        if run.busy:
            return  # the row is the other process's
        if result.status == "failed" and run.id:
            if self.files.runs.get(run.id, run) is not run:
                return  # the row is another live run's (the same target in another job)
            self.journal.update_file(run.id, state="failed", error=result.error, exit_code=result.exit_code)
        elif result.status == "failed":
            # Failed before it had a row (at its first request): record it,
            # so status shows it and ``segdl retry`` finds it.
            try:
                path = run.final or self.intake.target(run, None)
            except SegdlError:
                return  # an invalid target: nothing to retry
            row = self.journal.file_by_path(path)
            if row and (row["state"] in lifecycle.COMPLETE or self.files.holds(row["id"])):
                return
            self.journal.put_file(run.job.id, run.request.url, path, state="failed", error=result.error,
                                  exit_code=result.exit_code, expected_blake3=run.request.blake3,
                                  expected_sha256=run.request.sha256, expected_git_sha1=run.request.git_sha1)

    def final(self, run: FileRun, status: str) -> None:
        """A file reaches a final state; its job ends with its last file."""
        was_final = lifecycle.is_final(run.state)
        run.move(status)
        self.files.forget_waiting(run.id)
        if not was_final:
            run.job.left -= 1
            if run.job.finished:
                self.files.job_ended(run.job)


def mismatch(run: FileRun, d: Digests) -> HashMismatchError | None:
    """Why a file's digests ``d`` are not the ones expected of it (from
    its request, a hub, or the server), or None when they all agree."""
    req = run.request
    if (same_digest(req.blake3, d.blake3) and same_digest(req.sha256, d.sha256)
            and same_digest(run.published_sha256, d.sha256) and same_digest(req.git_sha1, d.git_sha1)):
        return None
    if req.blake3 and not same_digest(req.blake3, d.blake3):
        want, got = f"blake3 {req.blake3}", d.blake3
    elif not same_digest(req.sha256, d.sha256):
        want, got = f"sha256 {req.sha256}", d.sha256
    elif not same_digest(req.git_sha1, d.git_sha1):
        want, got = f"git blob sha1 {req.git_sha1} (listed by the hub)", d.git_sha1
    else:
        want, got = f"sha256 {run.published_sha256} (published by the server)", d.sha256
    return HashMismatchError(f"hash mismatch: expected {want}, got {got}; the data is left in {run.part}")


#: The most bytes of a file written with its rename in a worker's process
#: (sent there, pickled, through a pipe); a larger file that came whole
#: is written here.  (2,000 x 1 MiB all sent: 222 MB -> 318-397 MB peak
#: RSS, the same wall.)
SEND_MAX = 64 * 1024


def _finalize_here(key: int, items: list, journal_too: bool) -> Finalized:
    try:
        results = tuple(storage.finalize_many(items, journal_too=journal_too))
    except Exception as e:  # a bug: these files fail, the others go on
        results = (SegdlError(f"cannot finish the file: {type(e).__name__}: {e}"),) * len(items)
    return Finalized(-1, key, results)  # (-1: no worker)


def _identity(root) -> tuple[int, int] | None:
    """The root folder's (device, inode), for the worker that opens it
    again; None where it cannot be opened (each file meets that error)."""
    try:
        return root.identity()
    except (OSError, SegdlError):
        return None


def _ms(seconds: float) -> float:
    """Milliseconds, to 0.1.  A job keeps every file's result to its end:
    a file that opened no connection of its own (one its probe brought
    whole) shares one 0.0 instead of holding two new floats (100,000
    files: about 5 MB)."""
    return round(seconds * 1000, 1) if seconds else 0.0
