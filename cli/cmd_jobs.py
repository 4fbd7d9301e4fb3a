"""The commands that act on jobs the journal knows: pause and resume a
file or collection, run unfinished or failed jobs again, change limits."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segdl.engine.values.errors import EXIT_USAGE, SegdlError

from .cmd_get import run_job
from .console import say
from .options import HeaderOpt, JournalOpt, check_headers, fail, rate_option


def _set_paused(target: str, journal: Optional[Path], paused: bool) -> int:
    from segdl.engine.doors import steer

    try:
        files = steer.targets(journal, target)
        if not files:
            say(f"no file or collection matches {target!r}", "red")
            return EXIT_USAGE
        ids = [f.id for f in files]
        from .serve import find_service

        remote = find_service(journal)
        via = ""
        if remote is not None:  # a running segdl serve acts at once
            later = []
            for fid in ids:
                status, _ = remote.call("PATCH", f"/files/{fid}", {"paused": paused})
                if status != 200:
                    later.append(fid)  # not running there: the journal keeps the flag for later
            ids, via = later, " (segdl serve)"
        steer.set_paused(journal, ids, paused)
    except SegdlError as e:
        raise fail(e)
    word = "paused" if paused else "resumed"
    for f in files:
        say(f"{word} {f.path}{via}", None)
    return 0


def pause(
    target: str = typer.Argument(..., help="A file's id, path or URL, or a collection name."),
    journal: Optional[Path] = JournalOpt,
) -> None:
    """Pause a file or a collection of a running job.

    Its connections go to the other files; its segments and partial data
    are kept, and "segdl resume TARGET" picks up where it stopped.

    \b
    Example:
      segdl pause loras/a.safetensors
    """
    raise typer.Exit(_set_paused(target, journal, True))


def resume(
    target: Optional[str] = typer.Argument(None, help="Resume this paused file or collection; without it, continue every unfinished job."),
    journal: Optional[Path] = JournalOpt,
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=64, help="Worker processes (default: as the job was started)."),
    header: List[str] = HeaderOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Resume a paused file, or every unfinished job.

    With TARGET, a paused file or collection of a running job continues.
    Without it, every job the journal has as unfinished (after Ctrl-C, a
    crash or a reboot) runs again with the settings it was started with.

    \b
    Examples:
      segdl resume loras
      segdl resume
    """
    if target is not None:
        raise typer.Exit(_set_paused(target, journal, False))
    from segdl.engine.doors import api

    try:
        jobs = api.unfinished(journal)
    except SegdlError as e:
        raise fail(e)
    raise typer.Exit(_rerun(jobs, journal, workers, header, as_json, quiet, "nothing to resume"))


def _rerun(jobs, journal, workers: Optional[int], headers: List[str], as_json: bool, quiet: bool,
           nothing: str) -> int:
    """Run again (dest, requests, spec, collection) groups read from the journal,
    with the settings each job was started with (``workers`` and ``headers``
    given on this command line added)."""
    from segdl.engine.values.request import missing_headers, settings_from_spec

    check_headers(headers)
    if not jobs:
        if not quiet and not as_json:
            say(nothing, None)
        return 0
    code = 0
    for dest, reqs, spec, coll in jobs:
        given = {"workers": workers} if workers else {}
        settings = settings_from_spec(spec, headers=tuple(headers), dest=dest, journal=journal, **given)
        missing = missing_headers(spec, tuple(headers))
        if missing and not as_json:
            say(f"this job was started with header(s) {', '.join(missing)}, whose values "
                "the journal does not keep (see --keep-headers); pass them again with -H")
        source = spec.get("source")
        code = max(code, run_job(reqs, settings, as_json=as_json, quiet=quiet, collection=coll))
        if source and source.get("hf_cache"):
            from .hubs import finish

            code = max(code, finish(dest, source, (lambda m: None) if quiet else say))
    return code



def retry(
    collection: Optional[str] = typer.Argument(None, help="Only this collection."),
    journal: Optional[Path] = JournalOpt,
    workers: Optional[int] = typer.Option(None, "--workers", min=1, max=64, help="Worker processes (default: as the job was started)."),
    header: List[str] = HeaderOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
) -> None:
    """Download again only the files that failed.

    The failures are read from the journal, so this works after a reboot
    too; each runs with the settings its job was started with.

    \b
    Example:
      segdl retry loras
    """
    from segdl.engine.doors import api

    try:
        jobs = api.failed(journal, collection)
    except SegdlError as e:
        raise fail(e)
    raise typer.Exit(_rerun(jobs, journal, workers, header, as_json, quiet, "no failed files"))


def limit(
    max_speed: Optional[str] = typer.Option(None, "--max-speed", help="New limit for the whole job (0: none)."),
    max_file_speed: Optional[str] = typer.Option(None, "--max-file-speed", help="New limit per file (0: none)."),
    job: Optional[int] = typer.Option(None, "--job", help="Job id (default: every running job)."),
    journal: Optional[Path] = JournalOpt,
) -> None:
    """Change the speed limits of a running job.

    The job applies them within a second; 0 removes a limit.

    \b
    Example:
      segdl limit --max-speed 40M
    """
    if max_speed is None and max_file_speed is None:
        say("give --max-speed and/or --max-file-speed", "red")
        raise typer.Exit(EXIT_USAGE)
    fields = {}
    if max_speed is not None:
        fields["max_speed"] = rate_option(max_speed, "--max-speed") or None
    if max_file_speed is not None:
        fields["max_file_speed"] = rate_option(max_file_speed, "--max-file-speed") or None
    from segdl.engine.doors import steer

    from .serve import find_service

    remote = find_service(journal) if job is None else None
    if remote is not None:  # a running segdl serve: its limits, at once
        status, answer = remote.call("PATCH", "/limits", {k: v or 0 for k, v in fields.items()})
        if status == 200:
            say("limits of segdl serve set", None)
            return
        say(f"segdl serve refused: {answer.get('error')}", "red")
        raise typer.Exit(EXIT_USAGE)
    try:
        ids = steer.set_limits(journal, job, **fields)
    except SegdlError as e:
        raise fail(e)
    if not ids:
        say("no running job", "red")
        raise typer.Exit(EXIT_USAGE)
    say(f"limits of job {', '.join(map(str, ids))} set", None)
