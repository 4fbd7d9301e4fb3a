"""The Python API: a few calls, the CLI is a thin layer over them.

    from segdl.engine import download, Request, Settings
    results = download([Request(url)], Settings(dest=Path("models")))
    for r in results.errors: print(r.path, r.error)
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from ..run.coordinator import Coordinator
from ..journal.writer import Journal
from ..rules.lifecycle import COMPLETE, FAILURES
from ..rules.progress import Snapshot
from ..values.request import Request, Settings, request_from_spec
from ..values.results import FileResult, Results


def download(
    requests: "Iterable[Request | str] | Manifest | str | os.PathLike",
    settings: Settings | None = None,
    *,
    collection: str | None = None,
    on_progress: Callable[[Snapshot], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    source: dict | None = None,
) -> Results:
    """Download every request; one file's failure never stops the others.

    ``requests``: Request objects or URLs, a :class:`Manifest`, or the path
    of a JSON manifest / aria2 input file.

    ``on_result`` is called with each file's result as soon as it is final
    (in the order files end).  ``source``: what the requests were resolved
    from (a hub reference, the commit it is pinned to), kept in the
    journal with the job (see :mod:`segdl.engine.inputs.hubs`).

    Returns one :class:`FileResult` per request, in order.  Raises only for
    job-wide trouble (an unusable journal, a crashed worker).
    """
    from ..inputs.manifest import Manifest, load_input

    if isinstance(requests, (str, os.PathLike)) and not str(requests).startswith(("http://", "https://")):
        requests = load_input(requests)  # a manifest or aria2 input file
    if isinstance(requests, Manifest):
        collection = collection or requests.collection
        requests = requests.requests
    elif isinstance(requests, str):
        requests = [requests]
    settings = settings or Settings()
    settings = replace(settings, dest=Path(os.path.abspath(settings.dest)))
    reqs = [Request(r) if isinstance(r, str) else r for r in requests]
    journal = Journal(settings.journal)
    try:
        return Coordinator(settings, journal, on_progress=on_progress, on_message=on_message,
                           on_result=on_result).run(
            reqs, collection=collection, source=source
        )
    finally:
        journal.close()


def unfinished(journal_path: Path | None = None) -> list[tuple[Path, list[Request], dict, str | None]]:
    """Jobs in the journal with files not yet done: (dest, requests, settings, collection)."""
    return _rerunnable(journal_path, lambda state: state not in COMPLETE)


def failed(journal_path: Path | None = None, collection: str | None = None):
    """Failed files in the journal, grouped by job: (dest, requests, settings, collection)."""
    return _rerunnable(journal_path, lambda state: state in FAILURES, collection)


def _rerunnable(journal_path: Path | None, wanted: Callable[[str], bool], collection: str | None = None):
    """Requests to run again, rebuilt from the journal: each job's files in a
    ``wanted`` state, with the mirrors, headers (if kept) and settings the
    job was started with.  Returns (dest, requests, spec, collection) per
    job; :func:`~segdl.engine.values.request.settings_from_spec` turns the spec
    into Settings, with the speed limits last set by ``segdl limit``."""
    journal = Journal(journal_path)
    try:
        out = []
        for job in journal.all_jobs():
            if collection is not None and job["collection"] != collection:
                continue
            spec = job["spec"]
            settings = dict(spec.get("settings", {}))
            for k in ("max_speed", "max_file_speed"):
                if job.get(k) is not None:
                    settings[k] = job[k]
            spec = {**spec, "settings": settings}
            dest = Path(job["dest"])
            entries = {r["url"]: r for r in spec.get("requests", [])}
            reqs = []
            for f in journal.files(job["id"]):
                if not wanted(f["state"]):
                    continue
                p = Path(f["path"])
                rel = str(p.relative_to(dest)) if p.is_relative_to(dest) else None
                reqs.append(request_from_spec(entries.get(f["url"], {"url": f["url"]}), url=f["url"], path=rel,
                                              blake3=f["expected_blake3"], sha256=f["expected_sha256"],
                                              git_sha1=f.get("expected_git_sha1")))
            if reqs:
                out.append((dest, reqs, spec, job["collection"]))
        return out
    finally:
        journal.close()


__all__ = ["download", "unfinished", "failed", "FileResult", "Request", "Results", "Settings"]
