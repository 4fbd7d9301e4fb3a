"""``segdl get``: its options, grouped into one value, and running a job
with a live view or JSON lines."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from segdl.engine.values.errors import EXIT_INTERRUPTED, EXIT_USAGE, SegdlError

from .console import make_console, say
from .options import (AllFilesOpt, AllVersionsOpt, ExcludeOpt, FormatOpt, HeaderOpt, HfCacheOpt, IncludeOpt,
                      JournalOpt, LayoutOpt, RayJournalsOpt, RayOpt, TokenEnvOpt, TypeOpt, check_headers, fail,
                      hub_args, rate_option)

if TYPE_CHECKING:
    from segdl.engine.values.request import Request, Settings

    from .hubs import HubArgs


def run_job(requests: list[Request], settings: Settings, *, as_json: bool, quiet: bool, collection: str | None = None,
         source: dict | None = None) -> int:
    """Run a job with a live view (or JSON lines) and return the exit code."""
    from segdl.engine.doors import api

    from .jsonlines import print_json_line

    # rich's live view loads only for a run that may show it.
    console = make_console(stderr=True) if not (as_json or quiet) else None
    interactive = console is not None and console.is_terminal

    def message(m: str) -> None:
        if not quiet:
            say(m)

    try:
        if interactive:
            from .render import LiveView

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
        raise fail(e)
    if not as_json and not quiet:
        from .render import print_summary

        print_summary(make_console(), results)
    return results.exit_code


@dataclass(frozen=True)
class Sources:
    """What to fetch: URLs and hub references, a manifest, and what applies
    to a single URL."""
    urls: tuple[str, ...]
    input_file: Optional[Path]
    collection: Optional[str]
    out: Optional[str]
    blake3: Optional[str]
    sha256: Optional[str]


@dataclass(frozen=True)
class Connections:
    connections: int
    max_connections: int
    concurrent: int
    per_host: int
    workers: int


@dataclass(frozen=True)
class Transfer:
    """How each request is made, and how hard it is retried."""
    headers: tuple[str, ...]
    keep_headers: bool
    location_trusted: bool
    insecure: bool
    ca_cert: Optional[Path]
    stall_timeout: float
    retries: int
    max_speed: int  # bytes/s, 0: none
    max_file_speed: int


@dataclass(frozen=True)
class Disk:
    dest: Path
    force: bool
    commit_interval: float
    direct_io: bool
    journal: Optional[Path]


@dataclass(frozen=True)
class Cluster:
    address: Optional[str]  # None: no Ray
    mode: str
    journals: Optional[str]


@dataclass(frozen=True)
class GetOptions:
    """Everything ``segdl get`` was given, checked, in groups; built in one
    place (:meth:`parse`) from the command's parameters."""
    sources: Sources
    connections: Connections
    transfer: Transfer
    disk: Disk
    hubs: "HubArgs"
    cluster: Cluster
    as_json: bool
    quiet: bool

    @classmethod
    def parse(cls, p: dict) -> "GetOptions":
        """From the parameters by name; a bad rate, header or token
        variable name is a usage error (exit 2)."""
        check_headers(p["header"])
        return cls(
            Sources(tuple(p["urls"] or ()), p["input_file"], p["collection"], p["out"], p["blake3"], p["sha256"]),
            Connections(p["connections"], p["max_connections"], p["concurrent"], p["per_host"], p["workers"]),
            Transfer(tuple(p["header"]), p["keep_headers"], p["location_trusted"], p["insecure"], p["ca_cert"],
                     p["stall_timeout"], p["retries"], rate_option(p["max_speed"], "--max-speed"),
                     rate_option(p["max_file_speed"], "--max-file-speed")),
            Disk(p["dest"], p["force"], p["commit_interval"], p["direct_io"], p["journal"]),
            hub_args(p["include"], p["exclude"], p["hf_cache"], p["all_versions"], p["all_files"], p["file_type"],
                     p["file_format"], p["layout"], p["token_env"], p["collection"]),
            Cluster(p["ray"], p["ray_mode"], p["ray_journals"]),
            p["as_json"], p["quiet"])

    def settings(self) -> "Settings":
        from segdl.engine.values.messages import TransferOptions
        from segdl.engine.values.request import Settings
        from segdl.engine.rules.retry import RetryPolicy

        c, t, d = self.connections, self.transfer, self.disk
        return Settings(
            dest=d.dest, connections=c.connections, max_connections=c.max_connections,
            workers=c.workers, concurrent_files=c.concurrent, force=d.force, journal=d.journal,
            max_per_host=c.per_host, max_speed=t.max_speed, max_file_speed=t.max_file_speed,
            retry=RetryPolicy(max_attempts=t.retries), keep_headers=t.keep_headers, direct_io=d.direct_io,
            commit_interval=d.commit_interval,
            transfer=TransferOptions(headers=t.headers, stall_timeout=t.stall_timeout, insecure=t.insecure,
                                     ca_cert=str(t.ca_cert) if t.ca_cert else None,
                                     location_trusted=t.location_trusted),
        )


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
    raise typer.Exit(run_get(GetOptions.parse(locals())))


