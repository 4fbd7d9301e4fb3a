"""What ``segdl ui`` was asked to download, as a job body for the engine
(``Service.add_job`` / ``POST /jobs``) and, for a collection, the picker's
entries: every sub-resource with its size and whether it is here, partly
here or missing (the presence ``segdl ls`` shows).  No Textual here."""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Entry:
    index: int  # in the job's requests: what ``select`` names
    path: str
    url: str
    size: int | None
    state: str  # here | partial | missing
    done: int  # bytes here


@dataclass(frozen=True, slots=True)
class Collection:
    title: str
    body: dict  # the job, without ``select``
    entries: tuple[Entry, ...]
    notes: tuple[str, ...] = ()  # what the listing said: a moved branch, a model that gives no file

    def job(self, selected: list[int]) -> dict:
        """The job of the chosen entries (all of them: no ``select``)."""
        if sorted(selected) == [e.index for e in self.entries]:
            return dict(self.body)
        return {**self.body, "select": sorted(selected)}


def _presence(journal_path: Path | None, dest: Path, requests) -> list:
    from segdl.engine.values.errors import SegdlError
    from segdl.engine.inputs.hubs.presence import presence
    from segdl.engine.journal.writer import Journal, default_path
    from segdl.engine.inputs.naming import filename_from_url

    named = [r if r.path else replace(r, path=filename_from_url(r.url) or r.url) for r in requests]
    p = Path(journal_path) if journal_path is not None else default_path()
    journal = None
    if p.exists():
        try:
            journal = Journal(p, readonly=True)
        except SegdlError:
            journal = None  # an older schema: nothing known, everything is missing
    try:
        return presence(journal, Path(os.path.realpath(dest)), named)  # as the service names them
    finally:
        if journal is not None:
            journal.close()


def _collection(title: str, body: dict, requests, dest: Path, journal_path: Path | None,
                notes: tuple[str, ...] = ()) -> Collection:
    states = _presence(journal_path, dest, requests)
    entries = tuple(Entry(i, p.path, p.url, p.size if p.size is not None else r.size, p.state, p.done)
                    for i, (p, r) in enumerate(zip(states, requests)))
    return Collection(title, body, entries, notes)


def _dest_field(dest: Path | None) -> dict:
    return {} if dest is None else {"dest": str(Path(dest).absolute())}


def from_urls(urls: list[str], dest: Path, journal_path: Path | None, *, attached: bool) -> Collection:
    from segdl.engine.values.request import Request

    body = {"urls": list(urls), **_dest_field(dest if attached else None)}
    return _collection(f"{len(urls)} URLs", body, [Request(u) for u in urls], dest, journal_path)


def input_body(path: Path) -> dict:
    """An input file as the engine takes it: a JSON manifest as JSON, an
    aria2 input file as its text (gzip-compressed files unpacked)."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    text = data.decode("utf-8-sig")
    if text.lstrip().startswith("{"):
        return {"manifest": json.loads(text)}
    return {"aria2": text}


def from_file(path: Path, dest: Path, journal_path: Path | None, *, attached: bool) -> Collection:
    from segdl.engine.inputs.manifest import load_input

    m = load_input(path)  # its errors say where, before anything starts
    body = {**input_body(path), **_dest_field(dest if attached else None)}
    return _collection(m.collection or str(path), body, list(m.requests), dest, journal_path)


def from_ref(ref: str, dest: Path, journal_path: Path | None, *, attached: bool, transfer=None) -> Collection:
    """A hub reference, listed as the engine lists it (the same options,
    so the indexes ``select`` names are the engine's)."""
    from segdl.engine.inputs.hubs import resolve
    from segdl.engine.inputs.hubs.listing import HubOptions

    listing = resolve(ref, HubOptions(dest=Path(dest).absolute(), transfer=transfer))
    body = {"ref": ref, **_dest_field(dest if attached else None)}
    notes = (*listing.notes, *(f"{p.what}: {p.error.message}" for p in listing.problems))
    return _collection(listing.collection or ref, body, list(listing.requests), Path(listing.dest), journal_path,
                       notes)
