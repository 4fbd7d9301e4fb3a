"""The benchmark cases and the exact command line of every tool in them.

A :class:`Case` = one dataset, one nginx mirror configuration, and the tools
(:class:`ToolSpec`) that download the whole dataset from it.  ``build_cases``
returns the full or the ``--quick`` variant of every case.

Quick sizes are smaller; the throttled cases scale ``limit_rate`` with the
size so a connection spends about the same time under the limit (nginx
grants every request a one-second burst: ``rate * (elapsed + 1) - sent``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .datasets import GiB, KiB, MiB, Dataset


@dataclass(frozen=True)
class Mirror:
    """An nginx configuration (see tests/support/servers.py ``Nginx``)."""

    limit_rate: str | None = None  # per request, e.g. "20m"
    echo_sleep_ms: int | None = None  # delay before every response
    # Per connection, paced by the kernel, no burst (tests/support/servers.py
    # PacedMirror, not nginx), e.g. "5m".
    pace: str | None = None

    def describe(self) -> str:
        if self.pace:
            return f"paced {self.pace}/connection by the kernel (no burst; segdl's file server, not nginx)"
        parts = []
        if self.limit_rate:
            parts.append(f"limit_rate {self.limit_rate} per connection")
        if self.echo_sleep_ms:
            parts.append(f"{self.echo_sleep_ms} ms before each response")
        return ", ".join(parts) or "unthrottled"


@dataclass(frozen=True)
class ToolSpec:
    """One tool configuration: ``tool`` is segdl, aria2c, curl, curl-sync
    (curl, then an fsync), curl-many (``curl -Z``, many URLs) or hf-snapshot
    (huggingface_hub's ``snapshot_download``).  ``layout`` "hf-cache": the
    tool writes a Hugging Face cache into the output folder (segdl
    ``--hf-cache=DIR``)."""

    label: str
    tool: str
    args: tuple[str, ...] = ()
    layout: str = "flat"


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    dataset: Dataset
    mirror: Mirror
    tools: tuple[ToolSpec, ...]
    notes: tuple[str, ...] = field(default=())
    timeout_scale: float = 1.0  # multiplies --timeout for each tool run of this case

    @property
    def total_bytes(self) -> int:
        return self.dataset.total_bytes


# --------------------------------------------------------------------------- commands

#: aria2c flags that only silence the console and keep names stable; they do
#: not change how it downloads (file allocation stays the default, which on
#: Linux uses fallocate).
ARIA2C_QUIET = ("--console-log-level=warn", "--summary-interval=0",
                "--download-result=hide", "--show-console-readout=false",
                "--auto-file-renaming=false")
ARIA2C_SPLIT = ("-x16", "-s16", "-k1M")


def segdl_has_input_file() -> bool:
    """True if ``segdl get --help`` offers ``-i/--input-file``."""
    try:
        p = subprocess.run([segdl_binary(), "get", "--help"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "COLUMNS": "200"})
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--input-file" in p.stdout


def _url_list(urls: list[str], scratch: Path) -> str:
    """Write an aria2-style input file (one URL per line); return its path."""
    listing = scratch / "input.txt"
    listing.write_text("".join(u + "\n" for u in urls))
    return str(listing)


def _curl_config(urls: list[str], scratch: Path) -> str:
    """A curl config file (``-K``) with one ``url`` line per URL."""
    config = scratch / "urls.curl"
    config.write_text("".join(f'url = "{u}"\n' for u in urls))
    return str(config)


def segdl_binary() -> str:
    """The segdl console script of this Python, not a wrapper found on PATH
    (a pyenv shim adds ~0.1 s of bash to every run; aria2c and curl are
    started directly too)."""
    import shutil
    import sys

    here = Path(sys.executable).parent / "segdl"
    return str(here) if here.exists() else (shutil.which("segdl") or "segdl")


#: huggingface_hub's snapshot_download as a user calls it (default max_workers).
HF_SNAPSHOT = ("import sys\n"
               "from huggingface_hub import snapshot_download\n"
               "snapshot_download(sys.argv[1], cache_dir=sys.argv[2])\n")


def command(spec: ToolSpec, urls: list[str], dest: Path, scratch: Path,
            segdl_input_file: bool = False, ca_cert: Path | None = None) -> list[str]:
    """The argv that makes ``spec`` download ``urls`` into ``dest``.

    ``scratch`` is a per-run directory for the segdl journal and the input
    files; it is deleted after the run.  Several URLs go to segdl as
    ``-i input.txt`` when ``segdl_input_file``, else as arguments.  A hub
    reference (``hf://...``) makes segdl print its JSON lines (which files it
    verified) instead of nothing.  ``ca_cert``: the CA bundle for TLS, passed
    by each tool's own flag (huggingface_hub takes it from the environment).
    """
    ca = str(ca_cert) if ca_cert else None
    if spec.tool == "segdl":
        hub_ref = len(urls) == 1 and urls[0].startswith("hf://")
        where = [f"--hf-cache={dest}"] if spec.layout == "hf-cache" else ["-d", str(dest)]
        argv = [segdl_binary(), "get", *where, "--json" if hub_ref else "-q",
                "--journal", str(scratch / "journal.sqlite"), *(["--ca-cert", ca] if ca else []),
                *spec.args]
        if segdl_input_file and len(urls) > 1:
            return argv + ["-i", _url_list(urls, scratch)]
        return argv + urls
    if spec.tool == "aria2c":
        tls = [f"--ca-certificate={ca}"] if ca else []
        if len(urls) == 1:
            return ["aria2c", *spec.args, *ARIA2C_QUIET, *tls, "-d", str(dest), urls[0]]
        return ["aria2c", *spec.args, *ARIA2C_QUIET, *tls, "-d", str(dest),
                "-i", _url_list(urls, scratch)]
    tls = ["--cacert", ca] if ca else []
    if spec.tool in ("curl-many", "curl-many-sync"):  # every URL in one curl, transfers in parallel
        many = ["curl", "-sS", "-f", "-Z", *spec.args, *tls, "--output-dir", str(dest), "--remote-name-all"]
        if len(urls) > 100:  # 20,000 URLs would pass ARG_MAX: a config file holds them
            many += ["-K", _curl_config(urls, scratch)]
        else:
            many += urls
        if spec.tool == "curl-many":
            return many
        # Time to durable: curl, then one sync of the output's file system.
        return ["sh", "-c", '"$@" && sync -f "$0"', str(dest), *many]
    if spec.tool in ("curl", "curl-sync"):  # curl-sync: loopback only (no CA)
        if len(urls) != 1:
            raise ValueError("curl cases download one file")
        name = urls[0].rsplit("/", 1)[1]
        curl = ["curl", "-sS", "-f", *spec.args, *tls, "-o", str(dest / name), urls[0]]
        if spec.tool == "curl":
            return curl
        # Time to durable: curl, then an fsync of its output (coreutils sync FILE).
        return ["sh", "-c", 'curl -sS -f -o "$0" "$1" && sync "$0"', str(dest / name), urls[0]]
    if spec.tool == "hf-snapshot":
        repo = urls[0].removeprefix("hf://")
        return [sys.executable, "-c", HF_SNAPSHOT, repo, str(dest)]
    raise ValueError(f"unknown tool {spec.tool!r}")


def display(argv: list[str], n_urls: int) -> str:
    """argv as one shell line; a long URL list at its end is shortened to ``<N URLs>``."""
    if n_urls > 2 and "-i" not in argv:
        argv = argv[:len(argv) - n_urls] + [f"<{n_urls} URLs>"]
    return shlex.join(argv)


# --------------------------------------------------------------------------- cases

SEGDL = ToolSpec("segdl", "segdl")
ARIA2C = ToolSpec("aria2c", "aria2c", ARIA2C_SPLIT)
CURL = ToolSpec("curl", "curl")
SEGDL_LAZY = ToolSpec("segdl, lazy commits", "segdl", ("--commit-interval", "600"))
CURL_SYNC = ToolSpec("curl + sync", "curl-sync")

BURST_NOTE = ("nginx limit_rate allows rate x (elapsed + 1 s) bytes, i.e. a one-second "
              "burst per request: a request of S bytes takes about S/rate - 1 s, and tools "
              "that issue many small requests partly escape the limit.")


MANY_FILES_NOTE = ("Issue 19: per-file cost.  curl -Z then one sync of the file system is as durable as "
                   "segdl; aria2c with --file-allocation=falloc is its fair setting here (the default, "
                   "prealloc, writes every file out first), its default kept beside it.")


def _many_files_tools() -> tuple[ToolSpec, ...]:
    return (ToolSpec("segdl -j16", "segdl", ("-j", "16", "--max-connections", "16")),
            ToolSpec("curl -Z --parallel-max 16 + sync", "curl-many-sync", ("--parallel-max", "16")),
            ToolSpec("aria2c -j16 falloc", "aria2c", ("-j", "16", "--file-allocation=falloc")),
            ToolSpec("aria2c -j16", "aria2c", ("-j", "16")))


def build_cases(quick: bool) -> dict[str, Case]:
    """Every case, keyed by name, in the order they run."""
    big = Dataset("big-256m", 1, 256 * MiB) if quick else Dataset("big-1g", 1, GiB)
    rate = "5m" if quick else "20m"  # 256 MiB / 16 conns at 5m == 1 GiB / 16 at 20m
    coll = Dataset("coll-32m", 20 if quick else 80, 32 * MiB)
    small = Dataset("small-1m", 1000 if quick else 10_000, MiB)
    tiny = Dataset("tiny-4k", 2000 if quick else 20_000, 4 * KiB)
    small2k = Dataset("small-1m", 200 if quick else 2000, MiB)  # the first files of small10k's
    j, x = 8, 4  # coll80: 8 files at once x 4 connections = 32 connections
    pace = "2m" if quick else "5m"  # 64 x 5 MiB/s stays under the unthrottled ceiling here
    cases = [
        Case("1g", f"{big.size // MiB} MiB, unthrottled", big, Mirror(),
             (SEGDL, ARIA2C, CURL, CURL_SYNC, SEGDL_LAZY),
             ("segdl --commit-interval 600: the journal's synced commit (once a second "
              "by default, the progress a power cut may lose) only at the end: what "
              "that durability costs.",)),
        Case("paced-x16", f"{big.size // MiB} MiB paced at {pace}/connection, 16 connections",
             big, Mirror(pace=pace), (ToolSpec("segdl -x16", "segdl", ("-x", "16")), ARIA2C)),
        Case("paced-x64", f"{big.size // MiB} MiB paced at {pace}/connection, segdl 64 connections "
             "vs aria2c 16 (its maximum)", big, Mirror(pace=pace),
             (ToolSpec("segdl -x64", "segdl", ("-x", "64", "--max-connections", "64")), ARIA2C)),
        Case("1g-20m-x16", f"{big.size // MiB} MiB at {rate}/connection, 16 connections",
             big, Mirror(limit_rate=rate),
             (ToolSpec("segdl -x16", "segdl", ("-x", "16")), ARIA2C), (BURST_NOTE,)),
        Case("1g-20m-x64", f"{big.size // MiB} MiB at {rate}/connection, segdl 64 connections "
             "vs aria2c 16 (its maximum)", big, Mirror(limit_rate=rate),
             (ToolSpec("segdl -x64", "segdl", ("-x", "64", "--max-connections", "64")), ARIA2C),
             (BURST_NOTE,)),
        Case("coll80", f"{coll.count} files x {coll.size // MiB} MiB at 4m/connection, "
             f"{j} files x {x} connections", coll, Mirror(limit_rate="4m"),
             (ToolSpec("segdl", "segdl", ("-j", str(j), "-x", str(x),
                                          "--max-connections", str(j * x))),
              ToolSpec("aria2c -i", "aria2c", ("-j", str(j), "-x", str(x), "-s", str(x), "-k1M"))),
             ("4m (not 20m) so the limit binds: a 32 MiB file in 4 ranges is 8 MiB per "
              "request, which a 20m limit would deliver entirely inside its one-second burst.",
              BURST_NOTE)),
        Case("small10k", f"{small.count:,} files x 1 MiB, unthrottled", small, Mirror(),
             (ToolSpec("segdl", "segdl", ("-j", "16", "--max-connections", "16")),
              ToolSpec("aria2c -i", "aria2c", ("-j", "16"))),
             timeout_scale=2.0),  # segdl needs ~20-30 ms per file: ~5 min for 10,000
        Case("tiny20k", f"{tiny.count:,} files x 4 KiB, unthrottled, 16 at a time", tiny, Mirror(),
             _many_files_tools(), (MANY_FILES_NOTE,), timeout_scale=2.0),
        Case("small2k", f"{small2k.count:,} files x 1 MiB, unthrottled, 16 at a time", small2k, Mirror(),
             _many_files_tools(), (MANY_FILES_NOTE,)),
        Case("sleep50", f"{big.size // MiB} MiB, 50 ms before every response", big,
             Mirror(echo_sleep_ms=50), (SEGDL, ARIA2C, CURL)),
    ]
    if not quick:
        cases.insert(9, Case("4g", "4 GiB, unthrottled (writeback-bound)",
                             Dataset("big-4g", 1, 4 * GiB), Mirror(), (SEGDL, ARIA2C, CURL, CURL_SYNC)))
    return {c.name: c for c in cases}


ALL_CASE_NAMES = ("1g", "paced-x16", "paced-x64", "1g-20m-x16", "1g-20m-x64", "coll80", "small10k", "tiny20k",
                  "small2k", "4g", "sleep50")
