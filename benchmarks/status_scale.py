#!/usr/bin/env python3
"""``segdl status`` on a journal of many files (issue 19, target 4).

    python benchmarks/status_scale.py [--files 100000] [--runs 5] [--out FILE]

Builds a journal through the engine's journal API (``Journal.create_job``,
``put_file``, ``replace_segments``, ``record``, ``update_file``,
``mark_done``), the shape a 100,000-file job leaves mid-way: two
collections, most files done, some failed, some downloading with partial
segments, the rest queued.  Then times, as separate processes (start-up
included), the median of ``--runs`` of:

* ``segdl status`` (one line per collection; target < 0.5 s)
* ``segdl status --files --state failed`` (target < 0.5 s)
* ``segdl status --json`` piped to nowhere (every row, for scale)

and checks what they print: the summary's counts and the failed files'
number of lines, so a fast wrong answer does not pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from segbench.cases import segdl_binary  # noqa: E402


def build(journal: Path, n: int, dest: Path) -> dict[str, dict[str, int]]:
    """A journal of ``n`` files; returns the states it recorded per collection."""
    from segdl.engine.journal.writer import Journal

    j = Journal(journal)
    want: dict[str, dict[str, int]] = {}
    try:
        with j.atomic():
            for coll, share in (("shards", 0.8), ("configs", 0.2)):
                job = j.create_job(dest, {"requests": []}, collection=coll)
                count = int(n * share)
                states: dict[str, int] = {}
                done_items = []
                for i in range(count):
                    path = dest / coll / f"{i // 1000:03d}" / f"part-{i:06d}.bin"
                    fid = j.put_file(job, f"http://127.0.0.1:1/{coll}/{i}", path, size=4096)
                    k = i % 100
                    if k < 90:
                        done_items.append((fid, 1.7e9, 4096))
                        state = "done"
                    elif k < 93:
                        j.update_file(fid, state="failed", error="HTTP 404", exit_code=3)
                        state = "failed"
                    elif k < 95:
                        [sid] = j.replace_segments(fid, [(0, 4096)], state="downloading")
                        j.record({sid: 2048})
                        state = "downloading"
                    else:
                        state = "queued"
                    states[state] = states.get(state, 0) + 1
                j.mark_done(done_items)
                want[coll] = states
    finally:
        j.close()
    return want


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr[-500:]}")
    return wall, p.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="Write the timings as JSON here too.")
    args = ap.parse_args()
    segdl = segdl_binary()
    with tempfile.TemporaryDirectory(prefix="segdl-status-") as tmp:
        journal = Path(tmp) / "journal.sqlite"
        t0 = time.perf_counter()
        want = build(journal, args.files, Path(tmp) / "out")
        built = time.perf_counter() - t0
        print(f"built a journal of {args.files:,} files in {built:.1f} s "
              f"({journal.stat().st_size / 1e6:.0f} MB)", flush=True)
        env = dict(os.environ, SEGDL_JOURNAL=str(journal), COLUMNS="200")
        cases = {"status": [segdl, "status"],
                 "status --files --state failed": [segdl, "status", "--files", "--state", "failed"],
                 "status --json (all rows)": [segdl, "status", "--json"]}
        walls: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.runs):
            for name, argv in cases.items():
                wall, out = timed(argv, env)
                walls[name].append(wall)
                check(name, out, want)
        result = {name: statistics.median(w) for name, w in walls.items()}
        for name, med in result.items():
            target = " (target < 0.5 s)" if "json" not in name else ""
            print(f"{name:32s} median {med:.3f} s over {args.runs}{target}")
        if args.out:
            args.out.write_text(json.dumps({"files": args.files, "runs": args.runs, "median_s": result,
                                            "walls": walls}, indent=2) + "\n")
    return 0


def check(name: str, out: str, want: dict[str, dict[str, int]]) -> None:
    failed = sum(s.get("failed", 0) for s in want.values())
    if name == "status":
        for coll, states in want.items():
            # (No job runs: the downloading files show as interrupted.)
            shown = {("interrupted" if k == "downloading" else k): v for k, v in states.items()}
            line = f"{coll}: " + ", ".join(f"{v} {k}" for k, v in sorted(shown.items()))
            if line not in out:
                raise SystemExit(f"status does not say {line!r}:\n{out[:2000]}")
    elif name.startswith("status --files"):
        rows = [line for line in out.splitlines() if "HTTP 404" in line]
        if len(rows) != min(failed, 1000):
            raise SystemExit(f"{name}: {len(rows)} failed rows, expected {min(failed, 1000)}")
    else:
        if out.count("\n") != sum(sum(s.values()) for s in want.values()):
            raise SystemExit(f"{name}: {out.count(chr(10))} rows")


if __name__ == "__main__":
    raise SystemExit(main())