#: A manifest of this many bytes (about 10,000 aria2 entries; gzip: 100,000)
#: gets its workers forked before it is read.  A smaller one would pay for
#: it: its job is often of fewer files than -j, whose engine then stops the
#: early workers and forks its own: two forks and a stop, for nothing.
EARLY_WORKERS_FROM = 1 << 20


def _big_manifest(path: Path) -> bool:
    try:
        return path.stat().st_size >= EARLY_WORKERS_FROM
    except (OSError, ValueError):
        return False  # load_input says what is wrong with it


@contextmanager
def _long_lived():
    """Objects made inside live as long as the command (a manifest's
    requests): Python's cyclic garbage collector is off while they are
    made (it would scan them again and again as they pile up: a quarter
    of reading 100,000 entries), and they are moved out of its sight
    after (``gc.freeze``), so no later collection scans them either."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


def run_get(o: GetOptions) -> int:
    """The requests ``o`` names, run here or on a Ray cluster; the exit code."""
    src = o.sources
    urls = list(src.urls)
    refs: list[str] = []
    if any("://" in u for u in urls):
        from segdl.engine.inputs.hubs import is_hub_ref  # light: no hub module loads for plain URLs

        refs = [u for u in urls if is_hub_ref(u)]
        urls = [u for u in urls if u not in refs]
    manifest_collection = None
    requests: list = []
    if src.input_file is not None:
        from segdl.engine.inputs.manifest import load_input

        if o.cluster.address is None and _big_manifest(src.input_file):
            # Before a manifest of thousands of files is read (see there).
            from segdl.engine.run.coordinator import start_workers_early

            start_workers_early(o.settings())
        try:
            with _long_lived():
                m = load_input(src.input_file)
        except SegdlError as e:
            raise fail(e)
        requests.extend(m.requests)
        manifest_collection = m.collection
    if not urls and not requests and not refs:
        say("nothing to download: give URLs, hub references or -i FILE", "red")
        raise typer.Exit(EXIT_USAGE)
    if (len(urls) + len(requests) > 1 or refs) and (src.out or src.blake3 or src.sha256):
        say("-o, --blake3 and --sha256 apply to a single URL", "red")
        raise typer.Exit(EXIT_USAGE)
    from segdl.engine.values.request import Request

    requests.extend(Request(u, src.out, src.blake3, src.sha256) for u in urls)
    settings = o.settings()
    collection = src.collection or manifest_collection
    code = 0
    if o.cluster.address is not None:
        from . import raydrive

        if refs:  # a hub reference lists into requests like any manifest
            from .hubs import resolve_refs

            try:
                more, code = resolve_refs(refs, o.hubs, settings, o.as_json, o.quiet)
            except SegdlError as e:
                raise fail(e)
            requests.extend(more)
        return max(code, raydrive.run(requests, settings, address=o.cluster.address, mode=o.cluster.mode,
                                      journals=o.cluster.journals, as_json=o.as_json, quiet=o.quiet,
                                      collection=collection))
    if refs:
        from .hubs import get_refs

        def run(reqs, s, **kw):
            return run_job(reqs, s, as_json=o.as_json, quiet=o.quiet, **kw)

        code = get_refs(refs, o.hubs, settings, o.disk.journal, run, o.as_json, o.quiet)
    if requests:
        code = max(code, run_job(requests, settings, as_json=o.as_json, quiet=o.quiet, collection=collection))
    return code
