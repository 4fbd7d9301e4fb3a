#!/usr/bin/env python3
"""``segdl get --ray``: the same collection on 1, 2 and 3 simulated nodes
from one throttled mirror, and Ray's overhead per file and at start-up.

    python benchmarks/ray_bench.py [--rounds 3] [--out benchmarks/results/ray_bench.json]
    python benchmarks/ray_bench.py --case small2k [--files 2000] [--rounds 3]

``--case small2k`` (issue 19): 2,000 x 1 MiB from an unthrottled mirror
on the local 2-node cluster with ``--ray`` against plain ``get`` (both
-j 16 --max-connections 16), and the per-file overhead of ``--ray``:
(wall with --ray - wall without) / files; target <= 5 ms.

One machine plays the cluster: a head with no CPUs (it downloads nothing)
and 1, then 2, then 3 raylets of one CPU each.  The mirror paces every
connection (kernel pacing, 4 MiB/s each); each node opens -j 2 files x -x 2
connections, so one node is capped at 16 MiB/s, as a machine's network
card would cap it, and more nodes should go faster until this machine's
two cores are the limit.

Times are medians of --rounds runs of the real command (``segdl get
--ray ADDRESS -i manifest``, a fresh folder and journals each run),
against the same command without ``--ray`` where a ratio is asked for:

* speed-up: the collection (24 x 4 MiB) on n nodes vs 1 node;
* overhead per file: 40 files of 64 KiB on 1 node with --ray vs without,
  (wall difference) / files, the same with the start-up taken out
  (marginal), and the ratio of the walls;
* start-up: one 1-byte file with --ray (connect, actors, a batch) vs without.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from servers import PacedMirror, write_deterministic_file  # noqa: E402

MiB = 1 << 20
SEGDL = [sys.executable, "-m", "segdl.cli.main"]
NODE = dict(num_cpus=1, object_store_memory=80 * MiB)


def manifest(path: Path, mirror, names: list[str], root: Path) -> Path:
    path.write_text(json.dumps({"files": [{"url": mirror.url(n), "path": n, "size": (root / n).stat().st_size}
                                          for n in names]}))
    return path


def timed(args: list[str], tmp: Path) -> float:
    out, journals = tmp / "out", tmp / "journals"
    env = dict(os.environ, SEGDL_JOURNAL=str(journals / "plain.sqlite"))
    argv = [*SEGDL, *args, "-d", str(out), "-q", "--workers", "1"]
    if "--ray" in args:
        argv += ["--ray-journals", str(journals)]
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(journals, ignore_errors=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr[-800:]}")
    return wall


def small2k(args) -> int:
    """2,000 x 1 MiB, 2 nodes, --ray vs plain get: the per-file overhead."""
    import ray
    from ray.cluster_utils import Cluster

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="segdl-raybench-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        root.mkdir()
        names = [f"s{i:05d}.bin" for i in range(args.files)]
        for i, n in enumerate(names):
            write_deterministic_file(root / n, MiB, 1000 + i)
        c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, object_store_memory=80 * MiB,
                                                              include_dashboard=False))
        walls: dict[str, list[float]] = {}
        try:
            for _ in range(2):
                c.add_node(**NODE)
            c.wait_for_nodes()
            with PacedMirror(root, rate=0) as m:  # rate 0: not paced
                man = manifest(tmp / "small.json", m, names, root)
                common = ["-j", "16", "--max-connections", "16"]
                for _ in range(args.rounds):
                    walls.setdefault("plain", []).append(timed(["get", "-i", str(man), *common], tmp))
                    walls.setdefault("ray 2 nodes", []).append(
                        timed(["get", "-i", str(man), *common, "--ray", c.address], tmp))
        finally:
            ray.shutdown()
            c.shutdown()
    med = {k: statistics.median(v) for k, v in walls.items()}
    result = {
        "case": "small2k", "files": args.files, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rounds": args.rounds, "load_start": load_start, "load_end": os.getloadavg(),
        "medians_s": {k: round(v, 3) for k, v in med.items()},
        "overhead_per_file_ms": round(1000 * (med["ray 2 nodes"] - med["plain"]) / args.files, 2),
        "target_ms": 5.0, "walls": walls,
    }
    for k, v in result.items():
        if k != "walls":
            print(f"{k}: {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--case", choices=("nodes", "small2k"), default="nodes")
    ap.add_argument("--files", type=int, default=2000, help="--case small2k: files of 1 MiB")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.out is None:
        args.out = HERE / "results" / ("ray_small2k.json" if args.case == "small2k" else "ray_bench.json")
    if args.case == "small2k":
        return small2k(args)

    import ray
    from ray.cluster_utils import Cluster

    load_start = os.getloadavg()  # 1, 5, 15 min: was anything else running?

    with tempfile.TemporaryDirectory(prefix="segdl-raybench-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        root.mkdir()
        big = [f"big{i}.bin" for i in range(24)]
        small = [f"small{i}.bin" for i in range(40)]
        for i, n in enumerate(big):
            write_deterministic_file(root / n, 4 * MiB, i)
        for i, n in enumerate(small):
            write_deterministic_file(root / n, 64 * 1024, 100 + i)
        (root / "one.bin").write_bytes(b"x")
        c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=0, object_store_memory=80 * MiB,
                                                              include_dashboard=False))
        walls: dict[str, list[float]] = {}
        try:
            with PacedMirror(root, rate=4 * MiB) as m:
                big_m = manifest(tmp / "big.json", m, big, root)
                small_m = manifest(tmp / "small.json", m, small, root)
                one_m = manifest(tmp / "one.json", m, ["one.bin"], root)
                ray_args = ["--ray", c.address]
                common = ["-j", "2", "-x", "2"]
                for n in (1, 2, 3):
                    c.add_node(**NODE)
                    c.wait_for_nodes()
                    for _ in range(args.rounds):
                        if n == 1:  # interleaved with the runs they are compared with
                            walls.setdefault("plain: 24 x 4 MiB", []).append(
                                timed(["get", "-i", str(big_m), *common], tmp))
                            walls.setdefault("plain: 40 x 64 KiB", []).append(
                                timed(["get", "-i", str(small_m), *common], tmp))
                            walls.setdefault("plain: 1 byte", []).append(timed(["get", "-i", str(one_m)], tmp))
                            walls.setdefault("ray 1 node: 40 x 64 KiB", []).append(
                                timed(["get", "-i", str(small_m), *common, *ray_args], tmp))
                            walls.setdefault("ray 1 node: 1 byte", []).append(
                                timed(["get", "-i", str(one_m), *ray_args], tmp))
                        walls.setdefault(f"ray {n} node(s): 24 x 4 MiB", []).append(
                            timed(["get", "-i", str(big_m), *common, *ray_args], tmp))
        finally:
            ray.shutdown()
            c.shutdown()
    med = {k: statistics.median(v) for k, v in walls.items()}
    one = med["ray 1 node(s): 24 x 4 MiB"]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rounds": args.rounds,
        "load_start": load_start, "load_end": os.getloadavg(),
        "medians_s": {k: round(v, 3) for k, v in med.items()},
        "speedup_vs_1_node": {n: round(one / med[f"ray {n} node(s): 24 x 4 MiB"], 2) for n in (1, 2, 3)},
        "ray_1_node_vs_plain_24x4MiB": round(one / med["plain: 24 x 4 MiB"], 2),
        # Start-up included, spread over the 40 files:
        "overhead_per_file_ms": round(1000 * (med["ray 1 node: 40 x 64 KiB"] - med["plain: 40 x 64 KiB"]) / 40, 1),
        # Each file past the first, start-up taken out (one batch per 16 files):
        "marginal_overhead_per_file_ms": round(1000 * ((med["ray 1 node: 40 x 64 KiB"] - med["ray 1 node: 1 byte"])
                                                       - (med["plain: 40 x 64 KiB"] - med["plain: 1 byte"])) / 39, 1),
        "small_files_ratio": round(med["ray 1 node: 40 x 64 KiB"] / med["plain: 40 x 64 KiB"], 2),
        "startup_ratio": round(med["ray 1 node: 1 byte"] / med["plain: 1 byte"], 2),
        "walls": walls,
    }
    for k, v in result.items():
        if k != "walls":
            print(f"{k}: {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
