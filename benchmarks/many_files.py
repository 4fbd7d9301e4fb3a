"""Many small files from a loopback nginx: segdl against ``curl -Z
--parallel-max 16`` followed by ``sync``, the per-file cost (issue 19).

    python benchmarks/many_files.py --files 20000 --size 4096 --rounds 3
    python benchmarks/many_files.py --files 100000 --size 4096 --first-request
    python benchmarks/many_files.py --files 20000 --profile /tmp/prof.out

Each round runs segdl (``-j 16 --max-connections 16 -q``, from an aria2
input file) and curl + sync, each into a fresh folder; the output is
checked (every file, its size) and deleted.  Reported: wall seconds and CPU seconds (the process tree's)
(medians), the ratio, and for segdl the peak RSS of all its processes
(sampled from /proc every 50 ms) and when nginx logged its first request.
``--first-request``: one segdl run only, stopped ``--hold`` seconds (10)
after nginx logged its first request (issue 19: within 2 s of the start
for 100,000 files), with the peak RSS until then; ``--full`` lets it run
to the end instead.
``--profile FILE``: one segdl run under cProfile (the coordinator process;
the workers are forked and not profiled).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

from servers import Nginx  # noqa: E402  (the test suite's nginx supervisor)
from segbench import cleanup  # noqa: E402


def make_files(root: Path, count: int, size: int) -> list[str]:
    """``count`` files of ``size`` bytes under ``root/d{i//1000}/``, made once."""
    names = [f"d{i // 1000:03d}/f{i:06d}.bin" for i in range(count)]
    stamp = root / f".made-{count}-{size}"
    if not stamp.exists():
        for n in names:
            p = root / n
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(bytes([len(n) % 251]) * size)
        stamp.touch()
    return names


def rss_of_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and every descendant (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, ()))
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def first_logged(log: Path) -> float | None:
    """The time (epoch, ms precision) of nginx's first logged request (the
    first field of each line of the test nginx's access log)."""
    try:
        with open(log) as f:
            line = f.readline()
    except OSError:
        return None
    return float(line.split("\t", 1)[0]) if line.endswith("\n") else None


def run(argv: list[str], log: Path | None = None, stop_at_first: bool = False,
        timeout: float = 900, hold: float = 0.0) -> dict:
    """Run ``argv``, sampling the RSS of its process tree every 50 ms;
    ``stop_at_first``: stop ``hold`` seconds after nginx logged a request."""
    t0 = time.time()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, first = 0, None
    while p.poll() is None and time.time() - t0 < timeout:
        peak = max(peak, rss_of_tree(p.pid))
        if log is not None and first is None:
            first = first_logged(log)
        if first is not None and stop_at_first and time.time() >= first + hold:
            break
        time.sleep(0.05)
    if p.poll() is None:
        p.kill()
    err = p.communicate()[1]
    wall = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the tree's, once each process was waited for
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if log is not None and first is None:
        first = first_logged(log)
    return {"wall": wall, "cpu_s": cpu, "rc": p.returncode, "peak_rss_mb": peak / 1e6,
            "first_request_s": None if first is None else first - t0, "stderr": err.decode()[-2000:]}


def check(dest: Path, names: list[str], size: int) -> int:
    """How many files are missing or of the wrong size."""
    bad = 0
    for n in names:
        try:
            bad += (dest / n).stat().st_size != size
        except OSError:
            bad += 1
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "segdl-many-files")
    ap.add_argument("--first-request", action="store_true")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--profile", type=Path)
    ap.add_argument("--no-curl", action="store_true")
    ap.add_argument("--segdl-args", default="-j 16 --max-connections 16")
    a = ap.parse_args()
    src = a.data / f"src-{a.size}"  # one per size: the names are the same
    names = make_files(src, a.files, a.size)
    cleanup.settle(cleanup.last_deleted(a.data))
    segdl = str(Path(sys.executable).parent / "segdl")
    results: dict[str, list[dict]] = {"segdl": [], "curl -Z + sync": []}
    with Nginx(src) as ng:
        log = ng.access_log_path
        urls = [ng.url(n) for n in names]
        work = Path(tempfile.mkdtemp(dir=a.data))
        (work / "input.txt").write_text("".join(f"{u}\n  out={n}\n" for u, n in zip(urls, names)))
        rounds = 1 if (a.first_request or a.profile) else a.rounds
        for r in range(rounds):
            for tool in (["segdl"] if (a.no_curl or a.first_request or a.profile) else
                         (["segdl", "curl -Z + sync"] if r % 2 == 0 else ["curl -Z + sync", "segdl"])):
                dest = work / "out"
                cleanup.set_aside(dest, work / "pile")  # (not deleted until the end: see segbench/cleanup.py)
                dest.mkdir()
                ng.reset_access_log()
                if tool == "segdl":
                    journal = work / "journal.sqlite"
                    for suffix in ("", "-wal", "-shm"):
                        Path(str(journal) + suffix).unlink(missing_ok=True)
                    argv = [segdl, "get", "-q", "-d", str(dest), "--journal", str(journal),
                            *a.segdl_args.split(), "-i", str(work / "input.txt")]
                    if a.profile:
                        argv = [sys.executable, "-m", "cProfile", "-o", str(a.profile), *argv]
                else:
                    cfg = work / "curl.cfg"
                    cfg.write_text("".join(f'url = "{u}"\noutput = "{dest / n}"\n' for u, n in zip(urls, names)))
                    argv = ["sh", "-c", f'curl -sS -f -Z --parallel-max 16 --create-dirs -K "{cfg}" && sync']
                out = run(argv, log, stop_at_first=a.first_request and not a.full, hold=a.hold)
                out["bad"] = check(dest, names, a.size) if not (a.first_request and not a.full) else None
                results[tool].append(out)
                print(tool, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()
                             if k != "stderr"}, flush=True)
                if out["rc"] not in (0, None, -9) or out["bad"]:
                    print(out["stderr"], file=sys.stderr)
        cleanup.delete_pile(a.data, work / "pile")
        shutil.rmtree(work, ignore_errors=True)
    med = {t: statistics.median(x["wall"] for x in v) for t, v in results.items() if v}
    print("medians:", {t: round(v, 2) for t, v in med.items()})
    if len(med) == 2:
        print(f"segdl / (curl -Z + sync): {med['segdl'] / med['curl -Z + sync']:.2f}x")


if __name__ == "__main__":
    main()
