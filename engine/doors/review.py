"""What a job would fetch, before it starts: every file of a resolved list
(URLs, a manifest, an aria2 list, a hub listing) with its size and whether
it is here, partly here, missing, changed upstream or corrupt, and the free
space where it would go.  Nothing is downloaded; the journal is only read.

* ``here``, ``partial``, ``missing``: as :func:`~.hubs.presence.presence`
  says (the same answer ``segdl ls`` gives);
* ``changed``: the journal has the file done at its path, on disk as
  segdl left it, but the list names other content for it now (the hub's
  hash differs), or its server does (a plain URL's probe: another size,
  ETag or Last-Modified than the journal recorded);
* ``unavailable``: its probe failed (a 404, a refused connection), with
  ``error`` saying why;
* ``corrupt``: the journal's last word on the file at its path is that its
  bytes did not match (``hash_mismatch``, also what ``segdl verify``
  records for a file damaged on disk), or the journal has it done but the
  file on disk is not as segdl left it (another size or mtime).

Each file also names its journal row (``id``, or null): the page's
Library marks its rows by it.  A job of the journal is reviewed again by
its id (:func:`job_input`): a hub job against the hub's listing now, so
what changed upstream since shows as ``changed``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from ..inputs.hubs.presence import intact, presence
from ..rules.http import why_changed
from ..rules.lifecycle import COMPLETE, HASH_MISMATCH
from ..inputs.naming import inside
from ..values.errors import SegdlError
from ..values.request import request_from_spec
from .validation import JOB, FieldError, an_id

REVIEW = {**{k: JOB[k] for k in ("urls", "manifest", "aria2", "ref", "dest", "collection")},
          "job": an_id}  # POST /review


def job_input(body: dict, job: dict | None) -> tuple[str | None, list]:
    """What ``{"job": ID}`` reviews: the job's hub reference (to resolve
    again: the listing now), or else the requests it recorded.  ``job``:
    its journal row, or None (LookupError).  Returns (ref, requests)."""
    if len(body) > 1:
        raise FieldError(sorted(set(body) - {"job"})[0], "job reviews a job of the journal again: it goes alone")
    if job is None:
        raise LookupError(f"no job {body['job']}")
    ref = (job["spec"].get("source") or {}).get("ref")
    if ref:
        return ref, []
    return None, [request_from_spec(e) for e in job["spec"].get("requests", [])]


#: URLs of unknown size a review asks their server about (one small
#: ranged GET each, as a download's first request), at most, and for at
#: most this long in all: a longer list is reviewed with those sizes unknown.
PROBE_MOST = 2000
PROBE_SECONDS = 20.0


def unknown_sizes(requests) -> list[str]:
    """The URLs a review probes: those of files whose size the list does
    not give, not from a hub (a hub's listing gives sizes, and its files
    need its token), at most :data:`PROBE_MOST`."""
    urls = list(dict.fromkeys(r.url for r in requests if r.size is None and not r.hub and not r.credential))
    return urls if len(urls) <= PROBE_MOST else []


def review(journal, dest: Path, requests, collection: str | None, probed: dict | None = None) -> dict:
    """``journal``: an open (read-only) Journal.  ``probed``: what a probe
    of some URLs found (RemoteInfo, or the SegdlError that stopped it):
    their size, the name their server gives (as the download would name
    the file), or why they cannot be fetched (``unavailable``)."""
    from ..inputs.naming import choose_name

    probed = probed or {}
    found = [probed.get(r.url) for r in requests]
    # (A URL's file is named by its server when it arrives: as its probe
    # found, else as its URL names it, as the service and the UI name it.)
    requests = [r if r.path else replace(r, path=choose_name(r.url, getattr(f, "filename", None), None) or "download")
                for r, f in zip(requests, found)]
    requests = [replace(r, size=f.size) if r.size is None and getattr(f, "size", None) is not None else r
                for r, f in zip(requests, found)]
    rows = journal.files_by_path([inside(dest, r.path) for r in requests])
    files = []
    for i, (req, p, f) in enumerate(zip(requests, presence(journal, dest, requests), found)):
        state = p.state
        row = rows.get(str(inside(dest, req.path)))
        error = None
        if isinstance(f, SegdlError) and not f.retryable and state != "here":
            state, error = "unavailable", f.message  # (a slow or flaky server: not judged here)
        elif state == "here" and row is not None and f is not None and not isinstance(f, SegdlError) \
                and why_changed(row, f):
            state = "changed"  # its server has other content now (size, ETag, Last-Modified): as a rerun would see
        elif state != "here" and row is not None:
            if row["state"] == HASH_MISMATCH:
                state = "corrupt"
            elif row["state"] in COMPLETE and os.path.exists(row["path"]):
                # Done here, and not what the list names: the list names
                # other content (upstream changed), or the file is not as
                # segdl left it (changed on disk: damaged, or edited).
                state = "changed" if intact(row) else "corrupt"
        files.append({"index": i, "path": req.path, "url": p.url, "size": req.size, "hash": p.hash,
                      "state": state, "done": p.done, "where": p.where, "id": row["id"] if row else None,
                      "error": error})
    known = [f["size"] for f in files if f["size"] is not None]
    return {"dest": str(dest), "collection": collection, "free": free_space(dest), "files": files,
            "total": sum(known), "unknown_sizes": len(files) - len(known)}


def free_space(dest: Path) -> int | None:
    """Bytes free for this user in ``dest``, or in the nearest folder above
    it that exists (it may not be made yet)."""
    path = Path(dest)
    while True:
        try:
            return shutil.disk_usage(path).free
        except OSError:
            if path.parent == path:
                return None
            path = path.parent
