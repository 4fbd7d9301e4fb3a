"""``segdl get REF`` and ``segdl ls`` for hub references: options become
:class:`~segdl.engine.inputs.hubs.listing.HubOptions`, a listing becomes a job, its
problems are reported like failed files.  Imported only when a hub
reference is given (``segdl get URL`` does not load it)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from segdl.engine.values.errors import EXIT_OK, SegdlError

from .console import cell, make_console, say, shown


@dataclass(frozen=True)
class HubArgs:
    """The hub options of ``get`` and ``ls``, as given."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hf_cache: Optional[str] = None  # None: not asked; "": the default cache
    all_versions: bool = False
    all_files: bool = False
    types: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    layout: Optional[str] = None
    token_env: Optional[str] = None
    collection: Optional[str] = None

    def options(self, dest: Path, transfer):
        from segdl.engine.inputs.hubs.listing import HubOptions
        from segdl.engine.inputs.hubs.hf import cache_dir

        cache = None
        if self.hf_cache is not None:
            cache = Path(self.hf_cache).expanduser() if self.hf_cache else cache_dir()
            cache = Path(cache).absolute()
        return HubOptions(dest=dest, include=self.include, exclude=self.exclude, hf_cache=cache,
                          all_versions=self.all_versions, all_files=self.all_files, types=self.types,
                          formats=self.formats, layout=self.layout, token_env=self.token_env,
                          collection=self.collection, transfer=transfer)


def report_problems(listing, as_json: bool, ls: bool = False) -> int:
    """Each problem (an archived model, a model of a collection that
    failed) on stderr, and with ``--json`` as a line of its own (``get``:
    a failed file's; ``ls``: state ``unavailable``); returns the largest
    exit code among them."""
    code = EXIT_OK
    for p in listing.problems:
        code = max(code, p.error.exit_code)
        if as_json:
            line = {"url": p.what, "path": None, "size": None, "error": p.error.message,
                    "exit_code": p.error.exit_code}
            if ls:
                line.update(state="unavailable", hash=None, done=0, where=None)
            else:
                line.update(status=p.error.status, blake3=None, sha256=None, seconds=0.0, downloaded=0)
            sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
            sys.stdout.flush()
        else:
            say(p.error.message, "red")
    return code


def _journal(path: Optional[Path]):
    """The journal if there is one yet (opened to write: a journal of an
    older schema is brought up to date, as any command that writes does)."""
    from segdl.engine.journal.writer import Journal, default_path

    p = Path(path) if path is not None else default_path()
    if not p.exists():
        return None
    return Journal(p)


def get_refs(refs: list[str], args: HubArgs, settings, journal_path, run: Callable, as_json: bool,
             quiet: bool) -> int:
    """List and download each reference as its own job; the exit code is
    the largest of its files' and its problems'."""
    from dataclasses import replace

    from segdl.engine.inputs.hubs.presence import moved_note, presence

    message = (lambda m: None) if quiet else say
    code = EXIT_OK
    for ref in refs:
        listing, listed = _list(ref, args, settings, as_json, message)
        code = max(code, listed)
        if listing is None:
            continue
        try:
            j = _journal(journal_path)
            if j is not None:
                try:
                    note = moved_note(j, listing, presence(j, Path(listing.dest).absolute(), listing.requests))
                finally:
                    j.close()
                if note:
                    message(note)
        except SegdlError as e:
            say(e.message, "red")
            return max(code, e.exit_code)
        if not listing.requests:
            if not listing.problems:
                message(f"{ref}: nothing to download")
            continue
        code = max(code, run(list(listing.requests), replace(settings, dest=listing.dest),
                             collection=args.collection or listing.collection, source=listing.source))
        code = max(code, finish(listing.dest, listing.source, message))
    return code


def finish(dest: Path, source: dict | None, message: Callable[[str], None]) -> int:
    """After a job from a hub: the HF cache's snapshot links and ref."""
    if not source or not source.get("hf_cache"):
        return EXIT_OK
    from segdl.engine.inputs.hubs.hfcache import link_snapshot

    try:
        n = link_snapshot(Path(dest), source)
    except SegdlError as e:
        say(e.message, "red")
        return e.exit_code
    if n:
        message(f"{source['ref']}: {n} file(s) in the HF cache at {dest} (snapshot {source['commit'][:12]})")
    return EXIT_OK


