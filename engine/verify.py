"""Digests of finished files: blake3 (multithreaded, memory-mapped) and
sha256 when a source publishes one."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import blake3

from .storage import disk_errors


@dataclass(frozen=True, slots=True)
class Digests:
    blake3: str
    sha256: str | None


_BLOCK = 32 * 1024 * 1024


def digest_file(path: Path, *, sha256: bool = False) -> Digests:
    """blake3 (and sha256) of a file, read in large blocks.

    Reading into one reused buffer keeps memory flat (an mmap of a 20 GB
    file would show up as 20 GB of RSS); blake3 hashes each block on all
    cores, and the GIL is released while it does.
    """
    with disk_errors(f"cannot read {path} to verify it"):
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        sh = hashlib.sha256() if sha256 else None
        buf = bytearray(_BLOCK)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                chunk = view[:n]
                h.update(chunk)
                if sh is not None:
                    sh.update(chunk)
        return Digests(h.hexdigest(), sh.hexdigest() if sh is not None else None)


def same_digest(expected: str | None, actual: str | None) -> bool:
    if expected is None:
        return True
    if actual is None:
        return False
    return hmac.compare_digest(expected.strip().lower(), actual.lower())
