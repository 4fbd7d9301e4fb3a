"""Run a case: open its site (the servers), then rounds of (warm cache, every tool once).

A site is what the tools download from: for the loopback cases one nginx
(or ``PacedMirror``) serving the dataset (:class:`OneServerSite`); for the
real-link cases TLS mirrors and a hub (``reallinks.py``).  It gives the
URLs, the servers whose access logs count the run, the CA, the tools'
environment and where a tool's output lands.

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

from . import cleanup, datasets
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

    @property
    def pile(self) -> Path:
        """Outputs of finished runs, emptied, deleted at the end (cleanup)."""
        return self.work_root / "pile"


# --------------------------------------------------------------------------- checks


def _listing(root: Path) -> set[str]:
    """Every file below ``root`` as a relative POSIX path (symlinks to files count)."""
    found: set[str] = set()
    if not root.is_dir():
        return found
    for dirpath, _dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        found.update((rel / f).as_posix() for f in files)
    return found


def verify_output(root: Path, expected: dict[str, tuple[int, str]], hash_it: bool) -> dict:
    """Compare the files under ``root`` with ``expected`` ({path: (size, blake3)})."""
    present = _listing(root)
    missing = sorted(n for n in expected if n not in present)
    wrong_size = sorted(n for n, (size, _) in expected.items()
                        if n in present and (root / n).stat().st_size != size)
    mismatched = []
    if hash_it:
        mismatched = sorted(n for n, (_, digest) in expected.items()
                            if n in present and n not in wrong_size
                            and datasets.blake3_file(root / n) != digest)
    extra = sorted(present - set(expected))
    return {
        "ok": not (missing or wrong_size or mismatched),
        "hashed": hash_it,
        "missing": len(missing), "wrong_size": len(wrong_size), "hash_mismatch": len(mismatched),
        "examples": (missing + wrong_size + mismatched)[:5],
        "extra_files": extra[:10], "extra_count": len(extra),
    }


def fsync_outputs(root: Path, names) -> float:
    """fsync every output file; returns seconds (dirty data the tool left behind)."""
    t0 = time.perf_counter()
    for name in names:
        try:
            fd = os.open(root / name, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - t0


#: A response carrying more than this is file data, not a probe or an API answer.
_DATA_BYTES = 1024


def _settled_entries(server) -> list[dict]:
    """The server's access-log entries once their number is stable (reset afterwards).

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
    return entries


def log_stats(entries: list[dict], start_epoch: float) -> dict:
    """Requests, bytes, TCP connections and protocols in one server's log lines.

    ``connections``: distinct ``$connection`` numbers (TCP connections that
    carried a request); ``range_connections``: those that answered a 206
    (a file's ranges); ``protocols``: ``$server_protocol`` -> requests.
    """
    if not entries:
        return {"requests": 0}
    starts = [e["msec"] - (e["request_time"] or 0) for e in entries if e["msec"]]
    ends = [e["msec"] for e in entries if e["msec"]]
    data_ends = [e["msec"] for e in entries  # a real transfer, not a 1-byte probe
                 if e["msec"] and e["completion"] and (e["body_bytes_sent"] or 0) > _DATA_BYTES]
    conns = {e.get("connection") for e in entries} - {None}
    protocols: dict[str, int] = {}
    for e in entries:
        if e.get("protocol"):
            protocols[e["protocol"]] = protocols.get(e["protocol"], 0) + 1
    return {
        "requests": len(entries),
        "get_requests": sum(e["method"] == "GET" for e in entries),
        "non_2xx": sum(not (200 <= (e["status"] or 0) < 300) for e in entries),
        "incomplete": sum(not e["completion"] for e in entries),
        "body_bytes_served": sum(e["body_bytes_sent"] or 0 for e in entries),
        "first_request_s": round(min(starts) - start_epoch, 4) if starts else None,
        "first_response_done_s": round(min(ends) - start_epoch, 4) if ends else None,
        "first_data_done_s": round(min(data_ends) - start_epoch, 4) if data_ends else None,
        "connections": len(conns) if conns else None,
        "range_connections": len({e.get("connection") for e in entries
                                  if e["status"] == 206} - {None}) if conns else None,
        "protocols": protocols,
    }


def _merge(parts: list[dict]) -> dict:
    """One run's statistics over several servers (a hub and its CDN)."""
    parts = [p for p in parts if p.get("requests")]
    if len(parts) <= 1:
        return dict(parts[0]) if parts else {"requests": 0}
    out: dict = {}
    for key in ("requests", "get_requests", "non_2xx", "incomplete", "body_bytes_served",
                "connections", "range_connections"):
        vals = [p.get(key) for p in parts if p.get(key) is not None]
        out[key] = sum(vals) if vals else None
    for key in ("first_request_s", "first_response_done_s", "first_data_done_s"):
        vals = [p.get(key) for p in parts if p.get(key) is not None]
        out[key] = min(vals) if vals else None
    out["protocols"] = {}
    for p in parts:
        for proto, n in (p.get("protocols") or {}).items():
            out["protocols"][proto] = out["protocols"].get(proto, 0) + n
    return out


def access_stats(servers: dict, start_epoch: float) -> dict:
    """Requests the tool made, from the access logs of ``servers`` ({name: server}).

    With several servers the totals are merged and ``by_server`` keeps each one's.
    """
    per = {name: log_stats(_settled_entries(srv), start_epoch) for name, srv in servers.items()}
    merged = _merge(list(per.values()))
    if len(servers) > 1:
        merged["by_server"] = per
    return merged


