"""Deterministic test files, generated once and cached under ``benchmarks/.data``.

A dataset is a directory of ``count`` files of ``size`` bytes named
``f00000.bin``, ``f00001.bin``, ...  The content of each file is the blake3
XOF output keyed by ``"<dataset>/<file name>"``: fast (GB/s), different for
every file and every offset (so offset or file mix-ups cannot hide), and
reproducible.  Because a file's content depends only on its own name, a
dataset can grow: the quick run uses the first 1,000 small files, the full
run adds the other 9,000.

``.manifest.json`` in each dataset directory records the size and blake3 of
every generated file; a file is reused when it is listed there and has the
right size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import blake3

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
_CHUNK = 8 * MiB
_MANIFEST = ".manifest.json"


@dataclass(frozen=True)
class Dataset:
    """``count`` files of ``size`` bytes served under ``/<name>/``."""

    name: str
    count: int
    size: int

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def names(self) -> list[str]:
        return [f"f{i:05d}.bin" for i in range(self.count)]

    def url_paths(self) -> list[str]:
        return [f"/{self.name}/{n}" for n in self.names()]

    # The three calls a runner makes on any dataset (reallinks.RepoDataset too).
    def expected(self, root: Path, log=print) -> dict[str, tuple[int, str]]:
        """Generate what is missing; ``{path in the output: (size, blake3 hex)}``."""
        return {n: (self.size, h) for n, h in ensure(root, self, log).items()}

    def missing(self, root: Path) -> int:
        return missing_bytes(root, self)

    def warm(self, root: Path) -> float:
        return warm_cache(root, self)


def _key(dataset: str, name: str) -> bytes:
    return blake3.blake3(f"segdl-bench/{dataset}/{name}".encode()).digest()


def _generate(path: Path, dataset: str, size: int) -> str:
    """Write one file (via a temp name, then rename); return its blake3 hex."""
    xof = blake3.blake3(key=_key(dataset, path.name))
    digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for offset in range(0, size, _CHUNK):
            block = xof.digest(length=min(_CHUNK, size - offset), seek=offset)
            digest.update(block)
            f.write(block)
    os.replace(tmp, path)
    return digest.hexdigest()


def _load_manifest(directory: Path, size: int) -> dict[str, str]:
    try:
        data = json.loads((directory / _MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("size") == size else {}


def _save_manifest(directory: Path, size: int, files: dict[str, str]) -> None:
    tmp = directory / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"size": size, "files": files}, indent=0, sort_keys=True))
    os.replace(tmp, directory / _MANIFEST)


def _valid(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def ensure(root: Path, ds: Dataset, log=print) -> dict[str, str]:
    """Make sure every file of ``ds`` exists under ``root/ds.name``.

    Returns ``{file name: blake3 hex}`` for the dataset's files.
    """
    directory = root / ds.name
    directory.mkdir(parents=True, exist_ok=True)
    files = _load_manifest(directory, ds.size)
    missing = [n for n in ds.names() if n not in files or not _valid(directory / n, ds.size)]
    if missing:
        log(f"  generating {len(missing)} x {ds.size / MiB:g} MiB in {directory}")
    for i, name in enumerate(missing):
        files[name] = _generate(directory / name, ds.name, ds.size)
        if (i + 1) % 500 == 0:
            _save_manifest(directory, ds.size, files)
    if missing:
        _save_manifest(directory, ds.size, files)
    return {n: files[n] for n in ds.names()}


def missing_bytes(root: Path, ds: Dataset) -> int:
    """Bytes ``ensure`` would still have to write for ``ds``."""
    directory = root / ds.name
    files = _load_manifest(directory, ds.size)
    return sum(ds.size for n in ds.names()
               if n not in files or not _valid(directory / n, ds.size))


def warm_cache(root: Path, ds: Dataset) -> float:
    """Read every file of ``ds`` once so nginx serves it from the page cache.

    Returns the seconds it took (a slow read means the cache was cold).
    """
    import time

    t0 = time.perf_counter()
    buf = bytearray(_CHUNK)
    for name in ds.names():
        with open(root / ds.name / name, "rb", buffering=0) as f:
            for _ in range(ds.size // _CHUNK + 2):
                if not f.readinto(buf):
                    break
    return time.perf_counter() - t0


def blake3_file(path: Path) -> str:
    """Hex blake3 of a file (multi-threaded, mmap)."""
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)
    if path.stat().st_size:
        h.update_mmap(str(path))
    return h.hexdigest()
