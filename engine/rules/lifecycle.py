"""A file's lifecycle: its states and the moves between them, in one place.

    queued ──> downloading <──> paused
      │            │   │           │
      │            │   └──> restarting ──> (queued again, as a new run)
      │            v
      │        verifying ──> done | hash_mismatch
      v
    skipped | done (already here, or linked from a copy)

Any state but a final one can move to ``failed`` (that file alone) or to
``removed`` (cancelled).  Pure: no I/O, tested by feeding moves.
"""

from __future__ import annotations

QUEUED, DOWNLOADING, PAUSED, RESTARTING, VERIFYING = "queued", "downloading", "paused", "restarting", "verifying"
DONE, SKIPPED, FAILED, HASH_MISMATCH, REMOVED = "done", "skipped", "failed", "hash_mismatch", "removed"

FINAL = frozenset({DONE, SKIPPED, FAILED, HASH_MISMATCH, REMOVED})
# The groups the rest of segdl asks about, named here only.
COMPLETE = frozenset({DONE, SKIPPED})  # the file is here, verified
FAILURES = frozenset({FAILED, HASH_MISMATCH})  # what retry runs again
ACTIVE = frozenset({DOWNLOADING, VERIFYING})  # bytes arriving or being verified
# A file's journal row: a run's states but ``restarting`` (the row stays as
# it was until the new run starts), and ``verified`` (its digest is synced,
# its rename is under way).
VERIFIED = "verified"
RECORDED = (QUEUED, DOWNLOADING, PAUSED, VERIFYING, VERIFIED, DONE, SKIPPED, FAILED, HASH_MISMATCH, REMOVED)
# (A paused file's last segment may already be in flight: it can complete.)
MOVES: dict[str, frozenset[str]] = {
    QUEUED: frozenset({DOWNLOADING, PAUSED, SKIPPED, DONE}),
    DOWNLOADING: frozenset({PAUSED, RESTARTING, VERIFYING}),
    PAUSED: frozenset({DOWNLOADING, RESTARTING, VERIFYING}),
    RESTARTING: frozenset(),
    VERIFYING: frozenset({DONE, HASH_MISMATCH}),
}


class IllegalMove(Exception):
    """A bug: the engine tried a move the lifecycle does not allow."""


def can_move(old: str, new: str) -> bool:
    if old == new:
        return True
    if old in FINAL:
        return False
    return new in (FAILED, REMOVED) or new in MOVES[old]


def move(old: str, new: str) -> str:
    """``new`` if the lifecycle allows ``old -> new``, else IllegalMove."""
    if not can_move(old, new):
        raise IllegalMove(f"a file cannot go from {old} to {new}")
    return new


def is_final(state: str) -> bool:
    return state in FINAL


#: Files past their last byte (verifying, waiting for their fsync and
#: rename) that may wait beside ``-j`` downloading ones: this many per -j,
#: at least FINISHING_MIN.  Each holds its part file open.
FINISHING_PER_FILE = 4
FINISHING_MIN = 64


def may_start(downloading: int, verifying: int, files_at_once: int) -> bool:
    """May one more file start?  ``-j`` counts files taking bytes off the
    wire: a file being verified and renamed into place no longer holds a
    slot, so many small files are not held back by their fsyncs, which
    the finishing batches.  Those are bounded too, so a disk slower than
    the network does not open a descriptor per file of the job."""
    return downloading < files_at_once and verifying < max(FINISHING_MIN, FINISHING_PER_FILE * files_at_once)