def ls(ref: Optional[str], input_file: Optional[Path], args: HubArgs, dest: Path, transfer,
       journal_path, as_json: bool) -> int:
    from segdl.engine.inputs.hubs.listing import Listing, resolve
    from segdl.engine.inputs.hubs.presence import presence

    code = EXIT_OK
    if input_file is not None:
        from segdl.engine.inputs.manifest import load_input

        m = load_input(input_file)
        listing = Listing(str(input_file), "", dest, m.collection, m.requests)
    else:
        listing = resolve(ref, args.options(dest, transfer), say)
        code = report_problems(listing, as_json, ls=True)
    unnamed = [r.url for r in listing.requests if r.path is None]
    if unnamed:
        say(f"{len(unnamed)} file(s) have no path (named by the server when downloaded); listed as missing")
    j = _journal(journal_path)
    try:
        named = [r for r in listing.requests if r.path is not None]
        states = presence(j, Path(listing.dest).absolute(), named)
    finally:
        if j is not None:
            j.close()
    if as_json:
        from segdl.engine.inputs.naming import hide_userinfo

        for p in states:
            print(json.dumps({**p.as_dict(), "url": hide_userinfo(p.url)}, sort_keys=True))
        return code
    from rich.table import Table

    counts: dict[str, int] = {}
    for p in states:
        counts[p.state] = counts.get(p.state, 0) + 1
    title = f"{listing.ref}: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no files")
    if len(states) > TABLE_ROWS:
        _plain_listing(title, states)
        return code
    t = Table(title=cell(title), title_justify="left")
    for c in ("state", "path", "size", "done", "hash"):
        t.add_column(c, overflow="fold")
    colours = {"here": "green", "partial": "yellow", "missing": "red"}
    for p in states:
        t.add_row(cell(p.state, colours[p.state]), cell(p.path + (f" (= {p.where})" if p.where else "")),
                  "?" if p.size is None else f"{p.size:,}", f"{p.done:,}", cell((p.hash or "")[:24]))
    make_console().print(t)
    return code


# Beyond this many files, ls prints plain lines: rich lays out a table of
# 100,000 rows in a minute, plain lines in a second.
TABLE_ROWS = 1000


def _plain_listing(title: str, states) -> None:
    """One line per file (state, size, done, hash, path), the columns
    aligned, as the table has them."""
    from rich.text import Text

    console = make_console()
    console.print(Text(shown(title), style="bold"), soft_wrap=True)
    colours = {"here": "green", "partial": "yellow", "missing": "red"}
    for i in range(0, len(states), 500):  # rich lays out a long Text slowly: a chunk at a time
        out = Text()
        for p in states[i:i + 500]:
            size = "?" if p.size is None else f"{p.size:,}"
            out.append(f"{p.state:8s}", style=colours[p.state])
            out.append(f"  {size:>15}  {p.done:>15,}  {shown((p.hash or '')[:24]):24s}  ")
            out.append(shown(p.path + (f" (= {p.where})" if p.where else "")) + "\n")
        console.print(out, end="", soft_wrap=True)


def resolve_refs(refs: list[str], args: HubArgs, settings, as_json: bool, quiet: bool) -> tuple[list, int]:
    """``get --ray``: list each reference into requests (paths relative to
    ``-d``), to be spread over the cluster like a manifest's; the exit code
    of the listings' problems.  ``--hf-cache`` needs one machine's cache
    and is refused here."""
    from segdl.engine.values.errors import UsageError

    if args.hf_cache is not None:
        raise UsageError("--hf-cache lays files into one machine's cache; it does not go with --ray")
    message = (lambda m: None) if quiet else say
    out, code = [], EXIT_OK
    for ref in refs:
        listing, listed = _list(ref, args, settings, as_json, message)
        code = max(code, listed)
        if listing is not None:
            out.extend(listing.requests)
    return out, code


def _list(ref: str, args: HubArgs, settings, as_json: bool, message):
    """One reference listed, its notes said and its problems reported:
    (the listing, or None when the hub refused it; the exit code so far)."""
    from segdl.engine.inputs.hubs import resolve

    try:
        listing = resolve(ref, args.options(settings.dest, settings.transfer), message)
    except SegdlError as e:
        say(e.message, "red")
        return None, e.exit_code
    for note in listing.notes:
        message(note)
    return listing, report_problems(listing, as_json)
