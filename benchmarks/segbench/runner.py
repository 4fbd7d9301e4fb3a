"""Run a case: start its nginx mirror, then rounds of (warm cache, every tool once).

Tools alternate within a round and the order rotates from round to round,
so no tool always runs first (or right after the same neighbour).  Every run
downloads into a fresh directory, is measured (see ``measure.py``), checked
(exit status, every file's size, and blake3 in the first round), and its
output deleted again.  A run that fails any check is recorded but never
counted in the medians.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import datasets
from .cases import Case, ToolSpec, command, display
from .measure import run_measured


@dataclass
class Context:
    src_root: Path  # nginx document root (datasets live below it)
    work_root: Path  # downloads, journals, logs of the run in progress
    rounds: int
    timeout: float
    segdl_input_file: bool = False  # pass URL lists to segdl as ``-i FILE``
    log: Callable[[str], None] = print


# --------------------------------------------------------------------------- checks


def verify_output(dest: Path, expected: dict[str, str], size: int, hash_it: bool) -> dict:
    """Compare ``dest`` with the expected files (name -> blake3) of ``size`` bytes."""
    present = set(os.listdir(dest)) if dest.is_dir() else set()
    missing = sorted(n for n in expected if n not in present)
    wrong_size = sorted(n for n in expected if n in present and (dest / n).stat().st_size != size)
    mismatched = []
    if hash_it:
        mismatched = sorted(n for n in expected if n in present and n not in wrong_size
                            and datasets.blake3_file(dest / n) != expected[n])
    extra = sorted(present - set(expected))
    return {
        "ok": not (missing or wrong_size or mismatched),
        "hashed": hash_it,
        "missing": len(missing), "wrong_size": len(wrong_size), "hash_mismatch": len(mismatched),
        "examples": (missing + wrong_size + mismatched)[:5],
        "extra_files": extra[:10], "extra_count": len(extra),
    }


def fsync_outputs(dest: Path, names) -> float:
    """fsync every output file; returns seconds (dirty data the tool left behind)."""
    t0 = time.perf_counter()
    for name in names:
        try:
            fd = os.open(dest / name, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


def access_stats(server, start_epoch: float) -> dict:
    """Requests the tool made, from nginx's access log (reset afterwards).

    nginx logs a request when it ends, slightly after the client saw the last
    byte, so the log is re-read until its length is stable (at most ~2 s).
    """
    entries, last = [], -1
    for _ in range(20):
        entries = server.access_log_entries()
        if len(entries) == last:
            break
        last = len(entries)
        time.sleep(0.1)
    server.reset_access_log()
    if not entries:
        return {"requests": 0}
    starts = [e["msec"] - (e["request_time"] or 0) for e in entries if e["msec"]]
    ends = [e["msec"] for e in entries if e["msec"]]
    data_ends = [e["msec"] for e in entries  # a real transfer, not a 1-byte probe
                 if e["msec"] and e["completion"] and (e["body_bytes_sent"] or 0) > 1024]
    return {
        "requests": len(entries),
        "get_requests": sum(e["method"] == "GET" for e in entries),
        "non_2xx": sum(not (200 <= (e["status"] or 0) < 300) for e in entries),
        "incomplete": sum(not e["completion"] for e in entries),
        "body_bytes_served": sum(e["body_bytes_sent"] or 0 for e in entries),
        "first_request_s": round(min(starts) - start_epoch, 4) if starts else None,
        "first_response_done_s": round(min(ends) - start_epoch, 4) if ends else None,
        "first_data_done_s": round(min(data_ends) - start_epoch, 4) if data_ends else None,
    }


# --------------------------------------------------------------------------- runs


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_one(case: Case, spec: ToolSpec, server, ctx: Context, hashes: dict[str, str],
            round_no: int, position: int) -> dict:
    """Download the case's dataset once with ``spec``; return the run record."""
    slug = f"{case.name}-{spec.label.replace(' ', '_')}-r{round_no}"
    dest = _fresh(ctx.work_root / "dl" / slug)
    scratch = _fresh(ctx.work_root / "scratch" / slug)
    urls = [server.url(p) for p in case.dataset.url_paths()]
    argv = command(spec, urls, dest, scratch, ctx.segdl_input_file)
    server.reset_access_log()
    m = run_measured(argv, log_dir=ctx.work_root / "logs" / slug,
                     timeout=ctx.timeout * case.timeout_scale)
    fsync_s = fsync_outputs(dest, hashes)
    check = verify_output(dest, hashes, case.dataset.size, hash_it=round_no == 0)
    http = access_stats(server, m.start_epoch)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    ok = m.returncode == 0 and not m.timed_out and check["ok"]
    record = {
        "case": case.name, "label": spec.label, "tool": spec.tool, "round": round_no,
        "position": position, "ok": ok,
        "command": _placeholders(display(argv, len(urls)), dest, scratch, server.base_url),
        "bytes": case.total_bytes, "fsync_s": fsync_s, "wall_plus_fsync_s": m.wall_s + fsync_s,
        "verify": check, "http": http, **m.to_dict(),
    }
    del record["argv"]  # ``command`` has it, without 10,000 URLs
    if not ok:
        record["problem"] = _describe_failure(m, check)
    return record


