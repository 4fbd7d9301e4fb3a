"""Power-cut soak: many trials of segdl on the forgetful FUSE filesystem.

    python benchmarks/powercut_soak.py [--trials 200] [--seed 1] [--out FILE]

Needs root, /dev/fuse, fusermount3 (Debian fuse3) and mfusepy (the test
extra).  Each trial downloads a collection of four files (1-6 MiB) from a
paced local mirror onto the filesystem, cuts the power up to three times
(at random instants, when half the files are done, or at a chosen
operation: the k-th fdatasync, around the rename, a journal commit, a WAL
checkpoint; a quarter of the cuts torn), checks the journal against the
disk after each cut, runs the same command to the end, and cuts once more
after its exit 0.  Trials alternate O_DIRECT and --no-direct-io.  Every
tenth trial instead cuts one 24 MiB file mid-download and measures the
progress the journal lost against what a kill -9 leaves.

Prints a summary (and writes it to --out): trials, cuts, the points cut,
failures with the seed that replays each (tests/support/powercut.py
``power_trial``), the worst re-download, the worst progress lost.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from powercut import Job, power_trial, progress_trial, unavailable  # noqa: E402
from servers import PacedMirror  # noqa: E402

MiB = 1 << 20
SIZES = [3 * MiB, 5 * MiB, 1 * MiB, 6 * MiB]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "powercut_soak.txt")
    args = ap.parse_args()
    why = unavailable()
    if why:
        print(f"powercut_soak: cannot run here: {why}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    points: Counter = Counter()
    failures: list[str] = []
    worst_redl = (0, None)
    losses: list[tuple[float, int]] = []  # (lost seconds of progress, seed)
    cuts = torn = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="segdl-powercut-") as tmp:
        tmp = Path(tmp)
        (tmp / "mirror").mkdir()
        srng = random.Random(args.seed)
        sources = {f"f{i}.bin": srng.randbytes(s) for i, s in enumerate(SIZES)}
        for name, data in sources.items():
            (tmp / "mirror" / name).write_bytes(data)
        with PacedMirror(tmp / "mirror", rate=8 * MiB) as mirror:
            for i in range(args.trials):
                seed = rng.randrange(1 << 31)
                root = tmp / f"trial-{i}"
                if i % 10 == 9:
                    t = progress_trial(root, seed, size=24 * MiB, rate=3 * MiB, connections=2, cut_window=(1.0, 3.5))
                    cuts += 1
                    points["progress"] += 1
                    lost_s = t.lost / t.per_second
                    losses.append((lost_s, seed))
                    bad = list(t.problems)
                    if t.final_rc != 0 or not t.final_ok:
                        bad.append(f"final run exited {t.final_rc}, file ok: {t.final_ok}")
                    if lost_s > 2.0:
                        bad.append(f"lost {t.lost / MiB:.1f} MiB of claims ({lost_s:.2f} s of progress)")
                    if bad:
                        failures.append(f"progress seed {seed}: " + "; ".join(bad))
                else:
                    extra = ("--no-direct-io",) if i % 2 else ()
                    r = power_trial(Job(mirror, sources, extra=extra), root, seed)
                    cuts += len(r.cuts) + 1  # and the one after exit 0
                    for c in r.cuts:
                        points[c.split(":")[0]] += 1
                        torn += ":torn=" in c
                    if r.redownloaded > worst_redl[0]:
                        worst_redl = (r.redownloaded, seed)
                    if r.problems:
                        failures.append(f"seed {seed} ({'buffered' if extra else 'direct'}), cuts {r.cuts}: "
                                        + "; ".join(r.problems))
                _rmtree(root)
                if (i + 1) % 20 == 0:
                    print(f"  {i + 1}/{args.trials} trials, {len(failures)} failures", file=sys.stderr)
    collection = sum(SIZES)
    lines = [
        f"powercut_soak: {args.trials} trials (seed {args.seed}), {cuts} power cuts ({torn} torn), "
        f"{time.monotonic() - started:.0f} s",
        "cuts by point: " + ", ".join(f"{p} {n}" for p, n in sorted(points.items())),
        f"failures: {len(failures)}",
        *[f"  {f}" for f in failures[:50]],
        f"worst re-download in a collection trial: {worst_redl[0] / MiB:.1f} MiB "
        f"({worst_redl[0] / collection:.2f}x the {collection // MiB} MiB collection, seed {worst_redl[1]})",
    ]
    if losses:
        worst = max(losses)
        lines.append(f"progress trials: {len(losses)}; worst progress lost to a cut: {worst[0]:.2f} s "
                     f"at the paced ceiling (seed {worst[1]}); median {sorted(losses)[len(losses) // 2][0]:.2f} s")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 1 if failures else 0


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
