"""The long-running doors: ``segdl serve`` (the local API) and ``segdl ui``
(the terminal UI); each needs its extra, loaded only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segdl.engine.values.errors import EXIT_USAGE, SegdlError

from .console import say
from .options import JournalOpt, fail, rate_option


def serve(
    listen: Optional[str] = typer.Option(None, "--listen", help="HOST:PORT to listen on (default 127.0.0.1 and a free port)."),
    socket_path: Optional[Path] = typer.Option(None, "--socket", help="Listen on this Unix socket instead."),
    root: List[Path] = typer.Option([], "--root", help="A folder jobs may write under (repeatable; default -d)."),
    dest: Path = typer.Option(Path("."), "-d", "--dir", help="The default folder for jobs."),
    allow_host: List[str] = typer.Option([], "--allow-host", help="Another Host header to accept (a name this machine is reached by)."),
    public_url: Optional[str] = typer.Option(None, "--public-url", help="The address browsers open the page at, e.g. https://box.example.org behind a proxy that terminates TLS and passes the Host on (the page's cookie is then Secure there)."),
    allow_origin: List[str] = typer.Option([], "--allow-origin", hidden=True),
    connections: int = typer.Option(16, "-x", "--connections", min=1, max=1024, help="Connections per file."),
    max_connections: int = typer.Option(64, "--max-connections", min=1, max=4096, help="Connections for all jobs."),
    concurrent: int = typer.Option(5, "-j", "--concurrent", min=1, help="Files downloading at once."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Worker processes."),
    max_speed: Optional[str] = typer.Option(None, "--max-speed", help="Limit for everything, e.g. 40M."),
    max_file_speed: Optional[str] = typer.Option(None, "--max-file-speed", help="Limit per file."),
    journal: Optional[Path] = JournalOpt,
) -> None:
    """Run the engine as a service behind a local API (REST + events).

    Jobs are added, files paused, reprioritised or cancelled and limits
    changed over HTTP while everything runs; jobs and their history live
    in the journal and continue after a restart. Every request needs the
    token in the file it prints ('Authorization: Bearer TOKEN'). See the
    README's "segdl serve" section for the endpoints.

    \b
    Example:
      segdl serve -d ~/models --listen 127.0.0.1:8765
    """
    from segdl.engine.values.request import Settings

    try:
        import sse_starlette  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        say("segdl serve needs its extra: pip install 'segdl[serve]'", "red")
        raise typer.Exit(EXIT_USAGE)
    from .serve import parse_listen, run_service

    if allow_origin:
        # A page on another origin could not use the API anyway: no CORS
        # header is sent, and EventSource cannot send the token.
        say("--allow-origin is gone: the API answers only pages of its own origin "
            "(and scripts); see the README's segdl serve section", "red")
        raise typer.Exit(EXIT_USAGE)
    if listen and socket_path:
        say("give --listen or --socket, not both", "red")
        raise typer.Exit(EXIT_USAGE)
    if public_url is not None:
        from .serve import parse_public_url

        if socket_path:
            say("--public-url is for the web page, which a Unix socket does not serve: use --listen", "red")
            raise typer.Exit(EXIT_USAGE)
        try:
            parse_public_url(public_url)
        except ValueError as e:
            say(str(e), "red")
            raise typer.Exit(EXIT_USAGE)
    if listen:
        try:
            parse_listen(listen)
        except ValueError as e:
            say(str(e), "red")
            raise typer.Exit(EXIT_USAGE)
    settings = Settings(dest=dest, connections=connections, max_connections=max_connections,
                        concurrent_files=concurrent, workers=workers, journal=journal,
                        max_speed=rate_option(max_speed, "--max-speed"),
                        max_file_speed=rate_option(max_file_speed, "--max-file-speed"))
    roots = list(root) or [dest]
    for r in roots:
        r.mkdir(parents=True, exist_ok=True)

    try:
        code = run_service(settings, roots, listen=listen, socket_path=socket_path, allow_hosts=list(allow_host),
                           say=lambda text: say(text, None), public_url=public_url)
    except SegdlError as e:  # another service on this journal, a journal that cannot be used
        raise fail(e)
    raise typer.Exit(code)


def ui(
    urls: List[str] = typer.Argument(None, help="URLs or one hub reference (hf://..., civitai://...)."),
    input_file: Optional[Path] = typer.Option(None, "-i", "--input-file", help="aria2 input file or JSON collection manifest."),
    dest: Optional[Path] = typer.Option(None, "-d", "--dir", help="Target folder (default: . here; with --attach, the service's)."),
    attach: bool = typer.Option(False, "--attach", help="Drive the segdl serve running on this journal instead of an engine of its own."),
    connections: int = typer.Option(16, "-x", "--connections", min=1, max=1024, help="Connections per file."),
    concurrent: int = typer.Option(5, "-j", "--concurrent", min=1, help="Files downloading at once."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Worker processes."),
    journal: Optional[Path] = JournalOpt,
) -> None:
    """Download in a terminal UI: pick files, watch, pause, limit.

    A collection (-i FILE, a hub reference, several URLs) opens a picker
    first: each file with its size and whether it is here, partly here
    or missing; space takes or leaves one, enter starts.  Then each file's
    progress, with keys: space pause/resume, + and - priority, l a speed
    limit, d drop, r retry the failures, a add a URL, q quit (the job
    stays resumable).  Without arguments it shows the unfinished jobs.

    \b
    Examples:
      segdl ui -i collection.json -d models
      segdl ui hf://org/name -d models
      segdl ui --attach
    """
    try:
        import textual  # noqa: F401
    except ImportError:
        say("segdl ui needs its extra: pip install 'segdl[ui]'", "red")
        raise typer.Exit(EXIT_USAGE)
    from segdl.engine.values.request import Settings

    from .ui import ClientError, run_ui

    settings = Settings(dest=dest or Path("."), connections=connections, concurrent_files=concurrent,
                        workers=workers, journal=journal)
    try:
        code = run_ui(list(urls or []), input_file, settings, attached=attach, dest_given=dest is not None)
    except ClientError as e:
        say(e.message, "red")
        raise typer.Exit(EXIT_USAGE)
    except SegdlError as e:
        raise fail(e)
    raise typer.Exit(code)


def login(journal: Optional[Path] = JournalOpt) -> None:
    """Print a fresh login URL for the page of segdl serve.

    A login code works once, within 10 minutes. When the one segdl serve
    printed has expired, or another browser needs one, this asks the
    service on this journal for a new code (with its token, over the
    connection that proved it is the service) and prints the URL to open.

    \b
    Example:
      segdl login
    """
    from .serve import NotTheService, find_service

    remote = find_service(journal)
    if remote is None:
        say("no segdl serve runs on this journal (start one: segdl serve)", "red")
        raise typer.Exit(EXIT_USAGE)
    try:
        status, answer = remote.call("POST", "/login-codes", {})
    except (NotTheService, OSError) as e:
        say(f"segdl serve did not answer: {e}", "red")
        raise typer.Exit(EXIT_USAGE)
    if status != 200:
        say(f"segdl serve: {answer.get('error', status)}", "red")
        raise typer.Exit(EXIT_USAGE)
    say(f"open the page: {answer['url']} (the code works once, for {answer['expires_in'] / 60:.0f} minutes)", None)
