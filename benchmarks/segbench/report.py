"""Medians, ratios, targets, and the three outputs: results.json, results.md, chart.png.

Units: MB = 10^6 bytes, GB = 10^9 bytes.  Only runs that passed every check
(exit 0, sizes, blake3 where hashed) enter a median.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

TOOL_ORDER = ("segdl", "aria2c", "curl", "curl-sync")


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
            )
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


def targets(summaries: dict[str, dict], facts: dict[str, dict] | None = None) -> list[dict]:
    """Each issue-8 target with its value and status: met, not met, n/a (case not
    run) or failed (no valid segdl or baseline run)."""
    out = []
    for case, name, limit, unit, value_of, *at_least in TARGETS:
        value = value_of(summaries, facts or {}) if case in summaries else None
        if case not in summaries:
            status = "n/a"
        elif value is None:
            status = "failed (no valid run)"
        else:
            ok = value >= limit if at_least else value <= limit
            status = "met" if ok else "not met"
        out.append({"target": name, "value": value, "limit": limit, "unit": unit,
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
    lines += [f"- Note: {n}" for n in case.get("notes", ())]
    bad = [r for r in case["runs"] if not r["ok"] or r["leftover"]]
    for r in bad:
        what = r.get("problem") or f"left processes behind: {r['leftover']}"
        lines.append(f"- **Problem** ({r['label']}, round {r['round'] + 1}): {what[:400]}")
    return lines + [""]


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
             "## Targets", "", "| target | value | status |", "|---|---|---|"]
    for t in doc["targets"]:
        lines.append(f"| {t['target']} | {_f(t['value'], '.2f', t['unit'])} | {t['status']} |")
    lines += ["", "## Cases", ""]
    for note in doc.get("skipped", []):
        lines.append(f"- Skipped: {note}")
    if doc.get("skipped"):
        lines.append("")
    for name, case in doc["cases"].items():
        lines += _case_table(name, case)
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
        bars = ax.bar(xs, ys, width, label=tool)
        ax.bar_label(bars, fmt="%.0f", fontsize=7, padding=1)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("median MB/s (10^6 B/s)")
    title = "segdl vs aria2c vs curl (local nginx)"
    ax.set_title(title + (" — quick run" if doc["quick"] else ""))
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
