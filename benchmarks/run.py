#!/usr/bin/env python3
"""segdl benchmark suite: segdl vs aria2c vs curl against local nginx mirrors.

    python benchmarks/run.py [--quick] [--cases a,b,...] [--rounds N] [--out DIR]

``--cases loopback`` or ``--cases real`` selects a whole group: the
plain-HTTP loopback cases, or the real-link ones (TLS, h2, a cap per
connection, latency, a hub; see segbench/reallinks.py).

Writes DIR/results.json (every run, medians, ratios, targets, machine info),
DIR/results.md (a table per case, targets met / not met) and DIR/chart.png.
See benchmarks/README.md for what each case measures.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "support"))  # tests/support/servers.py: the Nginx helper

from servers import Nginx  # noqa: E402
from segbench import cleanup, machine, report, runner  # noqa: E402
from segbench.cases import Case, build_cases, segdl_has_input_file  # noqa: E402
from segbench.cases import ALL_CASE_NAMES as LOOPBACK_CASE_NAMES  # noqa: E402
from segbench.reallinks import REAL_CASE_NAMES, build_real_cases  # noqa: E402

ALL_CASE_NAMES = LOOPBACK_CASE_NAMES + REAL_CASE_NAMES
GROUPS = {"loopback": LOOPBACK_CASE_NAMES, "real": REAL_CASE_NAMES}

DISK_MARGIN = 2 << 30  # keep this much free beyond a case's data and output
TOOLS = ("segdl", "aria2c", "curl", "nginx")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="small sizes, 1 round, no 4g case (about 2 minutes)")
    p.add_argument("--cases", default=",".join(ALL_CASE_NAMES),
                   help=f"comma-separated subset of: {', '.join(ALL_CASE_NAMES)}; "
                        "or a group: loopback, real")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds per case (default 3, or 1 with --quick)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default benchmarks/results, "
                        "benchmarks/results/quick with --quick)")
    p.add_argument("--data", type=Path, default=HERE / ".data",
                   help="cache of generated files and scratch space (git-ignored)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds before a single tool run is killed")
    p.add_argument("--segdl-urls", choices=("auto", "file", "args"), default="auto",
                   help="give segdl a collection as -i FILE or as arguments "
                        "(auto: -i if `segdl get --help` lists --input-file)")
    args = p.parse_args(argv)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if args.out is None:
        args.out = HERE / "results" / ("quick" if args.quick else "")
    if not 1 <= args.rounds <= 50:
        p.error("--rounds must be between 1 and 50")
    unknown = [c for c in _names(args.cases) if c not in ALL_CASE_NAMES]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(ALL_CASE_NAMES)}")
    return args


def _names(csv: str) -> list[str]:
    names = []
    for c in (c.strip() for c in csv.split(",")):
        names += GROUPS.get(c, (c,) if c else ())
    return names


def log(msg: str) -> None:
    print(msg, flush=True)


def check_tools() -> None:
    from segbench.cases import segdl_binary

    found = {"segdl": Path(segdl_binary()).exists() or shutil.which("segdl")}
    missing = [t for t in TOOLS if not found.get(t, shutil.which(t) or Path(f"/usr/sbin/{t}").exists())]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)}")
    compile_segdl()


def compile_segdl() -> None:
    """Bytecode for segdl's modules, before any timing.  pip compiles an
    installed package's modules; an editable install leaves them to the
    first import, and with PYTHONDONTWRITEBYTECODE set (as on this
    machine) every run compiled about 70 modules again: 0.12 s of each
    segdl run, and of its start-up.  (Reading bytecode needs no writing.)"""
    import os
    import subprocess

    import segdl.cli
    import segdl.engine

    for root in (Path(segdl.engine.__file__).parent, Path(segdl.cli.__file__).parent):
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(root)], check=True, env=env,
                       stdout=subprocess.DEVNULL)


def skip_reason(case: Case, src_root: Path) -> str | None:
    """Why ``case`` cannot run here (not enough disk), or None."""
    need = case.dataset.missing(src_root) + case.total_bytes + DISK_MARGIN
    free = shutil.disk_usage(src_root).free
    if free < need:
        return (f"{case.name}: needs {need / 1e9:.1f} GB free on {src_root} "
                f"(data + output + margin), only {free / 1e9:.1f} GB")
    return None


def _pace_bytes(pace: str | None) -> int | None:
    if not pace:
        return None
    from segdl.engine.rules.bandwidth import parse_rate

    return parse_rate(pace)


def case_entry(case: Case, runs: list[dict], rounds: int) -> dict:
    return {
        "title": case.title, "mirror": case.mirror.describe(), "dataset": case.dataset.name,
        "files": case.dataset.count, "file_size": case.dataset.size, "bytes": case.total_bytes,
        "rounds": rounds, "notes": list(case.notes),
        "pace_bytes": _pace_bytes(case.mirror.pace),
        "kind": "loopback" if case.name in LOOPBACK_CASE_NAMES else "real",
        "summary": report.summarize(runs), "runs": runs,
    }


def write_outputs(doc: dict, out: Path, final: bool) -> None:
    summaries = {name: c["summary"] for name, c in doc["cases"].items()}
    facts = {name: {"files": c["files"], "pace_bytes": c.get("pace_bytes")} for name, c in doc["cases"].items()}
    doc["targets"] = report.targets(summaries, facts)
    report.write_json(out / "results.json", doc)
    if final:
        report.write_markdown(out / "results.md", doc)
        report.write_chart(out / "chart.png", doc)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_tools()
    src_root, work_root = args.data / "src", args.data / "work"
    src_root.mkdir(parents=True, exist_ok=True)
    cleanup.clear(work_root, log=log)
    args.out.mkdir(parents=True, exist_ok=True)
    all_cases = {**build_cases(args.quick), **build_real_cases(args.quick)}
    wanted = _names(args.cases)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick,
           "rounds": args.rounds, "argv": sys.argv,
           "machine": machine.machine_info(REPO, args.data), "cases": {}, "skipped": []}
    if args.quick and "4g" in wanted:
        doc["skipped"].append("4g: not part of --quick")
    use_file = (args.segdl_urls == "file"
                or (args.segdl_urls == "auto" and segdl_has_input_file()))
    doc["segdl_urls"] = "-i FILE" if use_file else "arguments"
    ctx = runner.Context(src_root, work_root, rounds=args.rounds, timeout=args.timeout,
                         segdl_input_file=use_file, log=log)
    t0 = time.monotonic()
    try:
        for name, case in all_cases.items():
            if name not in wanted:
                continue
            reason = skip_reason(case, src_root)
            if reason:
                log(f"== skipped {reason}")
                doc["skipped"].append(reason)
                continue
            runs = runner.run_case(case, ctx, Nginx)
            doc["cases"][name] = case_entry(case, runs, args.rounds)
            write_outputs(doc, args.out, final=False)
    finally:
        doc["elapsed_s"] = time.monotonic() - t0
        write_outputs(doc, args.out, final=True)
        shutil.rmtree(work_root / "dl", ignore_errors=True)
        shutil.rmtree(work_root / "scratch", ignore_errors=True)
        cleanup.delete_pile(work_root, ctx.pile)
    log(f"done in {doc['elapsed_s']:.0f} s: {args.out / 'results.md'}")
    for t in doc["targets"]:
        log(f"  {t['status']:>8}  {t['target']}")
    return 0 if all(r["ok"] for c in doc["cases"].values() for r in c["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
