"""Progress snapshots the coordinator emits and a UI renders."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FileProgress:
    id: int
    path: str
    url: str
    state: str
    size: int | None
    done: int  # bytes received so far (including earlier runs)
    speed: float  # bytes/s, smoothed
    connections: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    files: tuple[FileProgress, ...]
    finished: int  # files in a final state
    total_files: int
    speed: float
    elapsed: float
    done: int = 0  # bytes on disk, all files of the job (finished ones included)
    size: int = 0  # bytes of all files whose size is known so far
