"""Existing files: a target that is already on disk is skipped (segdl wrote
it, or it has the expected digest), updated (the remote changed), linked
from a copy downloaded elsewhere, or refused ("exists and differs").
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ..rules import lifecycle
from ..disk import storage
from ..values.errors import (
    ExistsError,
    SegdlError,
)
from .filerun import FileRun
from .files import Files
from ..rules.http import RemoteInfo, why_changed
from ..journal.writer import Journal
from ..inputs.naming import part_path
from ..values.request import Request
from ..values.results import FileResult
from ..disk.verify import Digests, digest_file, same_digest
from .workers import Workers


class Hashing(Exception):
    """A file already on disk is being hashed off the loop; its run is
    taken up again when ``fut`` is done."""

    def __init__(self, fut: Future) -> None:
        super().__init__()
        self.fut = fut


class Existing:
    """Owns the hashing of files already on disk (one thread of its own, so
    a re-run over many large files does not hold up verifying and renaming
    fresh downloads)."""

    activation: "Activation"  # the peers, set by the coordinator once every part exists
    finishing: "Finishing"

    def __init__(self, files: Files, journal: Journal, workers: Workers, on_message) -> None:
        self.files, self.journal, self.workers, self.on_message = files, journal, workers, on_message
        self._hashes: dict[tuple, Future] = {}  # (path, size, mtime, sha256?, git sha1?) -> its digests
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="segdl-hash")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def existing(self, run: FileRun, final: Path, remote: RemoteInfo | None) -> bool:
        """The final file exists: skip it, update it, or refuse to overwrite it.

        True when the file is settled (skipped).  False when it should be
        downloaded again: ``--force``, or the journal says segdl wrote this
        very file (same size and mtime) and the remote has changed since.
        """
        req = run.request
        if run.job.force or run.updating:
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

        if row and row["state"] in ("verified", "failed") and row["blake3"] and row["size"] == st.st_size:
            # A crash came between the rename and the journal's "done", or
            # the rename's folder could not be synced (the file failed): the
            # file here is the one verified, if it hashes to its digest.
            if hashed().blake3 == row["blake3"]:
                self.journal.update_file(row["id"], state="done", mtime=st.st_mtime, checked=None, checked_at=None)
                row = self.journal.file_by_path(final)
        ours = bool(row and row["state"] in lifecycle.COMPLETE and row["size"] == st.st_size
                    and row["mtime"] == st.st_mtime)
        if ours and self._expected(req, row):
            why = why_changed(row, remote) if remote is not None else None
            if why is None:
                self.finishing.settle(run, FileResult(req.url, str(final), "skipped", st.st_size, row["blake3"], row["sha256"]))
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
                self.finishing.settle(run, FileResult(req.url, str(final), "skipped", st.st_size, d.blake3, d.sha256))
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
        many large files hashes them all).  Raises :class:`Hashing` until
        they are ready."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, sha256, git_sha1)
        fut = self._hashes.get(key)
        if fut is None:
            fut = self._hashes[key] = self.workers.wake_on(self._pool.submit(digest_file, path, sha256=sha256,
                                                                             git_sha1=git_sha1))
        if not fut.done():
            raise Hashing(fut)
        del self._hashes[key]
        return fut.result()

    def link_known_copy(self, run: FileRun, final: Path) -> bool:
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
                self.files.claim_target(final, run.job.id)
                run.final, run.part = final, part_path(final)
                self.activation.lock(run)  # link_or_copy goes through the part file
                storage.link_or_copy(run.job.root, src, final)
            except SegdlError as e:
                self.activation.unlock(run)
                self.on_message(f"{final.name}: cannot reuse {src}: {e.message}")
                return False
            d = Digests(row["blake3"], row["sha256"], row["git_sha1"])
            self._remember_done(run, final, d, st.st_size, state="done")
            self.on_message(f"{final.name}: same content as {src}; linked, not downloaded")
            self.finishing.settle(run, FileResult(req.url, str(final), "done", st.st_size, d.blake3, d.sha256))
            return True
        return False

    def _remember_done(self, run: FileRun, final: Path, d: Digests, size: int, state: str = "skipped") -> None:
        self.journal.put_file(run.job.id, run.request.url, final, state=state, size=size,
                              blake3=d.blake3, sha256=d.sha256, git_sha1=d.git_sha1,
                              expected_git_sha1=run.request.git_sha1,
                              mtime=final.stat().st_mtime, error=None)

