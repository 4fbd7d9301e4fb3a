"""The pure parts of ``--ray``: shards, reassignment, leases, bandwidth
shares; and one node batch run as the node actor runs it, without Ray."""

from __future__ import annotations

import json
import time
from pathlib import Path

from hypothesis import given, settings, strategies as st

from segdl.engine.cluster import plan
from segdl.engine.cluster.leases import LeaseBook, speed_shares
from segdl.engine.cluster.plan import Work

MiB = 1 << 20
H = ("mirror:80",)


def works(sizes) -> list[Work]:
    return [Work(i, s, H) for i, s in enumerate(sizes)]


@given(st.lists(st.integers(0, 10 ** 9) | st.none(), min_size=1, max_size=60), st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_shard_places_every_file_once_and_balances_bytes(sizes, n):
    nodes = [f"n{i}" for i in range(n)]
    out = plan.shard(works(sizes), nodes)
    placed = sorted(i for idx in out.values() for i in idx)
    assert placed == list(range(len(sizes)))
    ws = works(sizes)
    typical = plan.typical_size(ws)
    loads = [sum(plan.weight(ws[i], typical) for i in idx) for idx in out.values()]
    biggest = max(plan.weight(w, typical) for w in ws)
    # Greedy largest-first: no node is more than one file above the even share.
    assert max(loads) <= sum(loads) / n + biggest + 1e-6


def test_shard_keeps_files_a_node_already_holds():
    out = plan.shard(works([10, 10, 10, 10]), ["a", "b"], held={0: "b", 1: "b", 2: "gone"})
    assert {0, 1} <= set(out["b"]) and 2 in out["a"] + out["b"]
    assert sorted(out["a"] + out["b"]) == [0, 1, 2, 3]


def test_replicate_gives_every_node_every_file_largest_first():
    out = plan.replicate(works([1, 5, 3]), ["a", "b"])
    assert out == {"a": [1, 2, 0], "b": [1, 2, 0]}


def test_reassign_hands_a_lost_file_on_once_then_fails_it_alone():
    lost = works([4, 4, 4])
    first = plan.reassign(lost, {0: 1, 1: 1, 2: 2}, ["b", "c"], {"b": 0.0, "c": 100.0})
    assert first.failed == [2]  # its second node died: it fails, alone
    assert sorted(i for v in first.placed.values() for i in v) == [0, 1]
    assert first.placed.get("b")  # the least loaded survivor gets work
    none_left = plan.reassign(lost, {}, [], {})
    assert none_left.failed == [0, 1, 2] and none_left.placed == {}


def test_hosts_of_a_file_are_its_origin_and_mirrors_once_each():
    assert plan.hosts_of("http://A:1/x", ("http://b/y", "https://a:1/z")) == ("a:1", "b")


def test_splitting_a_file_pays_only_when_it_is_larger_than_the_even_share():
    assert plan.split_gain([10] * 30, 3) == 1.0  # many files: nothing to gain
    assert plan.split_gain([100, 1, 1], 3) > 2.5  # one huge file: nodes would help
    assert plan.makespan([100, 1, 1], 3, split=False) == 100


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(1, 20), st.booleans()), max_size=80),
       st.integers(1, 12))
@settings(max_examples=200, deadline=None)
def test_leases_never_exceed_the_cap(ops, cap):
    book = LeaseBook(cap)
    mine: dict[str, list[int]] = {}
    for node, want, release in ops:
        if release and mine.get(node):
            book.release(node, H, mine[node].pop())
        else:
            n = book.acquire(node, H, want)
            if n:
                mine.setdefault(node, []).append(n)
        assert 0 <= book.in_use(H[0]) <= cap
        assert book.in_use(H[0]) == sum(sum(v) for v in mine.values())


def test_leases_share_a_host_evenly_and_return_from_a_lost_node():
    book = LeaseBook(4)
    assert book.acquire("a", H, 10) == 4  # alone: all of it
    assert book.acquire("b", H, 10) == 0  # b waits ...
    book.release("a", H, 4)
    assert book.acquire("a", H, 10) == 2  # ... so a gets an even part now
    assert book.acquire("b", H, 10) == 2
    book.drop("a")
    assert book.free(H[0]) == 2


def test_speed_shares_split_the_cluster_limit_by_demand():
    even = speed_shares(8 * MiB, {"a": (0.0, 0.0), "b": (0.0, 0.0)})
    assert even == {"a": 4 * MiB, "b": 4 * MiB}
    # a runs far below its part: it keeps what it uses plus headroom, b gets the rest
    s = speed_shares(8 * MiB, {"a": (1 * MiB, 4 * MiB), "b": (4 * MiB, 4 * MiB)})
    assert s["a"] < 2 * MiB and s["b"] > 6 * MiB and sum(s.values()) <= 8 * MiB
    assert speed_shares(0, {"a": (1.0, 1.0)}) == {"a": 0}


