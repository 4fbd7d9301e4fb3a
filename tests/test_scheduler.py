"""The scheduler is driven by feeding events: no processes, no sockets."""

import random

from segdl.engine.values import errors
from segdl.engine.rules.retry import RetryPolicy
from segdl.engine.rules.scheduler import (
    Assign, CancelSegment, FileComplete, FileFailed, RequestSplit, Scheduler,
)


def make(workers=2, slots=2, **kw):
    s = Scheduler(workers, slots, min_split=10, rng=random.Random(0), **kw)
    return s


def test_a_files_segments_stay_on_one_worker_and_files_spread_over_workers():
    s = make()  # 2 workers x 2 slots
    s.add_file(1, ranged=True, max_connections=8)
    for i, (a, b) in enumerate([(0, 100), (100, 200), (200, 300)]):
        s.add_segment(1, 10 + i, a, b, 0)
    acts = s.plan(0.0)
    assigns = [a for a in acts if isinstance(a, Assign)]
    # Its worker has two slots: two segments start there, the third waits
    # rather than go to the other worker; no split either (no slot on its worker).
    assert [a.segment for a in assigns] == [10, 11]
    assert len({a.worker for a in assigns}) == 1
    assert not [a for a in acts if isinstance(a, RequestSplit)]
    # A second file takes the other worker.
    s.add_file(2, ranged=True, max_connections=8)
    s.add_segment(2, 20, 0, 100, 0)
    more = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    assert [a.segment for a in more] == [20] and more[0].worker != assigns[0].worker
    # The first file's segment ends: its waiting segment starts on its own worker.
    s.on_finished(10, 100, "done", None, 0.0)
    again = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    assert again == [Assign(assigns[0].worker, 12, 200, 300)]


def test_a_file_goes_to_the_worker_that_probed_it_unless_that_one_is_full():
    """The worker that probed a file holds a connection for its first range:
    its segments go there (not to the emptiest), while it has room; when it
    has none before the file's first segment starts, the emptiest takes the
    file, which then stays there."""
    s = make()  # 2 workers x 2 slots
    s.add_file(1, ranged=True, max_connections=2, worker=1)
    s.add_segment(1, 10, 0, 100, 0)
    s.add_segment(1, 11, 100, 200, 0)
    assert {(a.segment, a.worker) for a in s.plan(0.0) if isinstance(a, Assign)} == {(10, 1), (11, 1)}
    s.add_file(2, ranged=True, max_connections=2, worker=1)  # worker 1 is full now
    s.add_segment(2, 20, 0, 100, 0)
    assert [(a.segment, a.worker) for a in s.plan(0.0) if isinstance(a, Assign)] == [(20, 0)]
    s.on_finished(10, 100, "done", None, 0.0)  # room on worker 1 again: file 2 stays on 0
    s.add_segment(2, 21, 100, 200, 0)
    assert [(a.segment, a.worker) for a in s.plan(0.0) if isinstance(a, Assign)] == [(21, 0)]


def test_a_new_file_goes_to_the_worker_with_the_most_room_counting_promised_slots():
    """Files probed on a worker and not started yet hold its slots in
    promise: the next file goes elsewhere (the lowest worker on a tie)."""
    s = make(workers=2, slots=4)
    assert s.worker_for_new_file() == 0
    assert s.worker_for_new_file({0: 3}) == 1
    assert s.worker_for_new_file({0: 3, 1: 3}) == 0


