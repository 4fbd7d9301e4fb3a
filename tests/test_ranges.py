"""Segment planning and splitting: pure, no server."""

from hypothesis import given, settings, strategies as st

from segdl.engine.rules.ranges import (
    CHUNK_FIRST, CHUNK_LATENCIES, CHUNK_MAX, CHUNK_MIN, CUT_AFTER_SECONDS, MiB, chunk_size, cut_pays,
    ByteRange, Running, choose_split, covers_exactly, plan_segments, range_spec, split_point,
)
import pytest


def test_range_spec_is_inclusive_once():
    assert range_spec(0, 1) == "0-0"
    assert range_spec(10, 20) == "10-19"
    with pytest.raises(ValueError):
        range_spec(5, 5)


def test_plan_edges():
    assert plan_segments(0, 16) == []
    assert plan_segments(1, 16) == [ByteRange(0, 1)]
    # smaller than one minimum segment: one segment
    assert plan_segments(1000, 16, min_segment=4096) == [ByteRange(0, 1000)]
    segs = plan_segments(10 * 4096 + 7, 4, min_segment=4096)
    assert len(segs) == 4 and covers_exactly(segs, 10 * 4096 + 7)
    assert max(map(len, segs)) - min(map(len, segs)) <= 1


def test_covers_exactly_detects_gap_and_overlap():
    assert not covers_exactly([ByteRange(0, 5), ByteRange(6, 10)], 10)
    assert not covers_exactly([ByteRange(0, 6), ByteRange(5, 10)], 10)
    assert not covers_exactly([ByteRange(0, 5)], 10)
    assert covers_exactly([ByteRange(5, 10), ByteRange(0, 5)], 10)


def test_split_rule_halves_largest_remaining():
    running = [Running(1, 0, 100), Running(2, 10, 300), Running(3, 250, 300)]
    assert choose_split(running, min_split=10) == (2, 155)
    assert choose_split([Running(1, 90, 100)], min_split=10) is None
    assert split_point(0, 19, 10) is None and split_point(0, 20, 10) == 10


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=10**12),
    connections=st.integers(min_value=1, max_value=256),
    min_segment=st.integers(min_value=1, max_value=64 << 20),
    ops=st.lists(st.tuples(st.integers(0, 10**6), st.floats(0, 1), st.integers(1, 1 << 20)), max_size=60),
)
def test_any_sequence_of_splits_tiles_the_file(size, connections, min_segment, ops):
    """Plan, then apply arbitrary splits the way the coordinator does (the
    owner keeps [start, at), a new segment takes [at, end)): the segments
    always cover [0, size) with no gap and no overlap."""
    segs = plan_segments(size, connections, min_segment)
    assert covers_exactly(segs, size)
    assert all(len(s) > 0 for s in segs)
    assert len(segs) <= connections
    for pick, progress, min_split in ops:
        if not segs:
            break
        i = pick % len(segs)
        s = segs[i]
        position = s.start + int(progress * len(s))
        running = [Running(k, (position if k == i else seg.start), seg.end) for k, seg in enumerate(segs)]
        choice = choose_split(running, min_split)
        if choice is None:
            continue
        k, at = choice
        target = segs[k]
        assert target.start < at < target.end
        segs[k] = ByteRange(target.start, at)
        segs.append(ByteRange(at, target.end))
        assert covers_exactly(segs, size)


# ------------------------------------------------------- requests of a segment

def test_chunk_size_without_latency_halves_toward_the_end():
    # Unknown rate: the first request; then two seconds' worth, at most half
    # of what is left, never a runt under CHUNK_MIN at the end.
    assert chunk_size(64 * MiB, 0.0) == CHUNK_FIRST
    rate = 5 * MiB
    assert chunk_size(64 * MiB, rate) == 10 * MiB
    assert chunk_size(12 * MiB, rate) == 6 * MiB
    assert chunk_size(7 * MiB, rate) == 7 * MiB  # 4 MiB + a 3 MiB runt: one request
    assert chunk_size(1 * MiB, rate) == 1 * MiB


def test_chunk_size_grows_with_latency_but_still_halves_toward_the_end():
    rate, latency = 5 * MiB, 0.05
    floor = int(rate * latency * CHUNK_LATENCIES)  # 25 MiB: 5 s of transfer
    assert chunk_size(256 * MiB, rate, latency) == floor  # not 10 MiB: latency stays ~1%
    assert chunk_size(256 * MiB, rate, 0.001) == 10 * MiB  # a near server: two seconds' worth
    # Toward the end, half of what is left, as without latency: a tail
    # split then lands on a request boundary instead of cutting one.
    assert chunk_size(24 * MiB, rate, latency) == 12 * MiB
    assert chunk_size(7 * MiB, rate, latency) == 7 * MiB


@given(st.integers(1, 2**40), st.floats(0, 2e9), st.floats(0, 2.0))
def test_chunk_size_is_a_positive_part_of_what_is_left(remaining, rate, latency):
    size = chunk_size(remaining, rate, latency)
    assert 0 < size <= remaining
    assert size == remaining or remaining - size >= CHUNK_MIN
    assert size <= max(CHUNK_MIN, min(CHUNK_MAX, remaining // 2)) or size == remaining


def test_a_cut_pays_only_for_a_known_slow_finish():
    assert not cut_pays(100 * MiB, 0.0)  # unknown rate: never cut
    assert cut_pays(int(CUT_AFTER_SECONDS * MiB) + 1, MiB)
    assert not cut_pays(int(CUT_AFTER_SECONDS * MiB) - 1, MiB)
