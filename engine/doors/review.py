"""What a job would fetch, before it starts: every file of a resolved list
(URLs, a manifest, an aria2 list, a hub listing) with its size and whether
it is here, partly here, missing, changed upstream or corrupt, and the free
space where it would go.  Nothing is downloaded; the journal is only read.

* ``here``, ``partial``, ``missing``: as :func:`~.hubs.presence.presence`
  says (the same answer ``segdl ls`` gives);
* ``changed``: the journal has the file done at its path, but the list
  names other content for it now (the hub's hash differs);
* ``corrupt``: the journal's last word on the file at its path is that its
  bytes did not match (``hash_mismatch``, also what ``segdl verify``
  records for a file damaged on disk).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from ..inputs.hubs.presence import presence
from ..rules.lifecycle import COMPLETE, HASH_MISMATCH
from ..inputs.naming import filename_from_url, inside
from .validation import JOB

REVIEW = {k: JOB[k] for k in ("urls", "manifest", "aria2", "ref", "dest", "collection")}  # POST /review


def review(journal, dest: Path, requests, collection: str | None) -> dict:
    """``journal``: an open (read-only) Journal."""
    # (A URL's file is named by its server when it arrives: until then, as
    # its URL names it, as the service and the terminal UI name it.)
    requests = [r if r.path else replace(r, path=filename_from_url(r.url) or "download") for r in requests]
    files = []
    for i, (req, p) in enumerate(zip(requests, presence(journal, dest, requests))):
        state = p.state
        if state != "here":
            row = journal.file_by_path(inside(dest, req.path))
            if row is not None and row["state"] == HASH_MISMATCH:
                state = "corrupt"
            elif row is not None and row["state"] in COMPLETE and p.hash and os.path.exists(row["path"]):
                state = "changed"
        files.append({"index": i, "path": req.path, "url": p.url, "size": req.size, "hash": p.hash,
                      "state": state, "done": p.done, "where": p.where})
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
