"""``segdl status``: a line per collection, or the files, from the journal.

What a file shows as, and the figures (bytes, speed, ETA), come from
:mod:`segdl.engine.doors.status`; this renders them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from segdl.engine.values.errors import EXIT_USAGE, SegdlError

from .console import line, make_console, say, shown
from .options import JournalOpt, RayJournalsOpt, RayOpt, fail

# A journal this small lists its files under the summary, as before.
SMALL = 20
# The human listing stops here unless --limit says otherwise (--json: all).
LISTED = 1000


def status(
    collection: Optional[str] = typer.Argument(None, help="Only this collection."),
    journal: Optional[Path] = JournalOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout, streamed."),
    files: bool = typer.Option(False, "--files", help="List the files, not one line per collection."),
    state: List[str] = typer.Option([], "--state", help="With --files or --json: only files in this state (repeatable; e.g. failed, downloading, interrupted)."),
    glob: Optional[str] = typer.Option(None, "--glob", help="With --files or --json: only files whose path matches (case-sensitive; * crosses folders)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=0, help=f"List at most this many files (default: {LISTED} with --files, all with --json)."),
    ray: Optional[str] = RayOpt,
    ray_journals: Optional[str] = RayJournalsOpt,
) -> None:
    """Show the jobs the journal knows, or their files.

    One line per collection (or job without one): files by state, bytes,
    speed and ETA; a small journal lists its files below. --files lists
    the files, filtered by --state and --glob, and --json streams them. It
    only reads the journal, so it works while a job runs. With --ray,
    every node's journal, one row per file and its node.

    \b
    Examples:
      segdl status
      segdl status loras --files --state failed
      segdl status --json --glob '*.safetensors'
    """
    if ray is not None:
        from . import raydrive

        raise typer.Exit(raydrive.status(address=ray, journals=ray_journals, collection=collection, as_json=as_json))
    from segdl.engine.doors import status as view
    from segdl.engine.doors.status import SHOWN_STATES

    unknown = [s for s in state if s not in SHOWN_STATES]
    if unknown:
        say(f"--state {unknown[0]!r}: not a state; one of {', '.join(SHOWN_STATES)}", "red")
        raise typer.Exit(EXIT_USAGE)
    try:
        if as_json:
            for f in view.files(journal, collection, tuple(state), glob, limit):
                sys.stdout.write(json.dumps(f.as_json(), sort_keys=True) + "\n")
            return
        if files or state or glob:
            _listing(list(view.files(journal, collection, tuple(state), glob,
                                     (LISTED if limit is None else limit) + 1)),
                     LISTED if limit is None else limit)
            return
        lines = view.summary(journal, collection)
        _remote_note(journal)
        _summary(lines)
        total = sum(g.files for g in lines)
        if 0 < total <= SMALL:
            _listing(list(view.files(journal, collection)), SMALL)
        elif total:
            say(f"{total:,} files: segdl status --files lists them (--state, --glob, --limit)", None)
    except SegdlError as e:
        raise fail(e)


def _remote_note(journal: Optional[Path]) -> None:
    from .serve import find_service

    remote = find_service(journal)
    if remote is not None:  # it keeps this journal live, three times a second
        say(f"segdl serve runs these jobs at {remote.url or remote.socket_path}", None)


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


def _summary(lines) -> None:
    console = make_console()
    for g in lines:
        figures = [f"{_mib(g.bytes_done)} of {_mib(g.size)}" + (f" (+{g.unknown_size} of unknown size)"
                                                                 if g.unknown_size else "")]
        if g.speed:
            figures.append(f"{_mib(g.speed)}/s")
        if g.eta:
            figures.append(f"ETA {g.eta:.0f} s")
        counts = ", ".join(f"{n} {k}" for k, n in g.counts)
        console.print(line((f"{g.name}: ", "bold"), (counts, ""), "; " + "; ".join(figures)), soft_wrap=True)


def _listing(rows, limit: int) -> None:
    """The files, one line each, at most ``limit``; one more row in
    ``rows`` says there are more.  Plain lines, not a table: a thousand
    of them print at once, and grep and cut read them."""
    from rich.text import Text

    more = len(rows) > limit
    rows = rows[:limit]
    out = Text()
    out.append(f"{'id':>8}  {'state':13s}  {'done':>15}  {'size':>15}  {'speed':>12}  {'eta':>6}  path  detail\n",
               style="bold")
    for o in rows:
        detail = o.error or ""
        if o.mirrors:
            detail = "; ".join(f"{m['url']}: {m['speed'] / 1048576:.1f} MiB/s" + (" (dropped)" if m["dropped"] else "")
                               for m in o.mirrors)
        speed = f"{o.speed / 1048576:.1f} MiB/s" if o.speed else ""
        eta = f"{o.eta:.0f} s" if o.eta and o.state == "downloading" else ""
        size = "?" if o.size is None else f"{o.size:,}"
        out.append(f"{o.id:>8}  {o.state:13s}  {o.bytes_done or 0:>15,}  {size:>15}  {speed:>12}  {eta:>6}  ")
        out.append(shown(o.path))
        out.append(f"  {shown(detail)}\n" if detail else "\n")
    make_console().print(out, end="", soft_wrap=True)
    if more:
        say(f"more files than the {limit:,} listed: --limit N lists more, --json all", None)
