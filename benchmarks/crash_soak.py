"""Crash soak: many kill -9 trials against a local nginx, then statistics.

    python benchmarks/crash_soak.py [--trials 50] [--size-mib 300] [--seed 1]

Each trial starts `segdl get`, kills every segdl process (SIGKILL to the
process group) at a random instant, reads back every byte the journal claims
(it must be right), measures the bytes on disk that the journal had not
claimed yet, then runs the same command again and checks the blake3 of the
result and the bytes the server sent in all.  The test suite runs a few of
these (tests/test_crash.py); this script runs as many as you like.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from crashlib import crash_trial  # noqa: E402
from servers import MiB, Nginx, blake3_file, write_deterministic_file  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--size-mib", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-kill-after", type=float, default=2.0, help="kill within this many seconds")
    ap.add_argument("--limit-rate", default=None, help="nginx limit_rate per connection, e.g. 20m")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="segdl-soak-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        root.mkdir()
        src = write_deterministic_file(root / "soak.bin", args.size_mib * MiB, args.seed)
        digest = blake3_file(src)
        failures = 0
        redl, lags = [], []
        with Nginx(root=root, limit_rate=args.limit_rate) as srv:
            for i in range(args.trials):
                work = tmp / f"t{i}"
                work.mkdir()
                kill_after = rng.uniform(0.05, args.max_kill_after)
                try:
                    t = crash_trial(srv, srv.url("soak.bin"), digest, src.stat().st_size, work,
                                    kill_after, source=src, timeout=600)
                    ok = t.ok and t.final_rc == 0
                except AssertionError as e:  # a claimed byte was wrong
                    print(f"trial {i}: JOURNAL CLAIMED A WRONG BYTE: {e}")
                    failures += 1
                    continue
                failures += not ok
                redl.append(t.redownloaded)
                lags.append(t.lag)
                print(f"trial {i:3d}: kill after {kill_after:5.2f}s running={t.killed!s:5} ok={ok!s:5} "
                      f"claimed {t.claimed / MiB:7.1f} MiB  unclaimed-on-disk {t.lag / MiB:6.1f} MiB  "
                      f"re-downloaded {t.redownloaded / MiB:7.1f} MiB", flush=True)
                for p in work.rglob("*"):
                    if p.is_file():
                        p.unlink()
        if redl:
            print(f"\n{len(redl)} trials, {failures} failures")
            print(f"re-downloaded MiB: median {statistics.median(redl) / MiB:.1f}  max {max(redl) / MiB:.1f}")
            print(f"unclaimed-on-disk MiB: median {statistics.median(lags) / MiB:.1f}  max {max(lags) / MiB:.1f}")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