def test_a_batch_round_trips_and_a_node_job_reports_its_files(tmp_path):
    """A node's engine as a node actor runs it (a process of its own, events
    as JSON lines, its speed limit set while it runs, ended by close once
    its files are final), without Ray."""
    from servers import PacedMirror, blake3_file, write_deterministic_file

    from segdl.engine.cluster import nodejob
    from segdl.engine.values.request import Request, Settings

    root = tmp_path / "root"
    root.mkdir()
    for i in range(2):
        write_deterministic_file(root / f"b{i}.bin", 4 * MiB, 20 + i)
    with PacedMirror(root, rate=8 * MiB) as m:
        s = Settings(dest=tmp_path / "out", journal=tmp_path / "j.sqlite", workers=1, max_speed=1 * MiB)
        batch = nodejob.Batch(tuple(Request(m.url(f"b{i}.bin")) for i in range(2)), s, "c")
        assert nodejob.Batch.decode(batch.encode()) == batch
        p = nodejob.spawn(batch, tmp_path / "log")
        nodejob.set_speed(p, 0)  # lift the limit: the job must finish fast
        nodejob.close(p)  # no more files: it ends when these are final
        t0 = time.monotonic()
        events = [json.loads(line) for line in p.stdout]
        # the 6 MiB past the probes at the 1 MiB/s it started with would take 6 s
        assert p.wait(60) == 0 and time.monotonic() - t0 < 3.0, time.monotonic() - t0
    results = [e["result"] for e in events if "result" in e]
    assert sorted(Path(r["path"]).name for r in results) == ["b0.bin", "b1.bin"]
    for r in results:
        assert r["status"] == "done" and r["blake3"] == blake3_file(root / Path(r["path"]).name)


def test_plain_get_loads_neither_ray_nor_the_cluster_code(tmp_path):
    """The core stays free of Ray: a plain ``segdl get`` imports nothing of
    --ray (measured with -X importtime, which lists every module loaded)."""
    import subprocess
    import sys

    from servers import PacedMirror

    (tmp_path / "one.bin").write_bytes(b"x")
    with PacedMirror(tmp_path, rate=0) as m:
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "segdl.cli.main", "get", m.url("one.bin"),
                            "-d", str(tmp_path / "out"), "-q"], capture_output=True, text=True, timeout=60,
                           env={**__import__("os").environ, "SEGDL_JOURNAL": str(tmp_path / "j.sqlite")})
    assert p.returncode == 0, p.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "|" in line}
    assert "segdl.engine.run.coordinator" in modules  # it did run the engine
    assert not {m for m in modules if m == "ray" or m.startswith(("ray.", "segdl.engine.cluster", "segdl.cli.raydrive"))}


def test_the_live_view_shows_a_total_and_one_row_per_node():
    from rich.console import Console

    from segdl.cli.raydrive import ClusterView
    from segdl.engine.cluster.report import ClusterProgress, NodeProgress

    console = Console(record=True, width=100, force_terminal=False)
    view = ClusterView(console)
    p = ClusterProgress((NodeProgress("alpha", True, 1, 3, 2 * MiB, 6 * MiB, 1.0 * MiB),
                         NodeProgress("beta", False, 0, 2, 0, 4 * MiB, 0.0)), 1.0)
    view.update(p)
    console.print(view.bars)
    text = console.export_text()
    assert "total [1/5 files]" in text and "alpha [1/3]" in text and "beta [0/2] (lost)" in text
    assert p.done == 2 * MiB and p.size == 10 * MiB and p.speed == 1.0 * MiB


def test_the_cluster_modules_load_ray_only_when_they_connect():
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER as it loads, and
    ``driver.connect`` sets it (loopback clusters) just before: nothing
    the CLI imports for --ray may load Ray earlier."""
    import subprocess
    import sys

    code = ("import sys, segdl.cli.raydrive, segdl.engine.cluster.driver, segdl.engine.cluster.plan, "
            "segdl.engine.cluster.leases, segdl.engine.cluster.nodejob, segdl.engine.cluster.report; "
            "print('ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "False", p.stderr


def test_a_failure_another_node_could_change_is_tried_elsewhere_a_refusal_is_not():
    from segdl.engine.values.errors import EXIT_DOWNLOAD_FAILED, EXIT_HASH_MISMATCH, EXIT_STORAGE, StalledError

    for error in ("server answered HTTP 503", "connection closed early at byte 5 of [0, 9)",
                  StalledError("connection stalled (no data for 20 s)").message, "empty response body"):
        assert plan.try_elsewhere("failed", EXIT_DOWNLOAD_FAILED, error), error
    for error in ("HTTP 404 (Not Found)", "HTTP 410 (Gone)", "HTTP 403 (Forbidden)"):
        assert not plan.try_elsewhere("failed", EXIT_DOWNLOAD_FAILED, error), error
    assert not plan.try_elsewhere("hash_mismatch", EXIT_HASH_MISMATCH, "blake3 mismatch")
    assert not plan.try_elsewhere("failed", EXIT_STORAGE, "no space left on device")
    assert not plan.try_elsewhere("done", 0, None)
    assert plan.ahead(5) >= 4 * plan.PROBES_AT_ONCE and plan.ahead(64) == 8 * 64
