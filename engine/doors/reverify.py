"""Check finished files against the journal again: ``segdl verify`` and the
web page's "re-verify" both come here.

Each file the journal has done (or skipped, because it was here) is hashed
again at disk speed (:func:`~.verify.digest_file`: blake3 on every core,
through a sliding memory map) and compared with the digest the journal
recorded when it was verified:

* ``ok``: same bytes;
* ``corrupt``: other bytes (or another size);
* ``missing``: no file at its path;
* ``unchecked``: the journal has no digest for it (nothing to compare).

:func:`record` writes what was found: a corrupt file is moved aside
(``NAME.corrupt``), and a corrupt or missing file becomes
``hash_mismatch`` with an error saying so, so ``segdl retry`` (or the
page's retry, ``POST /retry``) fetches it again; every file checked keeps
what was found and when (``checked``, ``checked_at``: until it is
downloaded again).  Choosing, hashing and recording are apart, so the service
hashes off its loop and records on it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..disk.confine import Root
from ..values.errors import StorageError, UnsafePathError
from ..rules.lifecycle import COMPLETE, HASH_MISMATCH
from .validation import an_id, listing
from ..disk.verify import digest_file, same_digest

OK, CORRUPT, MISSING, UNCHECKED = "ok", "corrupt", "missing", "unchecked"
REQUEST = {"ids": listing(an_id, 10000)}  # POST /verify


@dataclass(frozen=True, slots=True)
class Outcome:
    id: int
    path: str
    result: str  # ok | corrupt | missing | unchecked
    detail: str = ""
    dest: str | None = None  # its job's folder (not shown)

    def as_dict(self) -> dict:
        out = asdict(self)
        del out["dest"]
        return out


def finished(journal) -> list[dict]:
    """Every finished file in the journal, with its job's collection."""
    jobs = {j["id"]: j for j in journal.all_jobs()}
    return [{**r, "collection": jobs[r["job_id"]]["collection"] if r["job_id"] in jobs else None,
             "dest": jobs[r["job_id"]]["dest"] if r["job_id"] in jobs else None}
            for r in journal.find_files(states=tuple(COMPLETE))]


def choose(rows: list[dict], targets: list[str]) -> list[dict]:
    """The finished files among ``rows`` (the journal's) that ``targets``
    name: a collection's name, a file's path, or a folder holding files
    (paths resolved from here).  No targets: every finished file.  Raises
    LookupError naming a target that matches nothing."""
    done = [r for r in rows if r["state"] in COMPLETE]
    if not targets:
        return done
    out: dict[int, dict] = {}
    by_collection: dict[str, list[dict]] = {}
    for r in done:
        if r.get("collection"):
            by_collection.setdefault(r["collection"], []).append(r)
    for t in targets:
        hits = list(by_collection.get(t, []))
        if not hits:
            p = Path(os.path.abspath(t))
            hits = [r for r in done if Path(r["path"]) == p or Path(r["path"]).is_relative_to(p)]
        if not hits:
            raise LookupError(f"no finished file or collection matches {t!r}")
        out.update((r["id"], r) for r in hits)
    return [out[k] for k in sorted(out)]


def check(row: dict) -> Outcome:
    """Hash one finished file again and compare it with its row."""
    path = row["path"]
    if not os.path.isfile(path):
        return Outcome(row["id"], path, MISSING, "no file at its path")
    if not row.get("blake3"):
        return Outcome(row["id"], path, UNCHECKED, "the journal has no digest for it")
    size = os.path.getsize(path)
    if row.get("size") is not None and size != row["size"]:
        return Outcome(row["id"], path, CORRUPT, f"{size} bytes, the journal says {row['size']}", row.get("dest"))
    try:
        got = digest_file(Path(path)).blake3
    except StorageError as e:
        return Outcome(row["id"], path, MISSING, e.message)
    if not same_digest(row["blake3"], got):
        return Outcome(row["id"], path, CORRUPT, f"blake3 {got[:16]}..., the journal says {row['blake3'][:16]}...",
                       row.get("dest"))
    return Outcome(row["id"], path, OK)


def record(journal, outcomes: list[Outcome]) -> int:
    """Write the outcomes to the journal (one transaction): each file's
    ``checked`` and ``checked_at``, and a bad one becomes
    ``hash_mismatch``, which retry fetches again.  A corrupt file is first
    moved aside to ``NAME.corrupt`` (nothing is deleted), so the fetch can
    put the good one in its place.  Returns how many files were bad."""
    bad = [o for o in outcomes if o.result in (CORRUPT, MISSING)]
    notes = {o.id: _move_aside(o.path, o.dest) if o.result == CORRUPT else "" for o in bad}
    now = time.time()
    with journal.atomic():
        for o in outcomes:
            if o.result == UNCHECKED:
                continue
            if o.id in notes:
                journal.update_file(o.id, state=HASH_MISMATCH, checked=o.result, checked_at=now,
                                    error=f"{o.result} on disk (verify): {o.detail}{notes[o.id]}")
            else:
                journal.update_file(o.id, checked=o.result, checked_at=now)
    return len(bad)


def _move_aside(path: str, dest: str | None) -> str:
    """Rename the file to NAME.corrupt in its folder, reached from its
    job's folder (confine.Root): a folder swapped for a symlink since the
    download cannot move a file elsewhere."""
    root = Root(dest or os.path.dirname(path))
    try:
        folder = root.folder(Path(path).parent)
    except (UnsafePathError, OSError) as e:
        return f"; left in place ({getattr(e, 'message', None) or e.strerror})"
    try:
        name = os.path.basename(path)
        aside, n = f"{name}.corrupt", 1
        while _exists_at(folder, aside):
            aside, n = f"{name}.corrupt.{n}", n + 1
        os.rename(name, aside, src_dir_fd=folder, dst_dir_fd=folder)
    except OSError as e:
        return f"; left in place ({e.strerror})"
    finally:
        os.close(folder)
        root.close()
    return f"; moved aside to {aside}"


def _exists_at(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts = {OK: 0, CORRUPT: 0, MISSING: 0, UNCHECKED: 0}
    for o in outcomes:
        counts[o.result] += 1
    return counts
