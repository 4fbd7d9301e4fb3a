"""Copy the tables of benchmarks/results/results.md into README.md, between
the <!-- bench:start --> and <!-- bench:end --> markers.

    python benchmarks/run.py && python benchmarks/update_readme.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("1g", "1g-20m-x16", "1g-20m-x64", "coll80", "small10k", "4g", "sleep50",
         "tls-h2-x16", "tls-h1-x16", "tls-h2-sleep50-x16", "tls-h1-sleep50-x16", "tls-h2-x64",
         "tls-h2-small400", "tls-hub", "tls-1g")
# loopback: tool, wall, MB/s, CPU/GB, peak RSS, HTTP reqs, wall+fsync, vs aria2c, vs curl
KEEP = (0, 2, 3, 4, 5, 7, 10, 11, 12)
# real links (tls-*): tool, wall, MB/s, x conn rate, CPU/GB, TCP conns, protocol, vs best other
KEEP_REAL = (0, 2, 3, 4, 5, 6, 7, 13)


def section(md: str) -> str:
    stamp = md.splitlines()[2].split("—")[0].strip()
    targets = md[md.index("## Targets"):md.index("## Cases")].replace("## Targets", "#### Targets").strip()
    out = [f"One full run on this machine ({stamp}; 2 cores, shared and noisy: read ratios, "
           "not absolute times), 3 rounds, medians. Reproduce with `python benchmarks/run.py` "
           "(about 45 minutes once its test data exists: every case, the real links too) and `python benchmarks/update_readme.py`; "
           "`benchmarks/results/results.md` has every command line, `results.json` every run.",
           "", targets, "", "#### Cases", ""]
    for case in CASES:
        if f"### `{case}`" not in md:
            continue
        i = md.index(f"### `{case}`")
        out += [f"**{md[i:md.index(chr(10), i)].removeprefix('### ')}**", ""]
        j = md.index("| tool", i)
        keep = KEEP_REAL if case.startswith("tls-") else KEEP
        for line in md[j:md.index("\n\n", j)].splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out.append("| " + " | ".join(cells[k] for k in keep if k < len(cells)) + " |")
        out.append("")
    out.append("![median MB/s per case](benchmarks/results/chart.png)")
    return "\n".join(out)


def main() -> int:
    md = (ROOT / "benchmarks" / "results" / "results.md").read_text()
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        print("README.md has no bench markers", file=sys.stderr)
        return 1
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(head + start + "\n" + section(md) + "\n" + end + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
