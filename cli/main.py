"""``segdl``: each command parses options, calls one engine function and
renders what comes back.  Engine errors become a one-line message and the
documented exit code."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from segdl.engine import api
from segdl.engine.errors import EXIT_INTERRUPTED, EXIT_USAGE, SegdlError
from segdl.engine.journal import Journal
from segdl.engine.messages import TransferOptions
from segdl.engine.request import Request, Settings
from segdl.engine.results import Results

app = typer.Typer(
    help="Segmented, crash-safe bulk downloads: libcurl workers, a SQLite journal, blake3 verification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

JournalOpt = typer.Option(None, "--journal", envvar="SEGDL_JOURNAL", help="Journal file (default: $XDG_STATE_HOME/segdl/journal.sqlite).")


def _fail(e: SegdlError) -> "typer.Exit":
    err.print(f"[red]segdl:[/] {e.message}", highlight=False)
    return typer.Exit(e.exit_code)


def _run(requests: list[Request], settings: Settings, *, as_json: bool, quiet: bool, collection: str | None = None) -> int:
    """Run a job with a live view (or JSON lines) and return the exit code."""
    from .render import LiveView, print_json_lines, summary_table

    console = Console(stderr=True)
    interactive = console.is_terminal and not as_json and not quiet

    def message(m: str) -> None:
        if not quiet:
            err.print(f"[yellow]segdl:[/] {m}", highlight=False)

    try:
        if interactive:
            with LiveView(console) as view:
                results = api.download(requests, settings, collection=collection,
                                       on_progress=view.update, on_message=message)
        else:
            results = api.download(requests, settings, collection=collection, on_message=message)
    except KeyboardInterrupt:
        err.print("[yellow]segdl:[/] interrupted; run the same command again to continue")
        return EXIT_INTERRUPTED
    except SegdlError as e:
        raise _fail(e)
    if as_json:
        print_json_lines(results)
    elif not quiet:
        Console().print(summary_table(results))
    return results.exit_code


@app.command()
def get(
    urls: List[str] = typer.Argument(..., help="URLs to download."),
    dest: Path = typer.Option(Path("."), "-d", "--dir", help="Target folder."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="File name (one URL only), relative to --dir."),
    connections: int = typer.Option(16, "-x", "--connections", min=1, max=1024, help="Connections per file."),
    max_connections: int = typer.Option(64, "--max-connections", min=1, max=4096, help="Connections for the whole job."),
    concurrent: int = typer.Option(5, "-j", "--concurrent", min=1, help="Files downloading at once."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Worker processes."),
    blake3: Optional[str] = typer.Option(None, "--blake3", help="Expected blake3 (hex) of the file (one URL only)."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected sha256 (hex) of the file (one URL only)."),
    header: List[str] = typer.Option([], "-H", "--header", help="Extra request header, 'Name: value' (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing different file."),
    stall_timeout: float = typer.Option(20.0, "--stall-timeout", min=1, help="Seconds without data before a connection is cut and retried."),
    retries: int = typer.Option(8, "--retries", min=0, help="Retries per segment for transient failures."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify TLS certificates."),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="CA bundle for TLS verification."),
    journal: Optional[Path] = JournalOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file on stdout, nothing else."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress or summary."),
) -> None:
    """Download URLs: segmented, resumable, verified."""
    if len(urls) > 1 and (out or blake3 or sha256):
        err.print("[red]segdl:[/] -o, --blake3 and --sha256 apply to a single URL")
        raise typer.Exit(EXIT_USAGE)
    for h in header:
        if ":" not in h:
            err.print(f"[red]segdl:[/] header {h!r} is not 'Name: value'")
            raise typer.Exit(EXIT_USAGE)
    requests = [Request(u, out, blake3, sha256) for u in urls]
    from segdl.engine.retry import RetryPolicy

    settings = Settings(
        dest=dest, connections=connections, max_connections=max_connections,
        workers=workers, concurrent_files=concurrent, force=force, journal=journal,
        retry=RetryPolicy(max_attempts=retries),
        transfer=TransferOptions(headers=tuple(header), stall_timeout=stall_timeout,
                                 insecure=insecure, ca_cert=str(ca_cert) if ca_cert else None),
    )
    raise typer.Exit(_run(requests, settings, as_json=as_json, quiet=quiet))


@app.command()
def resume(
    journal: Optional[Path] = JournalOpt,
    workers: int = typer.Option(2, "--workers", min=1, max=64),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Continue every unfinished job in the journal."""
    try:
        jobs = api.unfinished(journal)
    except SegdlError as e:
        raise _fail(e)
    if not jobs:
        if not quiet and not as_json:
            err.print("segdl: nothing to resume")
        raise typer.Exit(0)
    code = 0
    for dest, reqs, spec in jobs:
        settings = Settings(
            dest=dest, journal=journal, workers=workers,
            connections=spec.get("connections", 16), max_connections=spec.get("max_connections", 64),
            concurrent_files=spec.get("concurrent_files", 5),
        )
        code = max(code, _run(reqs, settings, as_json=as_json, quiet=quiet))
    raise typer.Exit(code)


@app.command()
def status(
    journal: Optional[Path] = JournalOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
) -> None:
    """Show every file the journal knows: state, bytes, hash."""
    try:
        j = Journal(journal, readonly=True)
        rows = j.status_rows()
        j.close()
    except SegdlError as e:
        raise _fail(e)
    if as_json:
        for r in rows:
            print(json.dumps({
                "id": r["id"], "collection": r["collection"], "path": r["path"], "url": r["url"],
                "state": r["state"], "size": r["size"], "bytes_done": r["bytes_done"] if r["state"] not in ("done", "skipped") else r["size"],
                "blake3": r["blake3"], "error": r["error"], "speed": 0,
            }, sort_keys=True))
        return
    from rich.table import Table

    t = Table()
    for c in ("id", "state", "path", "done", "size", "detail"):
        t.add_column(c, overflow="fold")
    for r in rows:
        done = r["size"] if r["state"] in ("done", "skipped") else r["bytes_done"]
        t.add_row(str(r["id"]), r["state"], r["path"], f"{done or 0:,}",
                  "?" if r["size"] is None else f"{r['size']:,}", r["error"] or "")
    Console().print(t)


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
