#!/usr/bin/env python3
"""Start-up cost of segdl's commands against the floor of its imports.

    python benchmarks/startup.py [--runs 15] [--out benchmarks/results/startup.json]

Times (median wall over --runs, interleaved) of:

* base: ``python -c 'import pycurl, blake3, sqlite3'`` (what any segdl
  command must load at the least);
* ``segdl --help``;
* ``segdl status`` on a journal of one finished file;
* ``segdl get`` of a 1-byte file from a local nginx, into a fresh folder,
  with a journal that already exists (a first-ever journal also applies the
  schema's migrations once).

and each one's ratio to base (issue 8's target: <= 2x).  Set-up and
clean-up (deleting the output) stay outside the timings.
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
sys.path.insert(0, str(HERE))

from servers import Nginx  # noqa: E402
from segbench.cases import segdl_binary  # noqa: E402


def timed(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {p.stderr.decode()[-500:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "startup.json")
    args = ap.parse_args()
    segdl = segdl_binary()
    with tempfile.TemporaryDirectory(prefix="segdl-startup-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        root.mkdir()
        (root / "one.bin").write_bytes(b"x")
        journal = tmp / "journal.sqlite"
        env = dict(os.environ, SEGDL_JOURNAL=str(journal))
        with Nginx(root=root) as srv:
            url = srv.url("one.bin")
            timed([segdl, "get", url, "-d", str(tmp / "warm"), "-q"], env)  # creates the journal
            commands = {
                "base": [sys.executable, "-c", "import pycurl, blake3, sqlite3"],
                "segdl --help": [segdl, "--help"],
                "segdl status": [segdl, "status"],
                "segdl get (1 byte)": None,  # a fresh folder each run, made outside the timing
            }
            walls: dict[str, list[float]] = {k: [] for k in commands}
            for i in range(args.runs):
                for name, argv in commands.items():
                    if argv is None:
                        out = tmp / f"out{i}"
                        argv = [segdl, "get", url, "-d", str(out), "-q"]
                        walls[name].append(timed(argv, env))
                        shutil.rmtree(out, ignore_errors=True)
                    else:
                        walls[name].append(timed(argv, env))
    med = {k: statistics.median(v) for k, v in walls.items()}
    rows = [{"command": k, "median_s": round(m, 4), "vs_base": round(m / med["base"], 2),
             "target": "<= 2x base", "met": k == "base" or m / med["base"] <= 2.0}
            for k, m in med.items()]
    print(f"{'command':<22} {'median s':>9} {'vs base':>8}  target <= 2x")
    for r in rows:
        flag = "" if r["command"] == "base" else ("met" if r["met"] else "not met")
        print(f"{r['command']:<22} {r['median_s']:>9.3f} {r['vs_base']:>7.2f}x  {flag}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "runs": args.runs,
                                    "rows": rows, "walls": walls}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
