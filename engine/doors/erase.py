"""Deleting a file together with its journal entry (``DELETE
/files/{id}?erase=true``, the page's Library): its bytes on disk (the
file, and its part file) and its row, which goes with a ``removed`` event
that says ``deleted``.  A running or queued file is cancelled first, and
a job that has not ended stops asking for it (a restarted service would
fetch it again otherwise).

Only under one of the service's roots, and only as :class:`~..disk.confine.Root`
reaches it: the file's folder is opened beneath the root (a folder on the
way that is a symbolic link leading out is refused by the kernel), then
each name is unlinked in that folder's descriptor, so a link in place of
the file goes, never what it points to.  Anything refused changes nothing:
the folder is opened before the file is cancelled, and the row goes only
once its bytes have.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from ..disk.confine import Root
from ..disk.storage import disk_errors
from ..inputs.naming import part_path
from ..values.errors import ConflictError, UnsafePathError


def root_of(path: Path, roots: list[Path]) -> Path:
    """The root ``path`` lies under, by name (the row's absolute path);
    ConflictError when none."""
    for root in roots:
        if Path(os.path.abspath(path)).is_relative_to(root):
            return root
    raise ConflictError(f"{path} is not under this service's folders ({', '.join(map(str, roots))}): "
                        "nothing deleted")


def erase(commands, journal, fid: int, roots: list[Path]) -> dict:
    """Run on the engine's loop: cancel ``fid`` if it runs, delete its file
    and part file, then its row.  Returns ``{"id", "deleted": [NAMES]}``."""
    row = journal.file(fid)
    if row is None:
        raise LookupError(f"no file {fid}")
    path = Path(row["path"])
    root = Root(root_of(path, roots))
    try:
        folder = _folder(root, path)
        try:
            if commands.running(fid):
                commands.cancel(fid, keep_partial=True)  # (its part file goes below, from the checked folder)
            deleted = [name for name in (path.name, part_path(path).name)
                       if folder is not None and _unlink(folder, name, path)]
            with journal.atomic():
                _unrequest(journal, row)
                journal.delete_file(fid)
        finally:
            if folder is not None:
                os.close(folder)
    finally:
        root.close()
    return {"id": fid, "deleted": deleted}


def _unrequest(journal, row: dict) -> None:
    """A job that has not ended stops asking for the file: a restarted
    service continues such a job with the requests that have no final row
    yet, and would fetch an erased file again."""
    job = journal.job(row["job_id"]) if row["job_id"] is not None else None
    if job is None or job["state"] == "finished":
        return
    dest = Path(job["dest"])

    def names_it(entry: dict) -> bool:
        if entry.get("url") != row["url"]:
            return False
        return not entry.get("path") or os.path.abspath(dest / entry["path"]) == os.path.abspath(row["path"])

    requests = job["spec"].get("requests", [])
    kept = [e for e in requests if not names_it(e)]
    if len(kept) != len(requests):
        journal.set_job_spec(job["id"], {**job["spec"], "requests": kept})


def _folder(root: Root, path: Path) -> int | None:
    """The descriptor of the file's folder, beneath ``root``; None when
    the folder is gone (nothing on disk to delete)."""
    try:
        return root.folder(path.parent)
    except FileNotFoundError:
        return None
    except UnsafePathError as e:
        raise ConflictError(f"nothing deleted: {e.message}") from None
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            return None
        with disk_errors(f"cannot open the folder of {path}"):
            raise


def _unlink(folder: int, name: str, shown: Path) -> bool:
    """Unlink ``name`` in ``folder`` (a link itself, never its target);
    False when there is nothing by that name."""
    with disk_errors(f"cannot delete {shown.parent / name}"):
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            raise ConflictError(f"{shown.parent / name} is a folder: segdl deletes only the files it wrote")
        os.unlink(name, dir_fd=folder)
        return True
