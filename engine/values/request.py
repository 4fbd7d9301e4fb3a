"""What the user asks for: files (sub-resources) and the job's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .messages import TransferOptions
from ..rules.ranges import DEFAULT_MIN_SEGMENT, DEFAULT_MIN_SPLIT, MiB
from ..rules.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class Request:
    """One file to download.

    ``path`` is relative to the job's destination folder; None means "name
    it from Content-Disposition or the URL".
    """

    url: str
    path: str | None = None
    blake3: str | None = None
    sha256: str | None = None
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    # The git blob sha1 (40 hex) a hub lists for a file it keeps in git,
    # not in LFS (Hugging Face): sha1 of b"blob SIZE\0" + content.
    git_sha1: str | None = None
    # Where this file's token comes from: "hf" (HF_TOKEN, ...) or
    # "env:NAME".  Only the name is kept anywhere; the token is read from
    # the environment when a request goes out (engine/hubs/tokens.py),
    # and sent as Authorization to the URL's own host only.
    credential: str | None = None
    hub: str = ""  # "hf", "civitai": whose error answers to read


@dataclass(frozen=True, slots=True)
class Settings:
    dest: Path = Path(".")
    connections: int = 16  # per file (-x)
    max_connections: int = 64  # for the whole job
    workers: int = 2
    concurrent_files: int = 5  # -j
    max_per_host: int = 0  # connections to one host; 0: max(connections, 32)
    min_segment: int = DEFAULT_MIN_SEGMENT
    min_split: int = DEFAULT_MIN_SPLIT
    checkpoint_bytes: int = 8 * MiB  # per worker: fdatasync at least every ...
    checkpoint_seconds: float = 0.5  # ... bytes or seconds
    # Seconds between synced journal commits (each makes every commit
    # before it durable): the recorded progress a power cut can lose.
    commit_interval: float = 1.0
    # Seconds between live numbers (speed, bytes) in the journal: status,
    # and the service's progress events.
    progress_interval: float = 1.0
    max_unsynced: int = 32 * MiB  # per worker: pause transfers beyond this much unsynced data
    # libcurl receive buffers, all connections together (libcurl hands the
    # write callback 16 KiB at a time whatever their size: larger ones only
    # cost memory).
    buffer_budget: int = 16 * MiB
    direct_io: bool = True  # O_DIRECT writes where the file system takes them
    # Per worker: written buffers kept ahead of the hash frontier (see
    # hashing.py); what does not fit is read back from disk to be hashed.
    hash_budget: int = 32 * MiB
    force: bool = False
    max_speed: int = 0  # bytes/s for the whole job; 0: unlimited
    max_file_speed: int = 0  # bytes/s per file; 0: unlimited
    journal: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transfer: TransferOptions = field(default_factory=TransferOptions)
    restart_limit: int = 3  # times a file may start over (remote changed, range ignored)
    # Keep header values in the journal, so ``segdl resume``/``retry`` send
    # them again.  Off by default: any header may carry a secret.
    keep_headers: bool = False


# ------------------------------------------------------------ re-running

def _header_name(header: str) -> str:
    return header.partition(":")[0].strip()


def job_spec(requests: list[Request], s: Settings) -> dict:
    """What the journal keeps to run a job again (``segdl resume``,
    ``segdl retry``): the requests and the settings that shape the download.

    Header values are kept only with ``keep_headers``: a header of any name
    may carry a token, and the journal is a plain file.  Otherwise only
    their names are kept, so a re-run can say what it lacks."""

    def headers(hs: tuple[str, ...]) -> dict:
        return {"headers": list(hs)} if s.keep_headers else {"header_names": [_header_name(h) for h in hs]}

    def entry(r: Request) -> dict:
        # Only what a request has (request_from_spec reads the rest as
        # absent): for 100,000 files of a URL and a path each, 7.9 MB of
        # JSON instead of 14.6, made and dumped in about half the time.
        e = {k: v for k, v in (("url", r.url), ("path", r.path), ("size", r.size)) if v is not None}
        e.update((k, v) for k, v in (("blake3", r.blake3), ("sha256", r.sha256), ("git_sha1", r.git_sha1),
                                     ("credential", r.credential), ("hub", r.hub)) if v)
        if r.mirrors:
            e["mirrors"] = list(r.mirrors)
        if r.headers:
            e.update(headers(r.headers))
        return e

    t = s.transfer
    return {
        "requests": [entry(r) for r in requests],
        "settings": {
            "connections": s.connections, "workers": s.workers, "concurrent_files": s.concurrent_files,
            "max_connections": s.max_connections, "max_per_host": s.max_per_host,
            "max_speed": s.max_speed, "max_file_speed": s.max_file_speed,
            "retries": s.retry.max_attempts, "stall_timeout": t.stall_timeout,
            "insecure": t.insecure, "ca_cert": t.ca_cert, "keep_headers": s.keep_headers,
            **({"location_trusted": True} if t.location_trusted else {}),
            **headers(t.headers),
        },
    }


def settings_from_spec(spec: dict, *, headers: tuple[str, ...] = (), **given) -> Settings:
    """Settings to run a job again from its :func:`job_spec` (journals
    written before a key existed get the default); ``headers`` are added to
    the kept ones, ``given`` overrides the rest (dest, journal, workers)."""
    st = spec.get("settings", {})
    d = Settings()
    transfer = TransferOptions(
        headers=tuple(st.get("headers", ())) + tuple(headers),
        stall_timeout=st.get("stall_timeout", d.transfer.stall_timeout),
        insecure=st.get("insecure", False), ca_cert=st.get("ca_cert"),
        location_trusted=bool(st.get("location_trusted", False)),
    )
    fields = {k: st[k] for k in ("connections", "workers", "concurrent_files", "max_connections",
                                 "max_per_host", "max_speed", "max_file_speed", "keep_headers")
              if st.get(k) is not None}
    retry = RetryPolicy(max_attempts=st["retries"]) if st.get("retries") is not None else d.retry
    return Settings(**{**fields, "retry": retry, "transfer": transfer, **given})


def request_from_spec(entry: dict, **fields) -> Request:
    """The request a :func:`job_spec` entry describes (``fields`` override)."""
    base = dict(url=entry["url"], path=entry.get("path"), blake3=entry.get("blake3"),
                sha256=entry.get("sha256"), mirrors=tuple(entry.get("mirrors") or ()),
                headers=tuple(entry.get("headers") or ()), size=entry.get("size"),
                git_sha1=entry.get("git_sha1"), credential=entry.get("credential"), hub=entry.get("hub") or "")
    return Request(**{**base, **fields})


def missing_headers(spec: dict, given: tuple[str, ...] = ()) -> list[str]:
    """Names of headers the job was started with whose values the journal
    did not keep and that ``given`` does not supply again."""
    have = {_header_name(h).lower() for h in given}
    names = list(spec.get("settings", {}).get("header_names", ()))
    for r in spec.get("requests", ()):
        names += r.get("header_names", ())
    out: list[str] = []
    for n in names:
        if n.lower() not in have:
            have.add(n.lower())
            out.append(n)
    return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """What an input file asks for: an optional collection name (a label
    for the job in the journal) and the files, in file order."""

    collection: str | None
    requests: tuple[Request, ...]
