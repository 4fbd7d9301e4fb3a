"""``segdl``: each command parses options, calls one engine function and
renders what comes back.  Engine errors become a one-line message and the
documented exit code."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from segdl.engine.errors import EXIT_INTERRUPTED, EXIT_USAGE, SegdlError

from .console import cell, make_console, say

if TYPE_CHECKING:
    from segdl.engine.request import Request, Settings

# Each command imports the engine parts and rich only when it runs: ``segdl
# --help`` or ``status`` does not load libcurl, multiprocess or sqlite-utils.

app = typer.Typer(
    help="Segmented, crash-safe bulk downloads: libcurl workers, a SQLite journal, blake3 verification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (click's formatter): rewraps paragraphs to the terminal,
    # and does not load rich and markdown-it to print it (-40 ms).
    rich_markup_mode=None,
)


JournalOpt = typer.Option(None, "--journal", envvar="SEGDL_JOURNAL", help="Journal file (default: $XDG_STATE_HOME/segdl/journal.sqlite).")
HeaderOpt = typer.Option([], "-H", "--header", help="Extra request header, 'Name: value' (repeatable).")
RayOpt = typer.Option(None, "--ray", metavar="ADDRESS", help="Run on the Ray cluster at ADDRESS ('auto': $RAY_ADDRESS or the local one); needs segdl[ray].")
RayJournalsOpt = typer.Option(None, "--ray-journals", help="With --ray: folder of each node's journal (default: the node's $XDG_STATE_HOME/segdl/ray). A shared path lets a node resume a lost node's files.")


def _fail(e: SegdlError) -> "typer.Exit":
    say(e.message, "red")
    return typer.Exit(e.exit_code)


def _run(requests: list[Request], settings: Settings, *, as_json: bool, quiet: bool, collection: str | None = None,
         source: dict | None = None) -> int:
    """Run a job with a live view (or JSON lines) and return the exit code."""
    from segdl.engine import api

    from .render import LiveView, print_json_line, summary_table

    console = make_console(stderr=True)
    interactive = console.is_terminal and not as_json and not quiet

    def message(m: str) -> None:
        if not quiet:
            say(m)

    try:
        if interactive:
            with LiveView(console) as view:
                results = api.download(requests, settings, collection=collection, source=source,
                                       on_progress=view.update, on_message=message)
        else:
            results = api.download(requests, settings, collection=collection, on_message=message, source=source,
                                   on_result=print_json_line if as_json else None)
    except KeyboardInterrupt:
        say("interrupted; run the same command again to continue")
        return EXIT_INTERRUPTED
    except SegdlError as e:
        raise _fail(e)
    if not as_json and not quiet:
        make_console().print(summary_table(results))
    return results.exit_code


def _rate(value: Optional[str], name: str) -> int:
    if value is None:
        return 0
    from segdl.engine.bandwidth import parse_rate

    try:
        return parse_rate(value)
    except ValueError as e:
        say(f"{name}: {e}", "red")
        raise typer.Exit(EXIT_USAGE)


# Options of the hub references (get and ls).
IncludeOpt = typer.Option([], "--include", help="Hugging Face: only files matching this glob (repeatable; fnmatch, case-sensitive, 'dir/' is a folder).")
ExcludeOpt = typer.Option([], "--exclude", help="Hugging Face: leave out files matching this glob (repeatable).")
HfCacheOpt = typer.Option(None, "--hf-cache", metavar="[DIR]", help="Hugging Face: lay files out as the HF cache (default $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub); --hf-cache=DIR for another.")
AllVersionsOpt = typer.Option(False, "--all-versions", help="CivitAI: every version of a model, not only the latest.")
AllFilesOpt = typer.Option(False, "--all-files", help="CivitAI: every file of a version, not only the primary one.")
TypeOpt = typer.Option([], "--type", help="CivitAI: only files of this type (Model, VAE, Config, 'Training Data'; repeatable).")
FormatOpt = typer.Option([], "--format", help="CivitAI: only files of this format (SafeTensor, PickleTensor; repeatable).")
LayoutOpt = typer.Option(None, "--layout", help="CivitAI: paths under -d, default '{collection}/{model}/{file}' (see README for the fields).")
TokenEnvOpt = typer.Option(None, "--token-env", metavar="NAME", help="CivitAI: read the API key from this environment variable (default CIVITAI_TOKEN).")


def _hub_args(include, exclude, hf_cache, all_versions, all_files, types, formats, layout, token_env, collection):
    from .hubs import HubArgs

    if token_env is not None and not token_env.replace("_", "").isalnum():
        say("--token-env takes the NAME of an environment variable, not a token", "red")
        raise typer.Exit(EXIT_USAGE)
    return HubArgs(tuple(include), tuple(exclude), hf_cache, all_versions, all_files, tuple(types),
                   tuple(formats), layout, token_env, collection)


@app.command()
def get(
    urls: List[str] = typer.Argument(None, help="URLs or hub references (hf://ORG/NAME, civitai://model/ID, a CivitAI page URL)."),
    input_file: Optional[Path] = typer.Option(None, "-i", "--input-file", help="aria2 input file or JSON collection manifest (see README)."),
    collection: Optional[str] = typer.Option(None, "--collection", help="Collection name (default: the manifest's)."),
    dest: Path = typer.Option(Path("."), "-d", "--dir", help="Target folder."),
    out: Optional[str] = typer.Option(None, "-o", "--out", help="File name (one URL only), relative to --dir."),
    connections: int = typer.Option(16, "-x", "--connections", min=1, max=1024, help="Connections per file."),
    max_connections: int = typer.Option(64, "--max-connections", min=1, max=4096, help="Connections for the whole job."),
    concurrent: int = typer.Option(5, "-j", "--concurrent", min=1, help="Files downloading at once."),
    per_host: int = typer.Option(0, "--max-connections-per-host", min=0, help="Connections to one host (default: max(-x, 32))."),
    workers: int = typer.Option(2, "--workers", min=1, max=64, help="Worker processes."),
    blake3: Optional[str] = typer.Option(None, "--blake3", help="Expected blake3 (hex) of the file (one URL only)."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected sha256 (hex) of the file (one URL only)."),
    header: List[str] = HeaderOpt,
    keep_headers: bool = typer.Option(False, "--keep-headers", help="Keep header values in the journal, so resume and retry send them again (they may hold tokens)."),
    location_trusted: bool = typer.Option(False, "--location-trusted", help="Send the -H and manifest headers (Authorization, Cookie, any other) after a redirect to another host too, as curl does; by default they go to the URL's own origin only."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing different file."),
    commit_interval: float = typer.Option(1.0, "--commit-interval", min=0.1, help="Seconds between synced journal commits: the progress a power cut may lose."),
    direct_io: bool = typer.Option(True, "--direct-io/--no-direct-io", help="Write whole blocks with O_DIRECT where the file system takes it (default), or everything through the page cache."),
    stall_timeout: float = typer.Option(20.0, "--stall-timeout", min=1, help="Seconds without data before a connection is cut and retried."),
    retries: int = typer.Option(8, "--retries", min=0, help="Retries per segment for transient failures."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify TLS certificates."),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="CA bundle for TLS verification."),
    max_speed: Optional[str] = typer.Option(None, "--max-speed", help="Limit for the whole job, e.g. 40M (1024-based)."),
    max_file_speed: Optional[str] = typer.Option(None, "--max-file-speed", help="Limit per file, e.g. 500K."),
    journal: Optional[Path] = JournalOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per file on stdout, nothing else."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress or summary."),
    include: List[str] = IncludeOpt,
    exclude: List[str] = ExcludeOpt,
    hf_cache: Optional[str] = HfCacheOpt,
    all_versions: bool = AllVersionsOpt,
    all_files: bool = AllFilesOpt,
    file_type: List[str] = TypeOpt,
    file_format: List[str] = FormatOpt,
    layout: Optional[str] = LayoutOpt,
    token_env: Optional[str] = TokenEnvOpt,
    ray: Optional[str] = RayOpt,
    ray_mode: str = typer.Option("shard", "--ray-mode", help="With --ray: shard (each file once, on some node) or replicate (every file on every node)."),
    ray_journals: Optional[str] = RayJournalsOpt,
) -> None:
    """Download URLs, a collection, or a model hub's repo or models.

    Each file is cut into byte ranges fetched over many connections,
    journaled so that the same command continues after a crash, and
    verified by blake3 (and sha256 where known).

    \b
    Examples:
      segdl get https://example.org/model.safetensors -d models
      segdl get -i collection.json -d models -j 8 -x 8
      segdl get hf://org/name@main --include '*.safetensors' --hf-cache
      segdl get civitai://collection/123 -d loras
      segdl get -i collection.json -d /data --ray auto
    """
    urls = list(urls or [])
    refs: list[str] = []
    if any("://" in u for u in urls):
        from segdl.engine.hubs import is_hub_ref  # light: no hub module loads for plain URLs

        refs = [u for u in urls if is_hub_ref(u)]
        urls = [u for u in urls if u not in refs]
    manifest_collection = None
    requests: list = []
    if input_file is not None:
        from segdl.engine.manifest import load_input

        try:
            m = load_input(input_file)
        except SegdlError as e:
            raise _fail(e)
        requests.extend(m.requests)
        manifest_collection = m.collection
    if not urls and not requests and not refs:
        say("nothing to download: give URLs, hub references or -i FILE", "red")
        raise typer.Exit(EXIT_USAGE)
    if (len(urls) + len(requests) > 1 or refs) and (out or blake3 or sha256):
        say("-o, --blake3 and --sha256 apply to a single URL", "red")
        raise typer.Exit(EXIT_USAGE)
    hub_args = _hub_args(include, exclude, hf_cache, all_versions, all_files, file_type, file_format,
                         layout, token_env, collection)
    _check_headers(header)
    from segdl.engine.messages import TransferOptions
    from segdl.engine.request import Request, Settings
    from segdl.engine.retry import RetryPolicy

    requests.extend(Request(u, out, blake3, sha256) for u in urls)

    settings = Settings(
        dest=dest, connections=connections, max_connections=max_connections,
        workers=workers, concurrent_files=concurrent, force=force, journal=journal, max_per_host=per_host,
        max_speed=_rate(max_speed, "--max-speed"), max_file_speed=_rate(max_file_speed, "--max-file-speed"),
        retry=RetryPolicy(max_attempts=retries), keep_headers=keep_headers, direct_io=direct_io,
        commit_interval=commit_interval, transfer=TransferOptions(headers=tuple(header), stall_timeout=stall_timeout,
                                 insecure=insecure, ca_cert=str(ca_cert) if ca_cert else None,
                                 location_trusted=location_trusted),
    )
    code = 0
    if ray is not None:
        from . import raydrive

        if refs:  # a hub reference lists into requests like any manifest
            from .hubs import resolve_refs

            try:
                more, code = resolve_refs(refs, hub_args, settings, as_json, quiet)
            except SegdlError as e:
                raise _fail(e)
            requests.extend(more)
        raise typer.Exit(max(code, raydrive.run(requests, settings, address=ray, mode=ray_mode,
                                                journals=ray_journals, as_json=as_json, quiet=quiet,
                                                collection=collection or manifest_collection)))
    if refs:
        from .hubs import get_refs

        def run(reqs, s, **kw):
            return _run(reqs, s, as_json=as_json, quiet=quiet, **kw)

        code = get_refs(refs, hub_args, settings, journal, run, as_json, quiet)
    if requests:
        code = max(code, _run(requests, settings, as_json=as_json, quiet=quiet,
                              collection=collection or manifest_collection))
    raise typer.Exit(code)


def _set_paused(target: str, journal: Optional[Path], paused: bool) -> int:
    from segdl.engine.journal import Journal

    try:
        j = Journal(journal)
        rows = j.resolve_targets(target)
        if not rows:
            say(f"no file or collection matches {target!r}", "red")
            return EXIT_USAGE
        ids = [r["id"] for r in rows]
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
        if ids:
            j.set_paused(ids, paused)
        j.close()
    except SegdlError as e:
        raise _fail(e)
    word = "paused" if paused else "resumed"
    for r in rows:
        say(f"{word} {r['path']}{via}", None)
    return 0


@app.command()
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


@app.command()
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
    from segdl.engine import api

    try:
        jobs = api.unfinished(journal)
    except SegdlError as e:
        raise _fail(e)
    raise typer.Exit(_rerun(jobs, journal, workers, header, as_json, quiet, "nothing to resume"))


def _check_headers(headers: List[str]) -> None:
    for h in headers:
        if ":" not in h:
            say(f"header {h!r} is not 'Name: value'", "red")
            raise typer.Exit(EXIT_USAGE)


def _rerun(jobs, journal, workers: Optional[int], headers: List[str], as_json: bool, quiet: bool,
           nothing: str) -> int:
    """Run again (dest, requests, spec, collection) groups read from the journal,
    with the settings each job was started with (``workers`` and ``headers``
    given on this command line added)."""
    from segdl.engine.request import missing_headers, settings_from_spec

    _check_headers(headers)
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
        code = max(code, _run(reqs, settings, as_json=as_json, quiet=quiet, collection=coll))
        if source and source.get("hf_cache"):
            from .hubs import finish

            code = max(code, finish(dest, source, (lambda m: None) if quiet else say))
    return code


def _live_state(row: dict) -> str:
    """A file's state as a person wants it: a 'downloading' row whose job
    is not alive any more is 'interrupted'."""
    from segdl.engine.lifecycle import ACTIVE, PAUSED, QUEUED

    state = row["state"]
    if state in ACTIVE or state in (QUEUED, PAUSED):
        alive = row.get("job_state") == "running" and row.get("heartbeat") and time.time() - row["heartbeat"] < 10
        if alive and row.get("job_pid"):
            try:
                os.kill(row["job_pid"], 0)
            except ProcessLookupError:
                alive = False
            except PermissionError:
                pass
        if not alive:
            return "paused" if row.get("paused") else ("interrupted" if state != "queued" else "queued")
        if row.get("paused"):
            return "paused"
    return state


@app.command()
def status(
    collection: Optional[str] = typer.Argument(None, help="Only this collection."),
    journal: Optional[Path] = JournalOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    ray: Optional[str] = RayOpt,
    ray_journals: Optional[str] = RayJournalsOpt,
) -> None:
    """Show every file the journal knows.

    One table per collection: state, bytes, speed and ETA of each file.
    It only reads the journal, so it works while a job runs.  With --ray,
    every node's journal, one row per file and its node.

    \b
    Example:
      segdl status loras --json
    """
    if ray is not None:
        from . import raydrive

        raise typer.Exit(raydrive.status(address=ray, journals=ray_journals, collection=collection, as_json=as_json))
    from segdl.engine.journal import Journal
    from segdl.engine.lifecycle import ACTIVE, COMPLETE, PAUSED
    from segdl.engine.naming import redact_url

    try:
        j = Journal(journal, readonly=True)
        rows = j.status_rows()
        j.close()
    except SegdlError as e:
        raise _fail(e)
    if not as_json:
        from .serve import find_service

        remote = find_service(journal)
        if remote is not None:  # it keeps this journal live, three times a second
            say(f"segdl serve runs these jobs at {remote.url or remote.socket_path}", None)
    if collection is not None:
        rows = [r for r in rows if r["collection"] == collection]
    out = []
    for r in rows:
        state = _live_state(r)
        final = state in COMPLETE
        moving = state in ACTIVE or state == PAUSED
        done = r["size"] if final else max(r["bytes_done"] or 0, r["received"] or 0) if moving else (r["bytes_done"] or 0)
        speed = (r["speed"] or 0.0) if state == "downloading" else 0.0
        eta = 0.0 if final else (
            round(max(0, r["size"] - done) / speed, 1) if speed > 0 and r["size"] is not None else None)
        out.append({
            "id": r["id"], "collection": r["collection"], "path": r["path"], "url": redact_url(r["url"]),
            "state": state, "size": r["size"], "bytes_done": done, "speed": speed, "eta": eta,
            "blake3": r["blake3"], "error": r["error"],
            "mirrors": json.loads(r["mirrors"]) if r.get("mirrors") else None,
        })
    if as_json:
        for o in out:
            print(json.dumps(o, sort_keys=True))
        return
    from rich.table import Table

    console = make_console()
    groups: dict = {}
    for o in out:
        groups.setdefault(o["collection"] or "(no collection)", []).append(o)
    for name, files in groups.items():
        counts: dict[str, int] = {}
        for o in files:
            counts[o["state"]] = counts.get(o["state"], 0) + 1
        t = Table(title=cell(f"{name}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))),
                  title_justify="left")
        for c in ("id", "state", "path", "done", "size", "speed", "eta", "detail"):
            t.add_column(c, overflow="fold")
        for o in files:
            detail = o["error"] or ""
            if o["mirrors"]:
                detail = "; ".join(f"{m['url']}: {m['speed'] / 1048576:.1f} MiB/s" + (" (dropped)" if m["dropped"] else "")
                                   for m in o["mirrors"])
            t.add_row(str(o["id"]), o["state"], cell(o["path"]), f"{o['bytes_done'] or 0:,}",
                      "?" if o["size"] is None else f"{o['size']:,}",
                      f"{o['speed'] / 1048576:.1f} MiB/s" if o["speed"] else "",
                      f"{o['eta']:.0f} s" if o["eta"] and o["state"] == "downloading" else "", cell(detail))
        console.print(t)


@app.command(name="ls")
def ls_cmd(
    ref: Optional[str] = typer.Argument(None, help="A hub reference (hf://..., civitai://..., a CivitAI page URL)."),
    input_file: Optional[Path] = typer.Option(None, "-i", "--input-file", help="A manifest or aria2 input file instead."),
    dest: Path = typer.Option(Path("."), "-d", "--dir", help="Target folder, as for get."),
    journal: Optional[Path] = JournalOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    collection: Optional[str] = typer.Option(None, "--collection", help="CivitAI: {collection} of the layout."),
    include: List[str] = IncludeOpt,
    exclude: List[str] = ExcludeOpt,
    hf_cache: Optional[str] = HfCacheOpt,
    all_versions: bool = AllVersionsOpt,
    all_files: bool = AllFilesOpt,
    file_type: List[str] = TypeOpt,
    file_format: List[str] = FormatOpt,
    layout: Optional[str] = LayoutOpt,
    token_env: Optional[str] = TokenEnvOpt,
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify TLS certificates."),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="CA bundle for TLS verification."),
) -> None:
    """List a hub's or a manifest's files: here, partial or missing.

    Per file: path, size, hash, and "here" (done in the journal, or the
    same hash done under another path, which get then links), "partial"
    (with its bytes done) or "missing".  Lists the hub (its API only);
    downloads nothing.

    \b
    Examples:
      segdl ls hf://org/name --include '*.safetensors'
      segdl ls civitai://collection/123 -d loras --json
    """
    if (ref is None) == (input_file is None):
        say("give a hub reference or -i FILE", "red")
        raise typer.Exit(EXIT_USAGE)
    from segdl.engine.messages import TransferOptions

    from .hubs import ls as run_ls

    args = _hub_args(include, exclude, hf_cache, all_versions, all_files, file_type, file_format,
                     layout, token_env, collection)
    try:
        if ref is not None:
            from segdl.engine.hubs import is_hub_ref

            if not is_hub_ref(ref):
                say(f"{ref!r} is not a hub reference (hf://..., civitai://..., a CivitAI page URL)", "red")
                raise typer.Exit(EXIT_USAGE)
        code = run_ls(ref, input_file, args, dest, TransferOptions(insecure=insecure, ca_cert=str(ca_cert) if ca_cert else None),
                      journal, as_json)
    except SegdlError as e:
        raise _fail(e)
    raise typer.Exit(code)


@app.command()
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
    from segdl.engine import api

    try:
        jobs = api.failed(journal, collection)
    except SegdlError as e:
        raise _fail(e)
    raise typer.Exit(_rerun(jobs, journal, workers, header, as_json, quiet, "no failed files"))


@app.command()
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
        fields["max_speed"] = _rate(max_speed, "--max-speed") or None
    if max_file_speed is not None:
        fields["max_file_speed"] = _rate(max_file_speed, "--max-file-speed") or None
    from segdl.engine.journal import Journal

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
        j = Journal(journal)
        ids = [job] if job is not None else [r["id"] for r in j.running_jobs()]
        if not ids:
            say("no running job", "red")
            raise typer.Exit(EXIT_USAGE)
        for i in ids:
            j.update_job(i, **fields)
        j.close()
    except SegdlError as e:
        raise _fail(e)
    say(f"limits of job {', '.join(map(str, ids))} set", None)


@app.command()
def serve(
    listen: Optional[str] = typer.Option(None, "--listen", help="HOST:PORT to listen on (default 127.0.0.1 and a free port)."),
    socket_path: Optional[Path] = typer.Option(None, "--socket", help="Listen on this Unix socket instead."),
    root: List[Path] = typer.Option([], "--root", help="A folder jobs may write under (repeatable; default -d)."),
    dest: Path = typer.Option(Path("."), "-d", "--dir", help="The default folder for jobs."),
    allow_host: List[str] = typer.Option([], "--allow-host", help="Another Host header to accept (a name this machine is reached by)."),
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
    from segdl.engine.request import Settings

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
    if listen:
        try:
            parse_listen(listen)
        except ValueError as e:
            say(str(e), "red")
            raise typer.Exit(EXIT_USAGE)
    settings = Settings(dest=dest, connections=connections, max_connections=max_connections,
                        concurrent_files=concurrent, workers=workers, journal=journal,
                        max_speed=_rate(max_speed, "--max-speed"),
                        max_file_speed=_rate(max_file_speed, "--max-file-speed"))
    roots = list(root) or [dest]
    for r in roots:
        r.mkdir(parents=True, exist_ok=True)

    try:
        code = run_service(settings, roots, listen=listen, socket_path=socket_path, allow_hosts=list(allow_host),
                           say=lambda text: say(text, None))
    except SegdlError as e:  # another service on this journal, a journal that cannot be used
        raise _fail(e)
    raise typer.Exit(code)


@app.command()
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
    from segdl.engine.request import Settings

    from .ui import ClientError, run_ui

    settings = Settings(dest=dest or Path("."), connections=connections, concurrent_files=concurrent,
                        workers=workers, journal=journal)
    try:
        code = run_ui(list(urls or []), input_file, settings, attached=attach, dest_given=dest is not None)
    except ClientError as e:
        say(e.message, "red")
        raise typer.Exit(EXIT_USAGE)
    except SegdlError as e:
        raise _fail(e)
    raise typer.Exit(code)


from .bench import bench as _bench  # noqa: E402  (imports its engine part lazily)
from .demo import demo as _demo  # noqa: E402
from .verify import verify as _verify  # noqa: E402

app.command(name="bench")(_bench)
app.command(name="demo")(_demo)
app.command(name="verify")(_verify)


def _hf_cache_argv(argv: list[str]) -> list[str]:
    """``--hf-cache`` takes an optional DIR, which click cannot say: a bare
    ``--hf-cache`` becomes ``--hf-cache=`` (the default cache), unless a
    folder (not a URL, reference or option) follows it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a == "--hf-cache":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("-") and "://" not in nxt:
                out.append(f"--hf-cache={nxt}")
                i += 2
                continue
            out.append("--hf-cache=")
        else:
            out.append(a)
        i += 1
    return out


def main() -> None:  # pragma: no cover - console script entry
    app(args=_hf_cache_argv(sys.argv[1:]), prog_name="segdl")


if __name__ == "__main__":  # pragma: no cover
    main()
