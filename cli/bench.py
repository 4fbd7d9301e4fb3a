"""``segdl bench``: measure mirrors of one file and recommend ``-x`` and the
mirrors to use.  Measuring is :mod:`segdl.engine.doors.mirrorbench`'s job; this
module parses options, runs it (against an embedded local mirror with
``--local``) and renders a table, JSON or a plot."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import List, Optional

import typer
from segdl.engine.values.errors import EXIT_DOWNLOAD_FAILED, EXIT_INTERRUPTED, EXIT_USAGE

from .console import cell, err, line, make_console, say, shown


def _size(text: str, name: str) -> int:
    from segdl.engine.rules.bandwidth import parse_rate

    try:
        return parse_rate(text)
    except ValueError:
        say(f"{name}: not a size: {text!r} (use e.g. 64M, 1G, 0)", "red")
        raise typer.Exit(EXIT_USAGE)


def _counts(text: str) -> list[int]:
    try:
        counts = sorted({int(p) for p in text.replace(" ", "").split(",") if p})
    except ValueError:
        counts = []
    if not counts or any(n < 1 or n > 1024 for n in counts):
        say(f"--connections: expected counts 1..1024 like 1,4,16,64, got {text!r}", "red")
        raise typer.Exit(EXIT_USAGE)
    return counts


def _mb(n: int) -> str:
    return f"{n / 1_000_000:,.1f} MB" if n >= 1_000_000 else f"{n:,} B"


def bench(
    urls: List[str] = typer.Argument(None, help="URLs of the same file on different mirrors."),
    local: bool = typer.Option(False, "--local", help="Benchmark an embedded local mirror (127.0.0.1) serving generated data; no URL needed."),
    local_size: str = typer.Option("256M", "--local-size", help="Size of the generated file for --local (1024-based: 64M, 1G)."),
    local_server: str = typer.Option("auto", "--local-server", help="auto (nginx if installed, else a built-in Python server), nginx or python."),
    sample: str = typer.Option("256M", "-b", "--bytes", help="Bytes fetched per measurement (1024-based); 0: the whole file."),
    whole: bool = typer.Option(False, "--all", help="Fetch the whole file in every measurement (same as --bytes 0)."),
    connections: str = typer.Option("1,4,16,64", "-c", "--connections", help="Connection counts to sweep, comma-separated."),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=1, max=20, help="Repeat each measurement and keep the median (default 1; 3 with --local)."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Seconds per measurement; a slower one stops there and is rated on what arrived."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout, nothing else."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a chart of MB/s per connection count (PNG; needs matplotlib)."),
    header: List[str] = typer.Option([], "-H", "--header", help="Extra request header, 'Name: value' (repeatable)."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify TLS certificates."),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="CA bundle for TLS verification."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress on stderr."),
) -> None:
    """Measure the mirrors of one file.

    Time to first byte, Range support and MB/s for each connection count,
    then the -x and the mirrors to use.  Data is counted and dropped;
    nothing is stored.

    \b
    Examples:
      segdl bench https://a.example/f.bin https://b.example/f.bin
      segdl bench --local
    """
    urls = list(dict.fromkeys(urls or []))
    if not urls and not local:
        say("nothing to benchmark: give URLs or --local", "red")
        raise typer.Exit(EXIT_USAGE)
    for h in header:
        if ":" not in h:
            say(f"header {h!r} is not 'Name: value'", "red")
            raise typer.Exit(EXIT_USAGE)
    if local_server not in ("auto", "nginx", "python"):
        say("--local-server: auto, nginx or python", "red")
        raise typer.Exit(EXIT_USAGE)
    nbytes = 0 if whole else _size(sample, "--bytes")
    counts = _counts(connections)
    lsize = _size(local_size, "--local-size") if local else 0
    if local and lsize <= 0:
        say("--local-size must be more than 0", "red")
        raise typer.Exit(EXIT_USAGE)
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            say("--plot needs matplotlib: pip install 'segdl[bench]' (or pip install matplotlib)", "red")
            raise typer.Exit(EXIT_USAGE)
    from segdl.engine.values.messages import TransferOptions

    options = TransferOptions(headers=tuple(header), insecure=insecure,
                              ca_cert=str(ca_cert) if ca_cert else None)
    if rounds is None:
        rounds = 3 if local else 1
    raise typer.Exit(_guarded(urls, local, lsize, local_server, nbytes, counts, rounds, timeout,
                              options, as_json, plot, quiet))


def _guarded(*args) -> int:
    """Run with SIGTERM turned into KeyboardInterrupt, so a local mirror is
    cleaned up either way."""
    old = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):
            raise KeyboardInterrupt
        old = signal.signal(signal.SIGTERM, on_term)
    try:
        return _run(*args)
    except KeyboardInterrupt:
        say("bench interrupted")
        return EXIT_INTERRUPTED
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _run(urls, local, lsize, local_server, nbytes, counts, rounds, timeout, options, as_json, plot, quiet) -> int:
    from segdl.engine.doors import mirrorbench

    mirror = None
    try:
        if local:
            from .localmirror import LocalMirror, LocalMirrorError

            if not quiet and not as_json:
                say(f"generating {_mb(lsize)} of test data and starting a local mirror…", None)
            try:
                mirror = LocalMirror(lsize, local_server).start()
            except (LocalMirrorError, OSError) as e:
                say(f"cannot start the local mirror: {e}", "red")
                return EXIT_DOWNLOAD_FAILED
            if not quiet and not as_json:
                say(f"local mirror ({mirror.kind}) at {mirror.url}", None)
            urls = [mirror.url, *urls]
        report = _measure(mirrorbench, urls, counts, nbytes, rounds, timeout, options, quiet)
    finally:
        if mirror is not None:
            mirror.stop()
    if as_json:
        d = report.to_dict()
        if mirror is not None:
            d["local"] = {"server": mirror.kind, "size": lsize}
        sys.stdout.write(json.dumps(d) + "\n")
    else:
        _render(report)
    if plot is not None:
        try:
            _plot(report, plot)
        except Exception as e:  # noqa: BLE001 - a chart must not hide the results
            say(f"cannot write {plot}: {e}", "red")
            return EXIT_USAGE
        if not as_json:
            say(f"chart written to {plot}", None)
    return 0 if report.recommendation.connections is not None else EXIT_DOWNLOAD_FAILED


def _measure(mirrorbench, urls, counts, nbytes, rounds, timeout, options, quiet):
    if quiet or not err.is_terminal:
        return mirrorbench.bench(urls, connections=counts, sample=nbytes, timeout=timeout,
                                 options=options, rounds=rounds)
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=make_console(stderr=True), transient=True) as progress:
        tasks: dict = {}

        def on_progress(url, n, done, total):
            key = (url, n)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{shown(_short(url))} ×{n}", total=total or None)
            progress.update(tasks[key], completed=done)

        def on_mirror(rep):
            for t in tasks.values():
                progress.remove_task(t)
            tasks.clear()
            if rep.error:
                say(f"{rep.url}: {rep.error}")

        return mirrorbench.bench(urls, connections=counts, sample=nbytes, timeout=timeout,
                                 options=options, rounds=rounds, on_progress=on_progress,
                                 on_mirror=on_mirror)


def _short(url: str, width: int = 48) -> str:
    base = url.partition("?")[0]
    return base if len(base) <= width else "…" + base[-(width - 1):]


def _render(report) -> None:
    from rich.table import Table

    console = make_console()
    if not console.is_terminal:
        console = make_console(width=160)  # a pipe or file: no reason to fold at 80 columns
    t = Table(title="segdl bench: MB/s (10^6 bytes/s) per connection count", title_justify="left")
    t.add_column("mirror", overflow="fold")
    t.add_column("TTFB ms", justify="right")
    t.add_column("ranges")
    for n in report.connections:
        t.add_column(f"×{n}", justify="right")
    notes: list[str] = []
    for m in report.mirrors:
        ttfb = f"{m.ttfb_ms:.1f}" if m.ttfb_ms is not None else "-"
        ranges = "-" if m.ranges is None else ("yes" if m.ranges else cell("no", "yellow"))
        cells = []
        by_n = {r.connections: r for r in m.results}
        best = m.best_mbps
        for n in report.connections:
            r = by_n.get(n)
            if r is None:
                cells.append("-")
            elif r.mbps is None:
                notes.append(f"{_short(m.url)} ×{n}: {r.error}")
                cells.append(cell(f"failed[{len(notes)}]", "red"))
            else:
                text = f"{r.mbps:,.1f}" + ("*" if not r.complete else "")
                cells.append(cell(text, "bold") if best and r.mbps == best else text)
        if m.error:
            notes.append(f"{_short(m.url)}: {m.error}")
            ttfb = cell(f"failed[{len(notes)}]", "red")
        t.add_row(cell(_short(m.url, 60)), ttfb, ranges, *cells)
    console.print(t)
    for i, note in enumerate(notes, 1):
        console.print(f"  [{i}] {shown(note)}")
    if any(not r.complete for m in report.mirrors for r in m.results if r.mbps is not None):
        console.print("  * stopped by --timeout; rate over the bytes that arrived")
    rec = report.recommendation
    if rec.connections is None:
        console.print(line(("No recommendation:", "red"), " no mirror could be measured."))
        return
    mirrors = ", ".join(rec.mirrors)
    console.print(line(("Recommendation:", "bold"), f" -x {rec.connections}; use "
                       f"{'this mirror' if len(rec.mirrors) == 1 else f'these {len(rec.mirrors)} mirrors'}: {mirrors}"))


def _plot(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for m in report.mirrors:
            pts = [(r.connections, r.mbps) for r in m.results if r.mbps is not None]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=_short(m.url, 40))
        ax.set_xscale("log", base=2)
        ax.set_xticks(report.connections)
        ax.set_xticklabels([str(n) for n in report.connections])
        ax.set_xlabel("connections")
        ax.set_ylabel("MB/s")
        ax.set_ylim(bottom=0)
        rec = report.recommendation
        if rec.connections is not None:
            ax.axvline(rec.connections, color="grey", linestyle="--", linewidth=1,
                       label=f"recommended -x {rec.connections}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        ax.set_title("segdl bench")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
