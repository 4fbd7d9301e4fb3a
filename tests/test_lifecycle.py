"""The file lifecycle (engine/lifecycle.py), fed moves: no engine, no I/O."""

from __future__ import annotations

import pytest

from segdl.engine.rules import lifecycle as lc
from segdl.engine.run.filerun import FileRun, JobRun
from segdl.engine.values.request import Request


def test_the_happy_paths():
    for path in (["queued", "downloading", "verifying", "done"],
                 ["queued", "downloading", "paused", "downloading", "verifying", "hash_mismatch"],
                 ["queued", "skipped"], ["queued", "done"], ["queued", "paused", "downloading"],
                 ["queued", "downloading", "restarting", "failed"]):
        state = path[0]
        for new in path[1:]:
            state = lc.move(state, new)
        assert state == path[-1]


@pytest.mark.parametrize("old", ["queued", "downloading", "paused", "restarting", "verifying"])
def test_any_live_state_can_fail_or_be_removed(old):
    assert lc.move(old, "failed") == "failed"
    assert lc.move(old, "removed") == "removed"


@pytest.mark.parametrize("final", sorted(lc.FINAL))
@pytest.mark.parametrize("new", ["queued", "downloading", "paused", "verifying", "done", "failed", "removed"])
def test_a_final_state_is_final(final, new):
    if new == final:
        assert lc.move(final, new) == final  # the same state again is no move
    else:
        with pytest.raises(lc.IllegalMove):
            lc.move(final, new)


@pytest.mark.parametrize("old, new", [("queued", "verifying"), ("downloading", "done"), ("downloading", "queued"),
                                      ("verifying", "downloading"), ("restarting", "downloading"),
                                      ("paused", "done"), ("queued", "hash_mismatch")])
def test_moves_that_skip_a_step_are_refused(old, new):
    assert not lc.can_move(old, new)
    with pytest.raises(lc.IllegalMove):
        lc.move(old, new)


def test_a_run_changes_state_only_through_the_lifecycle():
    job = JobRun(1, __import__("pathlib").Path("."), 4, False, [None])
    run = FileRun(0, Request("http://127.0.0.1/a"), job)
    run.move("downloading")
    with pytest.raises(lc.IllegalMove):
        run.move("done")
    assert run.state == "downloading"


def test_the_groups_of_states_are_named_once():
    """The groups other modules ask about (complete, failures, active) live
    in lifecycle.py; no module spells one out as a tuple of state names
    (journal.py's SQL aside)."""
    import re
    from pathlib import Path

    assert lc.COMPLETE | lc.FAILURES | {lc.REMOVED} == lc.FINAL
    assert not lc.ACTIVE & lc.FINAL and not lc.COMPLETE & lc.FAILURES
    names = "|".join(sorted(lc.MOVES.keys() | lc.FINAL))
    group = re.compile(rf'[(\[{{]\s*"(?:{names})"\s*,\s*"(?:{names})"')
    top = Path(__file__).resolve().parents[1]
    spelled = [f"{p.relative_to(top)}:{n}" for d in ("engine", "cli") for p in sorted((top / d).rglob("*.py"))
               if p.name != "lifecycle.py"
               for n, line in enumerate(p.read_text().splitlines(), 1) if group.search(line)]
    assert not spelled, spelled


def test_j_counts_downloading_files_and_finishing_ones_are_bounded_apart():
    assert lc.may_start(0, 0, 1)
    assert not lc.may_start(1, 0, 1)
    # Files being verified and renamed do not hold -j slots ...
    assert lc.may_start(15, 40, 16)
    # ... up to their own bound, which grows with -j and has a floor.
    assert not lc.may_start(0, lc.FINISHING_PER_FILE * 16, 16)
    assert lc.may_start(0, lc.FINISHING_MIN - 1, 1)
    assert not lc.may_start(0, lc.FINISHING_MIN, 1)