class OneServerSite:
    """One server (nginx or ``PacedMirror``) serving the dataset's files, over
    plain HTTP or, with ``ca_cert``, TLS."""

    def __init__(self, server, paths: list[str], ca_cert: Path | None = None) -> None:
        self.server, self.paths, self.ca_cert = server, paths, ca_cert
        self.servers = {"mirror": server}
        self.urls: list[str] = []

    def __enter__(self) -> "OneServerSite":
        self.server.start()
        self.urls = [self.server.url(p) for p in self.paths]
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop()

    def env(self, spec: ToolSpec, scratch: Path) -> dict | None:
        """The tool's environment (None: this process's)."""
        return None

    def output_root(self, spec: ToolSpec, dest: Path) -> Path:
        return dest

    def placeholders(self) -> dict[str, str]:
        scheme = self.server.base_url.split(":", 1)[0]
        shown = {self.server.base_url: f"{scheme}://127.0.0.1:$PORT"}
        return {**shown, str(self.ca_cert): "$CA"} if self.ca_cert else shown

    def run_facts(self, spec: ToolSpec, stdout: Path, scratch: Path) -> dict:
        """What the site checks in a finished run beyond its files (none here)."""
        return {}


def loopback_site(case: Case, ctx: "Context", nginx_cls) -> OneServerSite:
    """The loopback cases' mirror: a plain-HTTP nginx (``limit_rate``,
    ``echo_sleep_ms``) or, for ``pace``, segdl's ``PacedMirror``."""
    mirror = case.mirror
    if mirror.pace:
        from segdl.engine.rules.bandwidth import parse_rate
        from servers import PacedMirror

        server = PacedMirror(ctx.src_root, parse_rate(mirror.pace))
    else:
        server = nginx_cls(ctx.src_root, limit_rate=mirror.limit_rate, echo_sleep_ms=mirror.echo_sleep_ms)
    return OneServerSite(server, case.dataset.url_paths())


def open_site(case: Case, ctx: "Context", nginx_cls):
    """The site of ``case`` (not started: use it as a context manager)."""
    opener = getattr(case.mirror, "open", None)
    return opener(case, ctx) if opener else loopback_site(case, ctx, nginx_cls)


# --------------------------------------------------------------------------- runs


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_one(case: Case, spec: ToolSpec, site, ctx: Context, expected: dict[str, tuple[int, str]],
            round_no: int, position: int) -> dict:
    """Download the case's dataset once with ``spec``; return the run record."""
    slug = f"{case.name}-{spec.label.replace(' ', '_')}-r{round_no}"
    dest = _fresh(ctx.work_root / "dl" / slug)
    scratch = _fresh(ctx.work_root / "scratch" / slug)
    log_dir = ctx.work_root / "logs" / slug
    argv = command(spec, site.urls, dest, scratch, ctx.segdl_input_file, ca_cert=site.ca_cert)
    for server in site.servers.values():
        server.reset_access_log()
    m = run_measured(argv, log_dir=log_dir, timeout=ctx.timeout * case.timeout_scale,
                     env=site.env(spec, scratch))
    out_root = site.output_root(spec, dest)
    fsync_s = fsync_outputs(out_root, expected)
    check = verify_output(out_root, expected, hash_it=round_no == 0)
    http = access_stats(site.servers, m.start_epoch)
    facts = site.run_facts(spec, log_dir / "stdout.log", scratch)
    cleanup.set_aside(dest, ctx.pile)  # (deleted after the last timed run: see cleanup)
    cleanup.set_aside(scratch, ctx.pile)
    ok = m.returncode == 0 and not m.timed_out and check["ok"]
    record = {
        "case": case.name, "label": spec.label, "tool": spec.tool, "round": round_no,
        "position": position, "ok": ok,
        "command": _placeholders(display(argv, len(site.urls)), dest, scratch, site.placeholders()),
        "bytes": case.total_bytes, "fsync_s": fsync_s, "wall_plus_fsync_s": m.wall_s + fsync_s,
        "verify": check, "http": http, **facts, **m.to_dict(),
    }
    del record["argv"]  # ``command`` has it, without 10,000 URLs
    if not ok:
        record["problem"] = _describe_failure(m, check)
    return record


def _placeholders(cmd: str, dest: Path, scratch: Path, urls: dict[str, str]) -> str:
    """The command with run-specific paths and ports replaced by $DEST etc."""
    cmd = cmd.replace(str(dest), "$DEST").replace(str(scratch), "$SCRATCH")
    for real, shown in urls.items():
        cmd = cmd.replace(real, shown)
    return cmd


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
            f"reqs {r['http'].get('requests', 0)}{_conns(r['http'])}{extra}")


def _conns(http: dict) -> str:
    if http.get("connections") is None:
        return ""
    protos = "+".join(sorted(http.get("protocols") or {})) or "?"
    return f"  conns {http['connections']} (206: {http.get('range_connections')}) {protos}"


def run_case(case: Case, ctx: Context, nginx_cls) -> list[dict]:
    """All rounds of one case; returns every run record."""
    ctx.log(f"== {case.name}: {case.title}")
    expected = case.dataset.expected(ctx.src_root, log=ctx.log)
    runs: list[dict] = []
    with open_site(case, ctx, nginx_cls) as site:
        for round_no in range(ctx.rounds):
            warm = case.dataset.warm(ctx.src_root)
            ctx.log(f"  round {round_no + 1}/{ctx.rounds} (cache warmed in {warm:.1f} s)")
            shift = round_no % len(case.tools)
            order = case.tools[shift:] + case.tools[:shift]
            for position, spec in enumerate(order):
                record = run_one(case, spec, site, ctx, expected, round_no, position)
                _log_run(ctx, record)
                runs.append(record)
    return runs
