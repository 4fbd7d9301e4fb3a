"""What a job would fetch, before it starts: every file of a resolved list
(URLs, a manifest, an aria2 list, a hub listing) with its size and whether
it is here, partly here, missing, changed upstream or corrupt, and the free
space where it would go.  Nothing is downloaded; the journal is only read.

* ``here``, ``partial``, ``missing``: as :func:`~.hubs.presence.presence`
  says (the same answer ``segdl ls`` gives);
* ``changed``: the journal has the file done at its path, on disk as
  segdl left it, but the list names other content for it now (the hub's
  hash differs);
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
from ..rules.lifecycle import COMPLETE, HASH_MISMATCH
from ..inputs.naming import filename_from_url, inside
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


def review(journal, dest: Path, requests, collection: str | None) -> dict:
    """``journal``: an open (read-only) Journal."""
    # (A URL's file is named by its server when it arrives: until then, as
    # its URL names it, as the service and the terminal UI name it.)
    requests = [r if r.path else replace(r, path=filename_from_url(r.url) or "download") for r in requests]
    rows = journal.files_by_path([inside(dest, r.path) for r in requests])
    files = []
    for i, (req, p) in enumerate(zip(requests, presence(journal, dest, requests))):
        state = p.state
        row = rows.get(str(inside(dest, req.path)))
        if state != "here" and row is not None:
            if row["state"] == HASH_MISMATCH:
                state = "corrupt"
            elif row["state"] in COMPLETE and os.path.exists(row["path"]):
                # Done here, and not what the list names: the list names
                # other content (upstream changed), or the file is not as
                # segdl left it (changed on disk: damaged, or edited).
                state = "changed" if intact(row) else "corrupt"
        files.append({"index": i, "path": req.path, "url": p.url, "size": req.size, "hash": p.hash,
                      "state": state, "done": p.done, "where": p.where, "id": row["id"] if row else None})
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
