"""The file lifecycle (engine/lifecycle.py), fed moves: no engine, no I/O."""

from __future__ import annotations

import pytest

from segdl.engine import lifecycle as lc
from segdl.engine.filerun import FileRun, JobRun
from segdl.engine.request import Request


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
