"""Digests of finished files: blake3 (multithreaded, memory-mapped) and
sha256 when a source publishes one."""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import blake3

from .storage import disk_errors


@dataclass(frozen=True, slots=True)
class Digests:
    blake3: str
    sha256: str | None
    git_sha1: str | None = None  # sha1 of b"blob SIZE\0" + content (a git blob id)


_WINDOW = 16 * 1024 * 1024


def digest_file(path: Path, *, sha256: bool = False, git_sha1: bool = False) -> Digests:
    """blake3 (and sha256) of a file, through a sliding memory map.

    blake3 hashes each 16 MiB window on all cores with the GIL released;
    mapping a window at a time (rather than the whole file) keeps the
    resident set flat however large the file is, and avoids copying every
    byte through read().
    """
    with disk_errors(f"cannot read {path} to verify it"):
        h = blake3.blake3(max_threads=blake3.blake3.AUTO)
        sh = hashlib.sha256() if sha256 else None
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            g = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False) if git_sha1 else None
            for offset in range(0, size, _WINDOW):
                n = min(_WINDOW, size - offset)
                with mmap.mmap(f.fileno(), n, prot=mmap.PROT_READ, offset=offset) as window:
                    window.madvise(mmap.MADV_SEQUENTIAL)
                    h.update(window)
                    if sh is not None:
                        sh.update(window)
                    if g is not None:
                        g.update(window)
        return Digests(h.hexdigest(), sh.hexdigest() if sh is not None else None,
                       g.hexdigest() if g is not None else None)


def digest_bytes(data: bytes, *, sha256: bool = False, git_sha1: bool = False) -> Digests:
    """The digests of a whole file held in memory (a small file its probe
    carried), as :func:`digest_file` gives them."""
    return Digests(_blake3_of(data), hashlib.sha256(data).hexdigest() if sha256 else None,
                   hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
                   if git_sha1 else None)


#: blake3, as hashlib, lets go of the GIL for 2 KiB or more at once;
#: taking it back on the engine's loop costs more than hashing a small
#: file (4 KiB: 3 us to hash, tens of us to take the GIL back from the
#: probe thread).  Up to this size a file is hashed in pieces that keep it.
_KEEP_GIL_BELOW = 64 * 1024
_PIECE = 2047


def _blake3_of(data: bytes) -> str:
    if len(data) <= _PIECE or len(data) >= _KEEP_GIL_BELOW:
        return blake3.blake3(data).hexdigest()
    h, view = blake3.blake3(), memoryview(data)
    for i in range(0, len(view), _PIECE):
        h.update(view[i:i + _PIECE])
    return h.hexdigest()


def same_digest(expected: str | None, actual: str | None) -> bool:
    if expected is None:
        return True
    if actual is None:
        return False
    return hmac.compare_digest(expected.strip().lower(), actual.lower())