def _placeholders(cmd: str, dest: Path, scratch: Path, base_url: str) -> str:
    """The command with run-specific paths and the port replaced by $DEST etc."""
    return (cmd.replace(str(dest), "$DEST").replace(str(scratch), "$SCRATCH")
            .replace(base_url, "http://127.0.0.1:$PORT"))


def _last_line(text: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _describe_failure(m, check: dict) -> str:
    """One line: why the run does not count (the full stderr tail is in the record)."""
    if m.timed_out:
        return f"timed out after {m.wall_s:.0f} s; stderr: {_last_line(m.stderr_tail)}"
    if m.returncode != 0:
        return f"exit {m.returncode}; stderr: {_last_line(m.stderr_tail)}"
    return (f"bad output: {check['missing']} missing, {check['wrong_size']} wrong size, "
            f"{check['hash_mismatch']} blake3 mismatches, e.g. {check['examples']}")


def _log_run(ctx: Context, r: dict) -> None:
    status = "ok " if r["ok"] else "BAD"
    mbps = r["bytes"] / 1e6 / r["wall_s"] if (r["ok"] and r["wall_s"]) else 0
    extra = f"  !! {r['problem'][:300]}" if not r["ok"] else ""
    if r["leftover"]:
        extra += f"  !! leftover processes: {r['leftover']}"
    ctx.log(f"    r{r['round']} {status} {r['label']:<12} {r['wall_s']:8.2f} s "
            f"{mbps:8.1f} MB/s  cpu {r['cpu_s']:6.2f} s  rss {r['peak_rss'] / 1e6:7.1f} MB  "
            f"reqs {r['http'].get('requests', 0)}{extra}")


def run_case(case: Case, ctx: Context, nginx_cls) -> list[dict]:
    """All rounds of one case; returns every run record."""
    ctx.log(f"== {case.name}: {case.title}")
    hashes = datasets.ensure(ctx.src_root, case.dataset, log=ctx.log)
    runs: list[dict] = []
    if case.mirror.pace:
        from segdl.engine.bandwidth import parse_rate
        from servers import PacedMirror

        server = PacedMirror(ctx.src_root, parse_rate(case.mirror.pace))
    else:
        server = nginx_cls(ctx.src_root, limit_rate=case.mirror.limit_rate,
                           echo_sleep_ms=case.mirror.echo_sleep_ms)
    with server:
        for round_no in range(ctx.rounds):
            warm = datasets.warm_cache(ctx.src_root, case.dataset)
            ctx.log(f"  round {round_no + 1}/{ctx.rounds} (cache warmed in {warm:.1f} s)")
            shift = round_no % len(case.tools)
            order = case.tools[shift:] + case.tools[:shift]
            for position, spec in enumerate(order):
                record = run_one(case, spec, server, ctx, hashes, round_no, position)
                _log_run(ctx, record)
                runs.append(record)
    return runs
