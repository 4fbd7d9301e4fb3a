"""Retry policy: a frozen value; pure, no server, no clock."""

import pickle
import random

import pytest

from segdl.engine.values import errors
from segdl.engine.rules.retry import RetryPolicy, parse_retry_after


def test_increment_returns_new_policy_and_never_mutates():
    p = RetryPolicy(max_attempts=2)
    e = errors.TransientError("reset")
    p1 = p.increment(e)
    assert p.attempts == 0 and p1.attempts == 1
    p2 = p1.increment(e)
    with pytest.raises(errors.TransientError):
        p2.increment(e)


def test_hard_errors_are_not_retried():
    with pytest.raises(errors.HttpError):
        RetryPolicy().increment(errors.HttpError("HTTP 404 (not found)", status_code=404))


def test_backoff_grows_is_capped_and_jittered():
    rng = random.Random(1)
    p = RetryPolicy(backoff=1.0, max_backoff=8.0)
    delays = []
    for _ in range(6):
        p = p.increment(errors.TransientError("x"))
        delays.append(p.delay(None, rng))
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert delays[0] <= 1.0 and delays[-1] >= 4.0  # equal jitter keeps >= half the cap


def test_retry_after_wins_but_is_capped():
    p = RetryPolicy(backoff=0.1, max_retry_after=30).increment(errors.TransientError("x"))
    assert p.delay(errors.TransientError("503", retry_after=5), random.Random(0)) == 5
    assert p.delay(errors.TransientError("503", retry_after=10**6), random.Random(0)) == 30


def test_parse_retry_after():
    assert parse_retry_after("7") == 7
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 10) == pytest.approx(10)


@pytest.mark.parametrize("err", [
    errors.TransientError("reset", retry_after=3.0),
    errors.StalledError("stalled"),
    errors.HttpError("HTTP 404", status_code=404),
    errors.AccessExpiredError("expired", status_code=403),
    errors.HashMismatchError("bad"),
    errors.StorageError("full"),
    errors.JournalError("newer"),
])
def test_errors_pickle_round_trip(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert back.message == err.message and back.retry_after == err.retry_after
    assert back.exit_code == err.exit_code and back.retryable == err.retryable
    assert getattr(back, "status_code", None) == getattr(err, "status_code", None)
