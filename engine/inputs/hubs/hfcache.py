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

from ...disk.confine import Root
from ...values.errors import UnsafePathError
from ..naming import inside
from ...disk.storage import disk_errors
from . import hf


def link_snapshot(root: Path, source: dict) -> int:
    """Link every blob of ``source`` that is here into its snapshot, and
    write the revision's ref once any is; returns how many paths are
    linked.  Each link and the ref are replaced atomically, under ``root``
    and never through a symlink that leads out of it (confine.py): a path
    that would is refused (UnsafePathError, once the others are linked)."""
    cache = source.get("hf_cache") or {}
    folder, commit, revision = cache.get("folder"), source.get("commit"), source.get("revision")
    if not folder or not commit:
        return 0
    tree = Root(root)
    linked, refused = 0, []
    try:
        with disk_errors(f"cannot lay out the HF cache under {root}"):
            for path, etag in cache.get("links", ()):
                try:
                    if not _is_blob(tree, inside(root, hf.blob_path(folder, etag))):
                        continue  # not downloaded (failed): no link to a missing blob
                    _link(tree, inside(root, hf.snapshot_path(folder, commit, path)), hf.blob_link(path, etag))
                    linked += 1
                except UnsafePathError as e:
                    refused.append(e)
            if linked and revision and revision != commit:
                _write_ref(tree, inside(root, f"{folder}/refs/{revision}"), commit)
    finally:
        tree.close()
    if refused:
        raise UnsafePathError(f"{len(refused)} snapshot link(s) not made: {refused[0].message}")
    return linked


def _is_blob(tree: Root, blob: Path) -> bool:
    try:
        fd, _ = tree.open_file(blob, os.O_RDONLY | os.O_NONBLOCK)  # (a FIFO there must not block)
    except FileNotFoundError:
        return False
    os.close(fd)
    return True


def _link(tree: Root, snap: Path, target: str) -> None:
    dfd = tree.folder(snap.parent, create=True)
    try:
        try:
            if os.readlink(snap.name, dir_fd=dfd) == target:
                return
        except OSError:
            pass  # not there, or not a link
        tmp = f".{snap.name}.segdl-link"
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp, dir_fd=dfd)
        os.replace(tmp, snap.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def _write_ref(tree: Root, ref: Path, commit: str) -> None:
    dfd = tree.folder(ref.parent, create=True)
    try:
        tmp = f".{ref.name}.segdl-ref"
        try:
            os.unlink(tmp, dir_fd=dfd)  # whatever is there (a link to elsewhere) is not written through
        except FileNotFoundError:
            pass
        fd, _ = tree.open_at(dfd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with os.fdopen(fd, "w") as f:
            f.write(commit)
        os.replace(tmp, ref.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)
