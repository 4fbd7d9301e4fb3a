"""``segdl get --ray`` on a local Ray cluster: a head that downloads
nothing (0 CPUs) and two raylets that do, on this machine, against a
kernel-paced mirror on loopback.  One cluster for the module; the test that
kills a node runs last and leaves a fresh node in its place."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

# Every address on loopback: without this Ray announces the machine's
# outward address and connects to it (read as Ray loads).  No usage reports.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray", reason="the Ray tests need the extra: pip install 'segdl[ray]'")

from helpers import SEGDL, journal_rows  # noqa: E402
from servers import PacedMirror, blake3_file, write_deterministic_file  # noqa: E402

MiB = 1 << 20
NODE = dict(num_cpus=1, object_store_memory=80 * MiB)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=0, object_store_memory=80 * MiB, include_dashboard=False,
        _system_config={"health_check_period_ms": 500, "health_check_failure_threshold": 3}))
    for _ in range(2):
        c.add_node(**NODE)
    assert c.address.startswith("127.0.0.1:"), c.address
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False, namespace="segdl")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def files(tmp_path):
    """A folder of files named f0.bin.. and a manifest builder."""
    root = tmp_path / "mirror"
    root.mkdir()

    def make(sizes: list[int]) -> list[str]:
        names = []
        for i, size in enumerate(sizes):
            write_deterministic_file(root / f"f{i}.bin", size, 100 + i)
            names.append(f"f{i}.bin")
        return names

    make.root = root
    return make


def manifest(path: Path, mirror, names, root: Path) -> Path:
    path.write_text(json.dumps({"collection": "c", "files": [
        {"url": mirror.url(n), "path": n, "size": (root / n).stat().st_size} for n in names]}))
    return path


def run_cli(args, *, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*SEGDL, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def assert_correct(dest: Path, root: Path, names) -> None:
    for n in names:
        assert blake3_file(dest / n) == blake3_file(root / n), n


def test_shard_mode_spreads_the_collection_and_status_sees_every_node(cluster, files, tmp_path):
    names = files([3 * MiB, 1 * MiB, 2 * MiB, 2 * MiB, 1 * MiB, 3 * MiB])
    with PacedMirror(files.root, rate=8 * MiB) as m:
        man = manifest(tmp_path / "c.json", m, names, files.root)
        journals = tmp_path / "journals"
        r = run_cli(["get", "--ray", cluster.address, "-i", man, "-d", tmp_path / "out", "--json",
                     "--ray-journals", journals])
        assert r.returncode == 0, r.stderr
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert sorted(Path(x["path"]).name for x in lines) == sorted(names)
        assert all(x["status"] == "done" for x in lines)
        by_node: dict[str, int] = {}
        for x in lines:
            by_node[x["node"]] = by_node.get(x["node"], 0) + x["size"]
        assert len(by_node) == 2 and set(by_node.values()) == {6 * MiB}, by_node  # bytes balanced
        assert_correct(tmp_path / "out", files.root, names)
        served = sum(e["body_bytes_sent"] for e in m.access_log_entries())
        assert served == 12 * MiB  # every byte once: nothing fetched twice across nodes

        st = run_cli(["status", "--ray", cluster.address, "--json", "--ray-journals", journals])
        assert st.returncode == 0, st.stderr
        rows = [json.loads(x) for x in st.stdout.splitlines()]
        assert {(x["node"], Path(x["path"]).name) for x in rows} == {(x["node"], Path(x["path"]).name)
                                                                     for x in lines}
        assert all(x["state"] == "done" for x in rows)


def test_replicate_mode_puts_every_file_on_every_node(cluster, files, tmp_path):
    from segdl.engine.cluster import driver
    from segdl.engine.values.request import Request, Settings

    names = files([2 * MiB, 1 * MiB, 512 * 1024])
    with PacedMirror(files.root, rate=8 * MiB) as m:
        reqs = [Request(m.url(n), n) for n in names]
        res = driver.download(reqs, Settings(dest=tmp_path / "out" / "{node}", workers=1), mode="replicate",
                              journals=str(tmp_path / "journals"))
    assert res.exit_code == 0 and len(res) == 2 * len(names)
    nodes = sorted(set(res.nodes))
    assert len(nodes) == 2
    for node in nodes:
        assert_correct(tmp_path / "out" / node, files.root, names)


def test_the_per_host_cap_holds_across_the_cluster(cluster, files, tmp_path):
    """Two nodes, 3 connections to the mirror for the whole cluster: the
    mirror never serves more than 3 requests at once (probes included),
    though each node alone would open 4 per file."""
    from segdl.engine.cluster import driver
    from segdl.engine.values.request import Request, Settings

    names = files([3 * MiB] * 8)
    with PacedMirror(files.root, rate=3 * MiB) as m:
        reqs = [Request(m.url(n), n, size=3 * MiB) for n in names]
        res = driver.download(reqs, Settings(dest=tmp_path / "out", connections=4, max_per_host=3, workers=1,
                                             min_split=512 * 1024), journals=str(tmp_path / "journals"))
        c = m.concurrency()
    assert res.exit_code == 0
    assert len(set(res.nodes)) == 2
    assert c["requests"] <= 3, c
    assert c["requests"] >= 2, c  # the nodes did work at the same time
    assert_correct(tmp_path / "out", files.root, names)


def test_a_node_is_fed_while_it_runs_by_one_engine(cluster, files, tmp_path):
    """More files than a node is given ahead: the driver refills its queue
    as files end, and each node feeds them to the one engine process it
    started (every job its journal records, one per refill, is that
    process's), so nothing waits for a batch to end."""
    from segdl.engine.cluster import driver, plan
    from segdl.engine.values.request import Request, Settings

    settings = Settings(dest=tmp_path / "out", workers=1, connections=1, concurrent_files=2)
    n = 2 * plan.ahead(settings.concurrent_files) + 40  # past what both nodes are given at first
    names = files([8 * 1024] * n)
    journals = tmp_path / "journals"
    pids: dict[str, set[int]] = {}
    stop = threading.Event()

    def watch() -> None:  # bounded: until the run ends, 0.05 s apart
        while not stop.wait(0.05):
            for j in journals.glob("*.sqlite"):
                for (pid,) in journal_rows(j, "SELECT pid FROM jobs WHERE pid IS NOT NULL"):
                    pids.setdefault(j.name, set()).add(pid)

    watcher = threading.Thread(target=watch)
    with PacedMirror(files.root, rate=4 * MiB) as m:
        watcher.start()
        try:
            res = driver.download([Request(m.url(x), x) for x in names], settings, journals=str(journals))
        finally:
            stop.set()
            watcher.join(10)
    assert res.exit_code == 0 and len(res) == n
    assert len(set(res.nodes)) == 2
    assert_correct(tmp_path / "out", files.root, names)
    for j in journals.glob("*.sqlite"):
        assert len(pids.get(j.name, ())) == 1, (j.name, pids)  # one engine process a node
    jobs = sum(journal_rows(j, "SELECT COUNT(*) FROM jobs")[0][0] for j in journals.glob("*.sqlite"))
    assert jobs > 2, jobs  # refilled: more hands than the first one a node


def test_a_transient_failure_is_tried_on_the_other_node_a_404_is_not(cluster, tmp_path):
    """No retries on a node (--retries 0): a file whose first request gets
    a 503 fails there and is handed to the other node, where it succeeds;
    a 404 stays failed, asked once."""
    from segdl.engine.cluster import driver
    from segdl.engine.values.request import Request, Settings
    from segdl.engine.rules.retry import RetryPolicy
    from servers import FaultServer

    data = os.urandom(200 * 1024)
    messages: list[str] = []
    with FaultServer() as srv:
        srv.add("r.bin", data)
        flaky = srv.url("status/r.bin?times=1&code=503")
        gone = srv.url("gone.bin")
        res = driver.download([Request(flaky, "r.bin"), Request(gone, "gone.bin")],
                              Settings(dest=tmp_path / "out", workers=1, retry=RetryPolicy(max_attempts=0)),
                              journals=str(tmp_path / "journals"), on_message=messages.append)
        asked_flaky = [r for r in srv.requests("r.bin")]
        asked_gone = srv.requests("gone.bin")
    by_path = {Path(r.path).name: (r, node) for r, node in zip(res, res.nodes)}
    flaky_result, flaky_node = by_path["r.bin"]
    assert flaky_result.status == "done", flaky_result
    assert (tmp_path / "out" / "r.bin").read_bytes() == data
    [moved] = [m for m in messages if "r.bin failed on" in m]
    assert "HTTP 503" in moved and moved.endswith(f"trying it on {flaky_node}"), moved
    assert len(asked_flaky) >= 2 and asked_flaky[0]["status"] == 503
    gone_result, _ = by_path["gone.bin"]
    assert gone_result.status == "failed" and "404" in gone_result.error
    assert len(asked_gone) == 1, asked_gone
    assert not [m for m in messages if "gone.bin failed on" in m]


def _bytes_done(journal: Path) -> int:
    rows = journal_rows(journal, "SELECT COALESCE(SUM(done), 0) FROM segments")
    return rows[0][0] if rows else 0


def test_ctrl_c_of_the_driver_then_the_same_command_continues(cluster, files, tmp_path):
    names = files([8 * MiB] * 4)
    with PacedMirror(files.root, rate=1 * MiB) as m:
        man = manifest(tmp_path / "c.json", m, names, files.root)
        journals = tmp_path / "journals"
        cmd = [*SEGDL, "get", "--ray", cluster.address, "-i", str(man), "-d", str(tmp_path / "out"), "--json",
               "--ray-journals", str(journals), "-x", "1"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(_bytes_done(j) for j in journals.glob("*.sqlite")) < 6 * MiB:
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 130, err
        kept = sum(_bytes_done(j) for j in journals.glob("*.sqlite"))
        assert 6 * MiB <= kept < 32 * MiB
        first_run = m.access_log_entries()
        served_before = sum(e["body_bytes_sent"] for e in first_run)

        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert_correct(tmp_path / "out", files.root, names)
        served = sum(e["body_bytes_sent"] for e in m.access_log_entries())
        refetched = served - 32 * MiB
        # Ctrl-C stops each node's engine as it stops segdl get: what it
        # had received is made durable, and the second run fetches only
        # the rest (the mirror's count is good to its 128 KiB send buffer
        # per connection).
        assert served - served_before <= 32 * MiB - kept + 1 * MiB, (served, served_before, kept)
        # A probe that brings a file's first MiB stops after half a second
        # of it and keeps what it has (its file's first range starts
        # there): what the mirror sent it beyond that is the first run's
        # waste, not what the Ctrl-C lost.
        probe_slack = 0
        for path in {e["path"] for e in first_run}:
            asked = [e for e in first_run if e["path"] == path]
            if len(asked) >= 2 and asked[0]["range"] == f"bytes=0-{MiB - 1}":
                probe_slack += max(0, asked[0]["body_bytes_sent"] - int(asked[1]["range"][6:].split("-")[0]))
        assert refetched - probe_slack <= 1 * MiB, (refetched, probe_slack, kept, served_before)


def test_a_killed_node_s_files_are_taken_over_from_its_journal(cluster, files, tmp_path):
    """One node is removed (its raylet, actor and engine killed) mid-job:
    the survivor takes its unfinished files over from its journal on this
    shared disk, every file ends correct, and the bytes fetched twice stay
    within what the dead node had not made durable."""
    from segdl.engine.cluster import driver
    from segdl.engine.values.request import Request, Settings

    names = files([12 * MiB] * 4)
    journals = tmp_path / "journals"
    victim = cluster.list_all_nodes()[-1]
    out: dict = {}
    with PacedMirror(files.root, rate=2 * MiB) as m:
        reqs = [Request(m.url(n), n, size=12 * MiB) for n in names]
        s = Settings(dest=tmp_path / "out", connections=2, workers=1, max_speed=8 * MiB)

        def run() -> None:
            try:
                out["res"] = driver.download(reqs, s, journals=str(journals), on_message=msgs.append)
            except BaseException as e:  # reported by the assertion below
                out["error"] = e

        msgs: list[str] = []
        t = threading.Thread(target=run)
        t.start()
        victim_journal = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and victim_journal is None:
            for j in journals.glob("*.sqlite"):
                if j.stem.endswith(victim.node_id[:8]) and _bytes_done(j) >= 8 * MiB:
                    victim_journal = j
            time.sleep(0.1)
        assert victim_journal is not None
        cluster.remove_node(victim, allow_graceful=False)
        durable_then = _bytes_done(victim_journal)
        t.join(120)
        assert not t.is_alive()
        served = sum(e["body_bytes_sent"] for e in m.access_log_entries())
    cluster.add_node(**NODE)  # for whatever runs after
    assert "error" not in out, out.get("error")
    res = out["res"]
    assert res.exit_code == 0, [r.error for r in res.errors]
    assert any("resuming from its journal" in x for x in msgs), msgs
    assert_correct(tmp_path / "out", files.root, names)
    # Fetched twice: what the dead node had received but not made durable
    # yet: at its part of --max-speed (4 MiB/s), at most a commit interval
    # plus a checkpoint (1.5 s) and the driver's poll: 2 s of it, + 1 MiB.
    assert served - 48 * MiB <= 2 * 4 * MiB + 1 * MiB, (served, durable_then)


def test_a_file_whose_second_node_dies_too_fails_alone(cluster, files, tmp_path):
    """Three nodes.  A dies: its files go to B and C.  Then B dies: the
    files it had of its own go to C and end correct; the ones it had taken
    over from A have lost two nodes and fail, alone, with exit code 3."""
    from segdl.engine.cluster import driver
    from segdl.engine.values.request import Request, Settings

    cluster.add_node(**NODE)
    names = files([8 * MiB] * 6)
    journals = tmp_path / "journals"
    workers = {n.node_id[:8]: n for n in cluster.list_all_nodes()[1:]}
    msgs: list[str] = []
    out: dict = {}
    with PacedMirror(files.root, rate=2 * MiB) as m:
        reqs = [Request(m.url(n), n, size=8 * MiB) for n in names]
        s = Settings(dest=tmp_path / "out", connections=1, workers=1, max_speed=6 * MiB)

        def run() -> None:
            try:
                out["res"] = driver.download(reqs, s, journals=str(journals), on_message=msgs.append)
            except BaseException as e:  # reported by the assertion below
                out["error"] = e

        t = threading.Thread(target=run)
        t.start()
        first = None
        deadline = time.monotonic() + 60
        while first is None and time.monotonic() < deadline:
            first = next((j.stem for j in journals.glob("*.sqlite") if _bytes_done(j) >= 1 * MiB), None)
            time.sleep(0.05)
        assert first is not None
        cluster.remove_node(workers[first[-8:]], allow_graceful=False)
        handed = re.compile(rf"\d+ file\(s\) of {re.escape(first)} to (\S+), [^:]*: (.*)$")
        second = taken = None
        while second is None and time.monotonic() < deadline:
            for x in msgs:
                if (h := handed.match(x)) is not None:
                    second, taken = h.group(1), h.group(2).split(", ")
                    break
            time.sleep(0.02)
        assert second is not None, msgs
        cluster.remove_node(workers[second[-8:]], allow_graceful=False)
        t.join(120)
        assert not t.is_alive()
    cluster.add_node(**NODE)
    cluster.add_node(**NODE)  # two workers again, for whatever runs after
    assert "error" not in out, out.get("error")
    res = out["res"]
    failed = sorted(Path(r.path).name for r in res.errors)
    assert failed == sorted(taken), (failed, msgs)
    assert all("after 2 nodes" in r.error for r in res.errors)
    assert res.exit_code == 3
    assert_correct(tmp_path / "out", files.root, [n for n in names if n not in failed])
