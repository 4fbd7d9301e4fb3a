"""Medians, ratios, targets, and the three outputs: results.json, results.md, chart.png.

Units: MB = 10^6 bytes, GB = 10^9 bytes.  Only runs that passed every check
(exit 0, sizes, blake3 where hashed) enter a median.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

TOOL_ORDER = ("segdl", "aria2c", "curl", "curl-sync", "curl-many", "curl-many-sync", "hf-snapshot")


# --------------------------------------------------------------------------- medians


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per tool label: medians over the valid runs of one case."""
    out: dict[str, dict] = {}
    for label in dict.fromkeys(r["label"] for r in runs):
        mine = [r for r in runs if r["label"] == label]
        good = [r for r in mine if r["ok"]]
        s = {"tool": mine[0]["tool"], "command": mine[0]["command"],
             "runs": len(mine), "valid": len(good)}
        if good:
            size = good[0]["bytes"]
            wall = _median(r["wall_s"] for r in good)
            s.update(
                wall_s=wall,
                mb_per_s=size / 1e6 / wall,
                cpu_s=_median(r["cpu_s"] for r in good),
                cpu_s_per_gb=_median(r["cpu_s"] for r in good) / (size / 1e9),
                peak_rss_mb=_median(r["peak_rss"] for r in good) / 1e6,
                max_peak_rss_mb=max(r["peak_rss"] for r in good) / 1e6,
                peak_pss_mb=_median(r["peak_pss"] for r in good) / 1e6,
                processes=max(r["peak_procs"] for r in good),
                wall_plus_fsync_s=_median(r["wall_plus_fsync_s"] for r in good),
                requests=_median(r["http"].get("requests") for r in good),
                # bytes the mirror sent (bodies, probes included) per byte needed; the worst run
                served_ratio=max((r["http"].get("body_bytes_served") or 0) / size for r in good) if size else None,
                first_request_s=_median(r["http"].get("first_request_s") for r in good),
                first_response_done_s=_median(r["http"].get("first_response_done_s")
                                              for r in good),
                first_data_done_s=_median(r["http"].get("first_data_done_s") for r in good),
                wall_min_s=min(r["wall_s"] for r in good),
                wall_max_s=max(r["wall_s"] for r in good),
                connections=_median(r["http"].get("connections") for r in good),
                range_connections=_median(r["http"].get("range_connections") for r in good),
                range_connections_runs=[r["http"].get("range_connections") for r in good],
                protocols=sorted({p for r in good for p in (r["http"].get("protocols") or {})}),
            )
            verified = [r["hub_verified"] for r in good if r.get("hub_verified")]
            if verified:  # the worst run: every file must be verified in every run
                s["hub_verified"] = min(verified, key=lambda v: (v["lfs_sha256"], v["git_sha1"] or 0))
        out[label] = s
    _add_ratios(out)
    return out


def _baseline(summary: dict, tool: str) -> float | None:
    walls = [s.get("wall_s") for s in summary.values() if s["tool"] == tool]
    walls = [w for w in walls if w]
    return min(walls) if walls else None


def _add_ratios(summary: dict) -> None:
    for base in ("aria2c", "curl"):
        ref = _baseline(summary, base)
        for s in summary.values():
            w = s.get("wall_s")
            s[f"wall_vs_{base}"] = w / ref if (w and ref) else None
    for label, s in summary.items():  # against the fastest of the other tools
        others = [o.get("wall_s") for k, o in summary.items() if k != label and o["tool"] != s["tool"]]
        others = [w for w in others if w]
        w = s.get("wall_s")
        s["wall_vs_best_other"] = w / min(others) if (w and others) else None


# --------------------------------------------------------------------------- targets


def _segdl(summary: dict) -> dict | None:
    """segdl's summary in a case, if it has at least one valid run."""
    return next((s for s in summary.values() if s["tool"] == "segdl" and s.get("wall_s")), None)


def _best(summaries: dict, cases, tool: str, key: str) -> float | None:
    """Smallest median ``key`` of ``tool`` over ``cases`` (its best showing)."""
    vals = [s.get(key) for c in cases if c in summaries
            for s in summaries[c].values() if s["tool"] == tool]
    vals = [v for v in vals if v]
    return min(vals) if vals else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if (a is not None and b) else None


def _wall_vs(summaries, case, base, base_cases=None):
    s = _segdl(summaries[case])
    return _ratio(s and s["wall_s"], _best(summaries, base_cases or [case], base, "wall_s"))


def _mbps(summaries, case, tool_or_label):
    for label, s in summaries.get(case, {}).items():
        if (s["tool"] == tool_or_label or label == tool_or_label) and s.get("mb_per_s"):
            return s["mb_per_s"]
    return None


