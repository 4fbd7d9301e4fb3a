"""Speed limits: parsing and sharing.  Pure, no server."""

import pytest

from segdl.engine.bandwidth import KiB, MiB, parse_rate, share


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
