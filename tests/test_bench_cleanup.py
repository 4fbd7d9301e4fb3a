"""The benchmark's clean-up between runs (benchmarks/segbench/cleanup.py):
a run's output is set aside emptied, not deleted, so that the next tool's
new files are not slowed by just-deleted inodes; the pile goes at the end."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from segbench import cleanup  # noqa: E402


def _tree(root: Path, files: int) -> None:
    (root / "sub").mkdir(parents=True)
    for i in range(files):
        (root / ("sub" if i % 2 else "") / f"f{i}.bin").write_bytes(b"x" * 5000)


def test_set_aside_keeps_the_inodes_and_frees_the_bytes(tmp_path):
    out, pile = tmp_path / "dl" / "run-1", tmp_path / "pile"
    _tree(out, 6)
    inodes = sorted(p.stat().st_ino for p in out.rglob("*.bin"))
    cleanup.set_aside(out, pile)
    assert not out.exists()
    kept = list(pile.rglob("*.bin"))
    assert sorted(p.stat().st_ino for p in kept) == inodes  # moved, not copied or deleted
    assert {p.stat().st_size for p in kept} == {0}
    # A second run's output of the same name does not collide.
    _tree(out, 2)
    cleanup.set_aside(out, pile)
    assert len(list(pile.rglob("*.bin"))) == 8
    cleanup.set_aside(tmp_path / "never-made", pile)  # nothing to set aside
    assert len(list(pile.iterdir())) == 2


def test_deleting_a_big_pile_makes_the_next_start_wait(tmp_path, monkeypatch):
    work, waits = tmp_path / "work", []
    monkeypatch.setattr(cleanup, "MANY", 5)
    # (its own clock: time.sleep itself is shared with other tests' threads)
    monkeypatch.setattr(cleanup, "time", SimpleNamespace(time=time.time, sleep=waits.append))
    _tree(work / "dl" / "a", 4)
    cleanup.set_aside(work / "dl" / "a", work / "pile")
    cleanup.delete_pile(work, work / "pile")  # 4 files: not many
    assert not (work / "pile").exists() and cleanup.last_deleted(work) == 0.0
    _tree(work / "dl" / "b", 6)
    cleanup.set_aside(work / "dl" / "b", work / "pile")
    before = time.time()
    cleanup.delete_pile(work, work / "pile")
    assert before <= cleanup.last_deleted(work) <= time.time()
    cleanup.clear(work, log=lambda msg: None)  # the stamp says: just deleted
    assert not work.exists()
    assert len(waits) == 1 and cleanup.SETTLE_S - 5 < waits[0] <= cleanup.SETTLE_S
    # A leftover of many files (a benchmark that was killed) is deleted
    # now, and waited for; a small one is not.
    _tree(work / "dl" / "c", 6)
    cleanup.clear(work, log=lambda msg: None)
    _tree(work / "dl" / "d", 2)
    cleanup.clear(work, log=lambda msg: None)
    assert not work.exists() and len(waits) == 2