def test_job_wide_connection_total_holds_across_workers():
    s = Scheduler(2, 4, total=5, min_split=10, rng=random.Random(0))
    for f in (1, 2):
        s.add_file(f, ranged=True, max_connections=4)
        for i in range(4):
            s.add_segment(f, f * 10 + i, i * 100, i * 100 + 100, 0)
    assigns = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    assert len(assigns) == 5
    by_file = {}
    for a in assigns:
        by_file.setdefault(a.segment // 10, set()).add(a.worker)
    assert all(len(ws) == 1 for ws in by_file.values()) and by_file[1] != by_file[2]


def test_resume_starts_at_durable_position_and_skips_done():
    s = make(workers=1, slots=4)
    s.add_file(1, ranged=True, max_connections=4)
    s.add_segment(1, 1, 0, 100, 100)  # done
    s.add_segment(1, 2, 100, 200, 37)
    acts = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    assert acts == [Assign(0, 2, 137, 200)]


def test_per_file_connection_cap():
    s = make(workers=1, slots=10)
    s.add_file(1, ranged=True, max_connections=2)
    for i in range(5):
        s.add_segment(1, i, i * 100, i * 100 + 100, 0)
    assigns = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    assert len(assigns) == 2


def test_split_accepted_creates_tail_and_shortens_owner():
    s = make(workers=1, slots=2)
    s.add_file(1, ranged=True, max_connections=4)
    s.add_segment(1, 1, 0, 1000, 0)
    acts = s.plan(0.0)
    split = [a for a in acts if isinstance(a, RequestSplit)][0]
    assert split.at == 500
    assert s.plan(0.0) == []  # no second request while one is outstanding
    s.on_written(1, 600)  # the owner got further than asked
    tail = s.on_shrunk(1, 600)
    assert tail == (600, 1000) and s.segments[1].end == 600
    s.add_segment(1, 2, 600, 1000, 0)
    assert [a for a in s.plan(0.0) if isinstance(a, Assign)] == [Assign(0, 2, 600, 1000)]


def test_refused_split_leaves_segment_alone():
    s = make(workers=1, slots=2)
    s.add_file(1, ranged=True, max_connections=4)
    s.add_segment(1, 1, 0, 1000, 0)
    s.plan(0.0)
    assert s.on_shrunk(1, None) is None and s.segments[1].end == 1000


def test_transient_error_waits_backoff_then_retries_from_durable_position():
    s = make(workers=1, slots=1)
    s.add_file(1, ranged=True, max_connections=1)
    s.add_segment(1, 1, 0, 100, 0)
    s.plan(0.0)
    out = s.on_finished(1, 40, "error", errors.TransientError("reset", retry_after=2), now=10.0)
    assert out == []
    assert s.plan(11.0) == []  # Retry-After not yet passed
    assert s.next_wakeup() >= 12.0
    assert s.plan(12.5) == [Assign(0, 1, 40, 100)]


def test_exhausted_retries_fail_the_file_and_cancel_its_other_segments():
    s = make(workers=1, slots=2, retry=RetryPolicy(max_attempts=0))
    s.add_file(1, ranged=True, max_connections=2)
    s.add_segment(1, 1, 0, 100, 0)
    s.add_segment(1, 2, 100, 200, 0)
    s.plan(0.0)
    out = s.on_finished(1, 0, "error", errors.TransientError("reset"), now=1.0)
    assert isinstance(out[0], FileFailed) and out[1] == CancelSegment(0, 2)


def test_hard_error_fails_only_its_file():
    s = make(workers=1, slots=4)
    for f in (1, 2):
        s.add_file(f, ranged=True, max_connections=2)
        s.add_segment(f, f * 10, 0, 100, 0)
    s.plan(0.0)
    out = s.on_finished(10, 0, "error", errors.HttpError("HTTP 404", status_code=404), now=1.0)
    assert [type(a) for a in out] == [FileFailed]
    assert s.on_finished(20, 100, "done", None, now=1.0) == [FileComplete(2)]


def test_plain_stream_restarts_from_zero_and_is_never_split():
    s = make(workers=1, slots=4)
    s.add_file(1, ranged=False, max_connections=4)
    s.add_segment(1, 1, 0, None, 0)
    acts = s.plan(0.0)
    assert acts == [Assign(0, 1, 0, None)]
    s.on_finished(1, 500, "error", errors.TransientError("reset"), now=0.0)
    assert s.plan(100.0) == [Assign(0, 1, 0, None)]
    assert s.on_finished(1, 900, "done", None, now=100.0, total=900) == [FileComplete(1)]
    assert s.segments[1].end == 900


def test_pause_cancels_and_resume_requeues():
    s = make(workers=1, slots=4)
    s.add_file(1, ranged=True, max_connections=4)
    s.add_segment(1, 1, 0, 100, 0)
    s.add_file(2, ranged=True, max_connections=4)
    s.add_segment(2, 2, 0, 100, 0)
    s.plan(0.0)
    assert s.pause_file(1) == [CancelSegment(0, 1)]
    s.on_finished(1, 30, "cancelled", None, now=0.0)
    assert all(not (isinstance(a, Assign) and a.segment == 1) for a in s.plan(0.0))
    s.resume_file(1)
    assert Assign(0, 1, 30, 100) in s.plan(0.0)


def test_files_share_the_budget_round_robin():
    s = make(workers=1, slots=4)
    for f in (1, 2):
        s.add_file(f, ranged=True, max_connections=4)
        for i in range(4):
            s.add_segment(f, f * 10 + i, i * 100, i * 100 + 100, 0)
    assigns = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    files = [s.segments[a.segment].file for a in assigns]
    assert files.count(1) == 2 and files.count(2) == 2


def test_paused_file_releases_its_connections_to_the_other():
    s = make(workers=1, slots=4)
    for f in (1, 2):
        s.add_file(f, ranged=True, max_connections=4)
        for i in range(4):
            s.add_segment(f, f * 10 + i, i * 100, i * 100 + 100, 0)
    s.plan(0.0)
    cancels = s.pause_file(1)
    for c in cancels:
        s.on_finished(c.segment, 0, "cancelled", None, now=0.0)
    assigns = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    assert len(assigns) == 2 and all(s.segments[a.segment].file == 2 for a in assigns)


def test_connections_per_host_are_capped_across_files():
    s = Scheduler(1, 16, min_split=10, max_per_host=3, rng=random.Random(0))
    for f, host in ((1, "a"), (2, "a"), (3, "b")):
        s.add_file(f, ranged=True, max_connections=4, host=host)
        for i in range(4):
            s.add_segment(f, f * 10 + i, i * 100, i * 100 + 100, 0)
    assigns = [a for a in s.plan(0.0) if isinstance(a, Assign)]
    hosts = [("a" if s.segments[a.segment].file in (1, 2) else "b") for a in assigns]
    assert hosts.count("a") == 3 and hosts.count("b") == 3


def test_a_probed_file_starts_by_priority_then_age_whatever_order_its_probe_came_back_in():
    """Intake's rule for the files waiting for room (the page's drag to
    reorder relies on it): the highest priority first, then the lowest id."""
    from types import SimpleNamespace as Run

    from segdl.engine.run.intake import in_start_order

    def order(*runs):
        return [r.index for r, found in in_start_order((r, {}) for r in runs)]

    ready = [Run(id=7, priority=0, index=0), Run(id=3, priority=0, index=1), Run(id=9, priority=2, index=2),
             Run(id=8, priority=2, index=3), Run(id=1, priority=-1, index=4)]
    assert order(*ready) == [3, 2, 1, 0, 4]  # ids 8, 9, 3, 7, 1
    # (no id yet: last of its rank; among those, in the job's order)
    assert order(Run(id=None, priority=0, index=0), Run(id=5, priority=0, index=1)) == [1, 0]
    assert order(Run(id=None, priority=0, index=3), Run(id=None, priority=0, index=2)) == [2, 3]
