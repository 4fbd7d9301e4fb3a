"""Clean-up that stays out of the timing, the next run's included.

A run's output is not deleted between runs: it is moved aside and its
files emptied (their blocks freed, their inodes kept), and the pile is
deleted once, after the last timed run.

Why: on ext4 without a journal (this project's benchmark machine), a new
inode is never one deleted in the last 60 s (360 s while its inode table
block is dirty), and the allocator steps over such inodes one by one
(``recently_deleted`` in fs/ext4/ialloc.c).  Deleting one tool's 20,000
output files made the next tool's file creations cost 200-1,100 us each
instead of about 40 us, for 1 to 6 minutes: the order of the tools, not
the tools, decided tiny20k's ratios.  (A tool that deletes files of its
own while it runs still pays for that: it is its own cost on such a
disk.)
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

#: How long after a deletion new files may be slowed by it, once the
#: deleted inodes are written back (ext4's RECENTCY_MIN is 60 s).
SETTLE_S = 61.0
#: Deleting fewer files than this does not measurably slow the next run.
MANY = 1000
#: Where the deletion time of the last pile is kept, under the work folder.
STAMP = ".deleted-at"


def set_aside(path: Path, pile: Path) -> None:
    """Move ``path`` into ``pile`` (a rename) and empty its files; they
    are deleted by :func:`delete_pile`."""
    if not path.exists():
        return
    pile.mkdir(parents=True, exist_ok=True)
    moved = pile / f"{len(os.listdir(pile))}-{path.name}"
    path.rename(moved)
    for folder, _, names in os.walk(moved):
        for name in names:
            p = os.path.join(folder, name)
            if not os.path.islink(p):
                try:
                    os.truncate(p, 0)
                except OSError:
                    pass  # (a file the tool left unwritable: deleted at the end as it is)


def delete_pile(work_root: Path, pile: Path) -> None:
    """Delete what was set aside; note when, for :func:`settle`."""
    count = _count(pile)
    shutil.rmtree(pile, ignore_errors=True)
    if count >= MANY:
        work_root.mkdir(parents=True, exist_ok=True)
        (work_root / STAMP).write_text(f"{time.time()}\n")


def clear(work_root: Path, log=print) -> None:
    """Start from an empty work folder whose deletions no longer slow new
    files: what a previous benchmark left is deleted, then
    :func:`settle`."""
    last = _stamp(work_root)
    if _count(work_root) >= MANY:
        last = time.time()
    shutil.rmtree(work_root, ignore_errors=True)
    settle(last, log)


def settle(last: float, log=print) -> None:
    """Wait until files deleted at ``last`` (a time; 0: none) no longer
    slow new ones."""
    wait = last + SETTLE_S - time.time()
    if wait > 0:
        os.sync()  # (dirty inode table blocks would make it 360 s)
        log(f"waiting {wait:.0f} s: files deleted just before would slow this run's new files")
        time.sleep(wait)


def last_deleted(root: Path) -> float:
    """When :func:`delete_pile` last deleted many files under ``root`` (0: not lately)."""
    return _stamp(root)


def _stamp(root: Path) -> float:
    try:
        return float((root / STAMP).read_text())
    except (OSError, ValueError):
        return 0.0


def _count(root: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(root))
