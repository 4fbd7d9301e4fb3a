"""Speed limits: parsing and sharing.  Pure, no server."""

import pytest

from segdl.engine.rules.bandwidth import FLOOR, HEADROOM, KiB, MiB, demand, parse_rate, share


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("123", 123), ("500K", 500 * KiB), ("40M", 40 * MiB), ("1.5G", 1536 * MiB),
    ("40m", 40 * MiB), ("40MB", 40 * MiB), ("40MiB", 40 * MiB), ("40M/s", 40 * MiB), (" 2M ", 2 * MiB),
])
def test_parse_rate(text, value):
    assert parse_rate(text) == value


@pytest.mark.parametrize("text", ["", "fast", "-1M", "1T", "M", "1..5M", "nan", "inf"])
def test_parse_rate_refuses(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_no_limits_means_uncapped():
    assert share({1: 4, 2: 0}, 0, 0) == {1: 0, 2: 0}


def test_job_limit_is_split_evenly_over_files_then_connections():
    assert share({1: 4, 2: 2}, 8000, 0) == {1: 1000, 2: 2000}


def test_file_limit_caps_each_file():
    assert share({1: 4, 2: 2}, 0, 1000) == {1: 250, 2: 500}
    # the file limit binds before the job's share
    assert share({1: 4, 2: 2}, 8000, 1000) == {1: 250, 2: 500}
    # the job's share binds before the file limit
    assert share({1: 2, 2: 2}, 1000, 4000) == {1: 250, 2: 250}


def test_a_file_not_running_gets_what_a_first_connection_would():
    assert share({1: 0}, 1000, 0) == {1: 1000}
    assert share({1: 0}, 0, 300) == {1: 300}
    assert share({1: 0}, 1000, 300) == {1: 300}


def test_never_rounds_down_to_uncapped():
    assert share({1: 8}, 4, 0) == {1: 1}
    assert share({1: 8}, 0, 4) == {1: 1}


def test_a_file_that_uses_less_than_its_part_leaves_the_rest_to_others():
    # File 2 runs at 100 KB/s whatever it is given (a slow mirror): it gets
    # that plus headroom; file 1 takes the rest of the job's 1 MB/s.
    caps = share({1: 2, 2: 2}, 1_000_000, 0, {2: 100_000.0})
    assert caps[2] * 2 == 100_000 * HEADROOM
    assert caps[1] * 2 == 1_000_000 - caps[2] * 2
    # With two unknown files and a slow one, the two split what is left.
    caps = share({1: 1, 2: 1, 3: 1}, 1_000_000, 0, {3: 100_000.0})
    assert caps[3] == 125_000 and caps[1] == caps[2] == 437_500


def test_demand_never_lifts_a_file_above_an_even_part_or_its_own_limit():
    # A file that can use a lot is not given more than an even split.
    assert share({1: 1, 2: 1}, 100_000, 0, {1: 90_000.0}) == {1: 50_000, 2: 50_000}
    # The per-file limit still binds, and a slow file stays at its demand.
    caps = share({1: 1, 2: 1}, 100_000, 30_000, {2: 1_000_000.0})
    assert caps == {1: 30_000, 2: 30_000}


def test_a_stalled_file_keeps_a_floor():
    caps = share({1: 1, 2: 1}, 1_000_000, 0, {2: 0.0})
    assert caps[2] == FLOOR and caps[1] == 1_000_000 - FLOOR


@pytest.mark.parametrize("rate, allotted, expected", [
    (1000.0, 0, None),  # no allotment: nothing to judge by
    (950.0, 1000, None),  # uses it all: may want more
    (500.0, 1000, 500.0),  # uses half: that is what it can use
    (0.0, 1000, 0.0),
])
def test_demand(rate, allotted, expected):
    assert demand(rate, allotted) == expected


def test_demand_is_stable_once_applied():
    # A file judged at d is allotted d * HEADROOM; running at d under it, it
    # is judged at d again, not flipped back to "wants more".
    d = 300_000.0
    allotted = share({1: 1, 2: 1}, 10_000_000, 0, {1: d})[1]
    assert demand(d, allotted) == d
    # If it then speeds up to use its headroom, it asks for more.
    assert demand(allotted * 0.95, allotted) is None
