"""Probes as a stream (engine/net/probe.py ProbeFeed), against the fault
server on 127.0.0.1: each file's findings come out as soon as its URLs
have answered, whatever the others do."""

from __future__ import annotations

import threading
import time

import pytest

from segdl.engine.values.errors import SegdlError
from segdl.engine.rules.http import RemoteInfo
from segdl.engine.values.messages import TransferOptions
from segdl.engine.net import ProbeFeed, ProbeOrder

OPTS = TransferOptions(stall_timeout=10.0)


def _order(key: int, *urls: str, data: bool = False) -> ProbeOrder:
    return ProbeOrder(key, urls, tuple(OPTS for _ in urls), frozenset(urls[:1]) if data else frozenset())


def _collect(feed: ProbeFeed, keys: set[int], timeout: float = 20.0) -> dict[int, dict]:
    """Take findings until every key of ``keys`` is in (bounded in time)."""
    got: dict[int, dict] = {}
    stop = time.monotonic() + timeout
    while not keys <= got.keys() and time.monotonic() < stop:
        for key, found in feed.take():
            got[key] = found
        time.sleep(0.01)
    return got


@pytest.fixture
def woken():
    return threading.Event()


@pytest.fixture
def feed(woken):
    f = ProbeFeed(concurrency=8, wake=woken.set)
    yield f
    f.close()


def test_a_slow_probe_does_not_hold_up_the_others(fault_server, feed, woken):
    blobs = {i: fault_server.add(f"f{i}.bin", bytes([i]) * (1000 + i)) for i in range(6)}
    fault_server.add("slow.bin", b"s" * 500)
    slow = fault_server.url("slowfirst/slow.bin?delay=4")
    feed.add([_order(99, slow)] + [_order(i, u) for i, u in blobs.items()])
    fast = _collect(feed, set(blobs))
    assert set(fast) == set(blobs)  # all six, while the slow one still waits
    assert woken.is_set()
    for i, found in fast.items():
        info = found[blobs[i]]
        assert isinstance(info, RemoteInfo) and info.size == 1000 + i and info.ranged
    assert feed.pending == 1
    [slow_found] = _collect(feed, {99}).values()
    assert slow_found[slow].size == 500
    assert feed.pending == 0


def test_a_file_with_mirrors_comes_out_once_all_answered(fault_server, feed):
    a = fault_server.add("m.bin", b"m" * 4000)
    b = fault_server.url("slowfirst/m.bin?delay=0.5")
    missing = fault_server.url("status/m.bin?code=404")
    feed.add([_order(1, a, b, missing, data=True)])
    [found] = _collect(feed, {1}).values()
    assert set(found) == {a, b, missing}
    assert found[a].size == found[b].size == 4000
    assert found[a].first_bytes == b"m" * 4000  # small enough: the probe was its download
    assert isinstance(found[missing], SegdlError) and "404" in str(found[missing])


def test_a_bug_reading_one_answer_fails_that_probe_alone(fault_server, monkeypatch):
    """A probe whose answer the code fails to read (a bug, not a server's
    fault) ends as that URL's error, and the others are found as usual:
    the probes a worker makes run this code, and an exception out of it
    would end the worker, and every job with it."""
    from segdl.engine.net import probe

    good = fault_server.add("good.bin", b"g" * 2000)
    bad = fault_server.add("bad.bin", b"b" * 2000)
    real = probe._probe_result
    monkeypatch.setattr(probe, "_probe_result",
                        lambda p: (_ for _ in ()).throw(ValueError("boom")) if p.url == bad else real(p))
    got = probe.probe_many([good, bad], OPTS, deadline=20.0)
    assert got[good].size == 2000
    assert isinstance(got[bad], SegdlError) and "boom" in str(got[bad])


def test_one_url_for_two_files_is_probed_once(fault_server, feed):
    u = fault_server.add("same.bin", b"x" * 3000)
    feed.add([_order(1, u), _order(2, u)])
    got = _collect(feed, {1, 2})
    assert got[1][u].size == got[2][u].size == 3000
    assert len(fault_server.requests("same.bin")) == 1


def test_close_does_not_wait_for_a_probe_in_flight(fault_server):
    fault_server.add("stuck.bin", b"z" * 100)
    f = ProbeFeed(concurrency=2)
    f.add([_order(1, fault_server.url("slowfirst/stuck.bin?delay=60"))])
    deadline = time.monotonic() + 10
    while not fault_server.requests("stuck.bin") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fault_server.requests("stuck.bin")  # it is in flight
    f.close()
    assert not f._thread.is_alive()
    assert f.take() == []  # nothing came back for it


def test_an_orders_findings_are_complete_once_each_of_its_urls_answered():
    """The bookkeeping the feed and a worker's probes share: an order is
    given back once every distinct URL of it has answered, whole; a URL
    named twice answers once; an order still open can be failed whole."""
    from segdl.engine.net.probe import Findings

    f = Findings()
    f.open(ProbeOrder(1, ("http://m/a", "http://m/a"), (None, None)))
    assert f.found(1, "http://m/a", "info") == (1, {"http://m/a": "info"})
    assert 1 not in f.waiting  # complete: given back once
    assert f.found(1, "http://m/a", "late") is None  # a late answer for it is dropped
    f.open(ProbeOrder(2, ("http://m/b", "http://n/b"), (None, None)))
    assert f.found(2, "http://n/b", "mirror") is None  # the other URL has not answered
    f.open(ProbeOrder(3, ("http://m/c",), (None,)))
    assert f.fail_all("gone") == [(2, {"http://m/b": "gone", "http://n/b": "gone"}), (3, {"http://m/c": "gone"})]
    assert f.waiting == {}


def _until(predicate, timeout: float = 5.0) -> bool:
    stop = time.monotonic() + timeout
    while not predicate() and time.monotonic() < stop:
        time.sleep(0.005)
    return predicate()


def test_a_sleeping_feed_is_woken_once_for_the_orders_added_while_it_sleeps(fault_server, monkeypatch):
    """The engine's loop pokes the feed's thread only when it sleeps with
    no order to take (each poke gave up the loop's GIL): orders added while
    it sleeps, idle or waiting on a probe's socket, wake it once and are
    all answered."""
    pokes = []
    real_poke = ProbeFeed._poke
    monkeypatch.setattr(ProbeFeed, "_poke", lambda self: (pokes.append(1), real_poke(self)))
    blobs = {i: fault_server.add(f"w{i}.bin", bytes([i]) * 3000) for i in range(4)}
    fault_server.add("slowbody.bin", b"s" * 2000)
    slow = fault_server.url("slowfirst/slowbody.bin?delay=2")
    feed = ProbeFeed(concurrency=8)
    try:
        assert _until(lambda: feed._asleep), "the idle feed never went to sleep"
        feed.add([_order(0, blobs[0])])
        feed.add([_order(1, blobs[1])])  # before it woke: no second poke
        assert len(pokes) == 1
        assert set(_collect(feed, {0, 1})) == {0, 1}
        feed.add([_order(9, slow)])  # keeps the thread busy, then waiting on its socket
        assert _until(lambda: feed._asleep)
        pokes.clear()
        feed.add([_order(2, blobs[2]), _order(3, blobs[3])])
        assert len(pokes) == 1  # asleep (waiting on the slow answer): woken once
        got = _collect(feed, {2, 3, 9})
        assert set(got) == {2, 3, 9} and got[2][blobs[2]].size == 3000
    finally:
        feed.close()
