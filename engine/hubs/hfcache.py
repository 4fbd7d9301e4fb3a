"""The Hugging Face cache's snapshot links and refs, made after a job
whose files were laid out as its blobs (``--hf-cache``)::

    models--org--name/blobs/{etag}
    models--org--name/snapshots/{commit}/{path} -> ../../blobs/{etag}
    models--org--name/refs/{revision}           (holds the commit)

so that huggingface_hub and transformers find them with
``local_files_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..naming import inside
from ..storage import disk_errors
from . import hf


def link_snapshot(root: Path, source: dict) -> int:
    """Link every blob of ``source`` that is here into its snapshot, and
    write the revision's ref once any is; returns how many paths are
    linked.  Each link and the ref are replaced atomically."""
    cache = source.get("hf_cache") or {}
    folder, commit, revision = cache.get("folder"), source.get("commit"), source.get("revision")
    if not folder or not commit:
        return 0
    linked = 0
    with disk_errors(f"cannot lay out the HF cache under {root}"):
        for path, etag in cache.get("links", ()):
            blob = inside(root, hf.blob_path(folder, etag))
            if not blob.is_file():
                continue  # not downloaded (failed): no link to a missing blob
            snap = inside(root, hf.snapshot_path(folder, commit, path))
            target = hf.blob_link(path, etag)
            linked += 1
            if snap.is_symlink() and os.readlink(snap) == target:
                continue
            snap.parent.mkdir(parents=True, exist_ok=True)
            tmp = snap.with_name(f".{snap.name}.segdl-link")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(target, tmp)
            os.replace(tmp, snap)
        if linked and revision and revision != commit:
            ref = inside(root, f"{folder}/refs/{revision}")
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_name(f".{ref.name}.segdl-ref")
            tmp.write_text(commit)
            os.replace(tmp, ref)
    return linked
