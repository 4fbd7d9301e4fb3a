"""What the user asks for: files (sub-resources) and the job's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .messages import TransferOptions
from .ranges import DEFAULT_MIN_SEGMENT, DEFAULT_MIN_SPLIT, MiB
from .retry import RetryPolicy


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
    checkpoint_bytes: int = 16 * MiB  # per worker: fdatasync at least every ...
    checkpoint_seconds: float = 0.5  # ... bytes or seconds
    max_unsynced: int = 64 * MiB  # per worker: pause transfers beyond this much unsynced data
    buffer_budget: int = 96 * MiB  # libcurl receive buffers, all connections together
    force: bool = False
    max_speed: int = 0  # bytes/s for the whole job; 0: unlimited
    max_file_speed: int = 0  # bytes/s per file; 0: unlimited
    journal: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    transfer: TransferOptions = field(default_factory=TransferOptions)
    restart_limit: int = 3  # times a file may start over (remote changed, range ignored)