def _paced_share(S, M, case: str, connections: int) -> float | None:
    """segdl's throughput as a share of connections x the paced rate."""
    rate = M[case].get("pace_bytes")
    got = _mbps(S, case, "segdl")
    return got * 1e6 / (connections * rate) if (got and rate) else None


def _worst_served(S) -> float | None:
    vals = [s.get("served_ratio") for c in S.values() for s in c.values()
            if isinstance(s, dict) and s.get("tool") == "segdl" and s.get("served_ratio")]
    return max(vals) if vals else None


#: (case, description, limit, unit, value(summaries, case facts) -> float | None[, at least])
TARGETS = (
    ("1g", "1g: segdl wall <= 1.25x curl -o (segdl durable and verified, curl not)", 1.25, "x",
     lambda S, M: _wall_vs(S, "1g", "curl")),
    ("1g", "1g: segdl wall <= 0.5x aria2c -x16 -s16 -k1M", 0.5, "x",
     lambda S, M: _wall_vs(S, "1g", "aria2c")),
    ("1g", "1g: segdl CPU s/GB <= aria2c's", 1.0, "x",
     lambda S, M: _ratio((_segdl(S["1g"]) or {}).get("cpu_s_per_gb"),
                      _best(S, ["1g"], "aria2c", "cpu_s_per_gb"))),
    ("4g", "4g: segdl wall <= 0.6x aria2c", 0.6, "x",
     lambda S, M: _wall_vs(S, "4g", "aria2c")),
    ("small10k", "small10k: segdl wall <= 0.5x aria2c -i", 0.5, "x",
     lambda S, M: _wall_vs(S, "small10k", "aria2c")),
    ("small10k", "small10k: HTTP requests per file <= 1", 1.0, "",
     lambda S, M: _ratio((_segdl(S["small10k"]) or {}).get("requests"), M["small10k"]["files"])),
    ("paced-x16", "paced-x16: segdl >= 95% of 16 x the paced rate", 0.95, "", 
     lambda S, M: _paced_share(S, M, "paced-x16", 16), True),
    ("paced-x64", "paced-x64: segdl -x64 throughput >= 3.5x aria2c -x16", 3.5, "x",
     lambda S, M: _ratio(_mbps(S, "paced-x64", "segdl"), _mbps(S, "paced-x64", "aria2c")), True),
    ("paced-x64", "paced-x64: peak PSS of all segdl processes <= 120 MB", 120.0, " MB",
     lambda S, M: (_segdl(S["paced-x64"]) or {}).get("peak_pss_mb")),
    ("1g", "every case: bytes served <= 1.02x the bytes needed (worst segdl run)", 1.02, "x",
     lambda S, M: _worst_served(S)),
    ("1g", "1g: a synced journal commit every second costs <= 5% (segdl / segdl --commit-interval 600)",
     1.05, "x", lambda S, M: _ratio((_segdl(S["1g"]) or {}).get("wall_s"),
                                    (S["1g"].get("segdl, lazy commits") or {}).get("wall_s"))),
)


def _range_conns(S, case: str) -> float | None:
    """The file's range connections in segdl's runs: the count when every
    valid run used the same, else the one farthest from 16 (never met)."""
    runs = [n for n in ((_segdl(S[case]) or {}).get("range_connections_runs") or []) if n is not None]
    if not runs:
        return None
    return runs[0] if len(set(runs)) == 1 else max(runs, key=lambda n: abs(n - 16))


def _hub_unverified(S) -> float | None:
    """Files segdl did not verify against the hub (LFS: sha256; git: blob sha1), worst run."""
    v = (_segdl(S["tls-hub"]) or {}).get("hub_verified")
    if not v:
        return None
    return (v["lfs_files"] - v["lfs_sha256"]) + (v["git_files"] - (v["git_sha1"] or 0))


def _best_other(S, case: str) -> float | None:
    return (_segdl(S[case]) or {}).get("wall_vs_best_other")


def _x16_targets(case: str, share: float, vs_aria: float) -> tuple:
    return (
        (case, f"{case}: segdl -x16 >= {share:.0%} of 16 x the paced rate", share, "",
         lambda S, M: _paced_share(S, M, case, 16), True),
        (case, f"{case}: segdl wall <= {vs_aria:.2f}x aria2c -x16 -s16 -k1M", vs_aria, "x",
         lambda S, M: _wall_vs(S, case, "aria2c")),
    )


_REAL = {"tls-h2-x16", "tls-h1-x16", "tls-h2-sleep50-x16", "tls-h1-sleep50-x16", "tls-h2-x64",
         "tls-h2-small400", "tls-hub", "tls-1g"}

