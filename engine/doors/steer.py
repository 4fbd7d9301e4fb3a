"""Steering a job from another process through the journal: pausing and
resuming files, changing a job's limits.  A running job reads these
within a second (``engine/control.py``); a ``segdl serve`` is asked
directly by the CLI first, and what it does not run is recorded here.

The journal is opened, used and closed inside each call; what comes back
is a frozen value, never a row.
"""

from __future__ import annotations

from pathlib import Path

from ..journal.status import Target


def _open(journal_path: Path | None):
    from ..journal.writer import Journal

    return Journal(journal_path)


def targets(journal_path: Path | None, target: str) -> list[Target]:
    """The files TARGET names: a file id, a path, a URL or a collection."""
    j = _open(journal_path)
    try:
        return j.targets(target)
    finally:
        j.close()


def set_paused(journal_path: Path | None, file_ids: list[int], paused: bool) -> None:
    """Record the paused flag of these files (their job acts on it)."""
    if not file_ids:
        return
    j = _open(journal_path)
    try:
        j.set_paused(file_ids, paused)
    finally:
        j.close()


def set_limits(journal_path: Path | None, job_id: int | None, max_speed: int | None = -1,
               max_file_speed: int | None = -1) -> list[int]:
    """New limits (bytes/s; None: none; -1: leave it) for job ``job_id``, or
    every running job; the ids of the jobs changed ([]: none runs)."""
    fields = {k: v for k, v in (("max_speed", max_speed), ("max_file_speed", max_file_speed)) if v != -1}
    j = _open(journal_path)
    try:
        ids = [job_id] if job_id is not None else j.running_job_ids()
        for i in ids:
            j.update_job(i, **fields)
        return ids
    finally:
        j.close()