#: Issue 17, the real-link cases (same shape as TARGETS; "==" as the last
#: element: exactly the limit).
REAL_TARGETS = (
    *_x16_targets("tls-h2-x16", 0.93, 1.0),
    ("tls-h2-x16", "tls-h2-x16: exactly 16 TCP connections carry the file's ranges (every segdl run)",
     16, "", lambda S, M: _range_conns(S, "tls-h2-x16"), "=="),
    *_x16_targets("tls-h1-x16", 0.93, 1.0),
    ("tls-h1-x16", "tls-h1-x16: exactly 16 TCP connections carry the file's ranges (every segdl run)",
     16, "", lambda S, M: _range_conns(S, "tls-h1-x16"), "=="),
    *_x16_targets("tls-h2-sleep50-x16", 0.88, 0.97),
    *_x16_targets("tls-h1-sleep50-x16", 0.88, 0.97),
    ("tls-h2-x64", "tls-h2-x64: segdl -x64 throughput >= 3.5x aria2c -x16 (3m/s per connection)", 3.5, "x",
     lambda S, M: _ratio(_mbps(S, "tls-h2-x64", "segdl"), _mbps(S, "tls-h2-x64", "aria2c")), True),
    ("tls-h2-small400", "tls-h2-small400: segdl -j16 wall <= 0.8x the best of aria2c -j16 -i and curl -Z",
     0.8, "x", lambda S, M: _best_other(S, "tls-h2-small400")),
    ("tls-hub", "tls-hub: segdl get hf:// wall <= 0.2x snapshot_download", 0.2, "x",
     lambda S, M: _wall_vs(S, "tls-hub", "hf-snapshot")),
    ("tls-hub", "tls-hub: every file verified against the hub (LFS sha256, git blob sha1): files not verified",
     0, "", lambda S, M: _hub_unverified(S)),
    ("tls-1g", "tls-1g: segdl CPU s/GB <= curl's", 1.0, "x",
     lambda S, M: _ratio((_segdl(S["tls-1g"]) or {}).get("cpu_s_per_gb"),
                         _best(S, ["tls-1g"], "curl", "cpu_s_per_gb"))),
    ("tls-1g", "tls-1g: segdl wall <= 1.1x curl", 1.1, "x", lambda S, M: _wall_vs(S, "tls-1g", "curl")),
)


def _requests_per_file(S, M, case: str) -> float | None:
    return _ratio((_segdl(S[case]) or {}).get("requests"), M[case]["files"])


#: Issue 19, many files (same shape as TARGETS).  aria2c's best showing of
#: its two settings (falloc, default) is the one compared with.
MANY_TARGETS = (
    ("tiny20k", "tiny20k: segdl wall <= 3x curl -Z --parallel-max 16 + sync", 3.0, "x",
     lambda S, M: _wall_vs(S, "tiny20k", "curl-many-sync")),
    ("tiny20k", "tiny20k: segdl wall <= 0.3x aria2c -j16", 0.3, "x",
     lambda S, M: _wall_vs(S, "tiny20k", "aria2c")),
    ("tiny20k", "tiny20k: HTTP requests per file <= 1", 1.0, "",
     lambda S, M: _requests_per_file(S, M, "tiny20k")),
    ("small2k", "small2k: segdl wall <= 1.25x curl -Z --parallel-max 16 + sync", 1.25, "x",
     lambda S, M: _wall_vs(S, "small2k", "curl-many-sync")),
    ("small2k", "small2k: segdl wall <= 0.55x aria2c -j16", 0.55, "x",
     lambda S, M: _wall_vs(S, "small2k", "aria2c")),
    ("small2k", "small2k: HTTP requests per file <= 1", 1.0, "",
     lambda S, M: _requests_per_file(S, M, "small2k")),
)


def targets(summaries: dict[str, dict], facts: dict[str, dict] | None = None) -> list[dict]:
    """Each issue-8, issue-17 and issue-19 target with its value and status:
    met, not met, n/a (case not run) or failed (no valid segdl or baseline
    run)."""
    out = []
    for issue, table in (("8", TARGETS), ("17", REAL_TARGETS), ("19", MANY_TARGETS)):
        out += _evaluate(issue, table, summaries, facts)
    return out


def _evaluate(issue: str, table, summaries, facts) -> list[dict]:
    out = []
    for case, name, limit, unit, value_of, *how in table:
        value = value_of(summaries, facts or {}) if case in summaries else None
        if case not in summaries:
            status = "n/a"
        elif value is None:
            status = "failed (no valid run)"
        else:
            op = how[0] if how else "<="
            ok = value == limit if op == "==" else (value >= limit if op is True else value <= limit)
            status = "met" if ok else "not met"
        out.append({"issue": issue, "target": name, "value": value, "limit": limit, "unit": unit,
                    "status": status})
    return out


# --------------------------------------------------------------------------- outputs


def write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, default=str))
    os.replace(tmp, path)


def _f(v, fmt: str = ".2f", suffix: str = "") -> str:
    return "–" if v is None else f"{v:{fmt}}{suffix}"


def _case_table(name: str, case: dict) -> list[str]:
    lines = [f"### `{name}` — {case['title']}", "",
             f"Mirror: {case['mirror']}; {case['bytes'] / 1e6:,.0f} MB in "
             f"{case['files']:,} file(s); {case['rounds']} round(s).", "",
             "| tool | valid | wall s (median) | MB/s | CPU s/GB | peak RSS MB | peak PSS MB | procs "
             "| HTTP reqs | served/needed | 1st req s | 1st data s | wall+fsync s | wall vs aria2c | wall vs curl |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, s in case["summary"].items():
        lines.append(
            f"| {label} | {s['valid']}/{s['runs']} | {_f(s.get('wall_s'))} | "
            f"{_f(s.get('mb_per_s'), '.0f')} | {_f(s.get('cpu_s_per_gb'))} | "
            f"{_f(s.get('peak_rss_mb'), '.0f')} | {_f(s.get('peak_pss_mb'), '.0f')} | {s.get('processes', '–')} | "
            f"{_f(s.get('requests'), '.0f')} | {_f(s.get('served_ratio'), '.3f')} | {_f(s.get('first_request_s'))} | "
            f"{_f(s.get('first_data_done_s'))} | "
            f"{_f(s.get('wall_plus_fsync_s'))} | {_f(s.get('wall_vs_aria2c'), '.2f', 'x')} | "
            f"{_f(s.get('wall_vs_curl'), '.2f', 'x')} |")
    lines += ["", "Commands:", ""]
    lines += [f"- {label}: `{s['command']}`" for label, s in case["summary"].items()]
    return lines + _notes_and_problems(case)


def _notes_and_problems(case: dict) -> list[str]:
    """A case table's last lines: its notes, then every run that failed a check."""
    lines = [f"- Note: {n}" for n in case.get("notes", ())]
    for r in case["runs"]:
        if not r["ok"] or r["leftover"]:
            what = r.get("problem") or f"left processes behind: {r['leftover']}"
            lines.append(f"- **Problem** ({r['label']}, round {r['round'] + 1}): {what[:400]}")
    return lines + [""]


def _protocols(s: dict) -> str:
    return " + ".join(p.replace("HTTP/2.0", "h2") for p in s.get("protocols") or ()) or "–"


def _conns(s: dict) -> str:
    """TCP connections: all / those that answered a 206 (a file's ranges)."""
    if s.get("connections") is None:
        return "–"
    return f"{s['connections']:.0f} / {_f(s.get('range_connections'), '.0f')}"


def _x_rate(s: dict, pace: int | None) -> str:
    """Throughput in per-connection rates: about the connections a tool kept busy."""
    return _f(s["mb_per_s"] * 1e6 / pace, ".1f", "x") if (pace and s.get("mb_per_s")) else "–"


def _real_case_table(name: str, case: dict) -> list[str]:
    """A real-link case: connections and protocols from the access logs, ratios in one run."""
    pace = case.get("pace_bytes")
    lines = [f"### `{name}` — {case['title']}", "",
             f"Site: {case['mirror']}; {case['bytes'] / 1e6:,.0f} MB in {case['files']:,} file(s); "
             f"{case['rounds']} round(s).", "",
             "| tool | valid | wall s (median) | MB/s | x conn rate | CPU s/GB | TCP conns (all / 206) "
             "| protocol | HTTP reqs | served/needed | 1st data s | wall vs aria2c | wall vs curl "
             "| wall vs best other |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, s in case["summary"].items():
        lines.append(
            f"| {label} | {s['valid']}/{s['runs']} | {_f(s.get('wall_s'))} | "
            f"{_f(s.get('mb_per_s'), '.0f')} | {_x_rate(s, pace)} | {_f(s.get('cpu_s_per_gb'))} | "
            f"{_conns(s)} | {_protocols(s)} | {_f(s.get('requests'), '.0f')} | "
            f"{_f(s.get('served_ratio'), '.3f')} | {_f(s.get('first_data_done_s'))} | "
            f"{_f(s.get('wall_vs_aria2c'), '.2f', 'x')} | {_f(s.get('wall_vs_curl'), '.2f', 'x')} | "
            f"{_f(s.get('wall_vs_best_other'), '.2f', 'x')} |")
    lines += ["", "Commands:", ""]
    lines += [f"- {label}: `{s['command']}`" for label, s in case["summary"].items()]
    for label, s in case["summary"].items():
        v = s.get("hub_verified")
        if v:
            lines.append(f"- {label} verified {v['lfs_sha256']}/{v['lfs_files']} LFS files by the hub's "
                         f"sha256 and {_f(v['git_sha1'], '.0f')}/{v['git_files']} git files by their "
                         "blob sha1 (worst run).")
    return lines + _notes_and_problems(case)


def _versions(v: dict) -> str:
    """Short tool versions: "segdl 0.1.0 (abc123), aria2 1.36.0, curl 7.88.1, nginx/1.22.1"."""
    curl = " ".join(v.get("curl", "curl ?").split()[:2])
    aria = v.get("aria2c", "aria2 ?").replace(" version", "")
    nginx = v.get("nginx", "nginx ?").replace("nginx version: ", "")
    return f"{v.get('segdl', 'segdl ?')}, {aria}, {curl}, {nginx}"


def write_markdown(path: Path, doc: dict) -> None:
    m = doc["machine"]
    lines = ["# segdl benchmark results", "",
             f"{doc['date']} — {'QUICK run (small sizes, indicative only)' if doc['quick'] else 'full run'}"
             f", {doc['rounds']} round(s); {m['nproc']} CPUs, {m['mem_total_gb']:.1f} GB RAM, "
             f"Linux {m['kernel']}; {_versions(m['versions'])}. segdl got URL lists as "
             f"{doc.get('segdl_urls', 'arguments')}.", "",
             "Medians over valid runs. MB = 10^6 bytes. CPU = user+sys of the whole process "
             "tree (wait4). Peak RSS = peak of the VmRSS sum over the tool's processes, sampled "
             "every 50 ms (forked workers' shared pages count once per process; `peak_pss_mb` in "
             "results.json does not double count). *1st req* = launch to the first request "
             "nginx received; *1st data* = launch to the end of the first complete response "
             "larger than 1 KiB (for small10k: the first file delivered). *wall+fsync* = wall plus fsync of the outputs afterwards (segdl "
             "fdatasyncs while downloading, aria2c and curl do not).", "",
             "*x conn rate* (real-link cases) = MB/s over the per-connection rate: about how "
             "many connections' worth the tool got. *TCP conns* = distinct `$connection` in "
             "the access log(s): all / those that answered a 206 (a file's ranges). *wall vs "
             "best other* = wall over the fastest other tool's in the same run.", "",
             "## Targets", "", "| issue | target | value | status |", "|---|---|---|---|"]
    for t in doc["targets"]:
        if t["status"] == "n/a" and t.get("issue") == "17" and not doc["cases"].keys() & _REAL:
            continue  # a loopback-only run does not list issue 17's targets
        lines.append(f"| {t.get('issue', '8')} | {t['target']} | {_f(t['value'], '.2f', t['unit'])} "
                     f"| {t['status']} |")
    lines += ["", "## Cases", ""]
    for note in doc.get("skipped", []):
        lines.append(f"- Skipped: {note}")
    if doc.get("skipped"):
        lines.append("")
    for name, case in doc["cases"].items():
        table = _real_case_table if case.get("kind") == "real" else _case_table
        lines += table(name, case)
    lines += ["![median MB/s per case and tool](chart.png)", ""]
    path.write_text("\n".join(lines))


def write_chart(path: Path, doc: dict) -> None:
    """Grouped bars: median MB/s per case (x) and tool family (bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["cases"])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names) + 2), 4.5))
    width = 0.8 / len(TOOL_ORDER)
    for i, tool in enumerate(TOOL_ORDER):
        xs, ys = [], []
        for k, name in enumerate(names):
            vals = [s.get("mb_per_s") for s in doc["cases"][name]["summary"].values()
                    if s["tool"] == tool and s.get("mb_per_s")]
            if vals:
                xs.append(k + (i - (len(TOOL_ORDER) - 1) / 2) * width)
                ys.append(max(vals))
        if not xs:  # not in any case of this run: no legend entry
            continue
        bars = ax.bar(xs, ys, width, label=tool, color=f"C{i}")  # a tool keeps its colour
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("median MB/s (10^6 B/s)")
    title = "segdl vs aria2c vs curl (local nginx; tls-*: TLS, paced, hub)"
    ax.set_title(title + (" — quick run" if doc["quick"] else ""))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
