"""The local disk: preallocated part files, positioned writes, batched
fdatasync, and the final rename.  ``OSError`` becomes :class:`StorageError`
here and nowhere else."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import StorageError
from .naming import PART_SUFFIX


@contextmanager
def disk_errors(what: str):
    try:
        yield
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise StorageError(f"{what}: no space left on device") from e
        if e.errno == errno.EDQUOT:
            raise StorageError(f"{what}: disk quota exceeded") from e
        raise StorageError(f"{what}: {e.strerror or e}") from e


def make_dirs(folder: Path) -> None:
    """``mkdir -p``, durably: each folder created here is fsynced into its
    parent, top down.  Without it a power cut can take a new folder away
    with every file in it, however well each file was synced (found by the
    forgetful filesystem of tests/forgetfs.py)."""
    missing = []
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
            continue  # another process made it; it syncs it
        fsync_dir(d.parent)


def prepare(part: Path, size: int | None, *, keep: bool) -> None:
    """Create ``part`` and reserve ``size`` bytes for it.

    ``keep``: an existing part file of the right size is resumed as it is.
    Anything else starts empty.  Space is reserved with posix_fallocate, so
    a full disk is found now, not half-way through the download.

    No fsync here: the journal claims no byte of this file until an
    fdatasync of its data (which also persists its size), and a worker's
    syncer fsyncs the folder (the part file's name) before it reports the
    file's first bytes durable (staging.Syncer).
    """
    with disk_errors(f"cannot create {part}"):
        make_dirs(part.parent)
        flags = os.O_RDWR | os.O_CREAT
        fd = os.open(part, flags, 0o644)
        try:
            current = os.fstat(fd).st_size
            if not keep or (size is not None and current != size):
                os.ftruncate(fd, 0)
            if size:
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as e:
                    if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                        raise
                    os.ftruncate(fd, size)  # a filesystem without fallocate
        finally:
            os.close(fd)


def lock_part(part: Path) -> int:
    """Take ``part`` for this process: an exclusive ``flock`` on it, held
    through the returned descriptor until :func:`unlock`.  Two segdl
    processes (two terminals, a nightly sync overlapping the last one)
    never write one part file; a killed process's lock goes with it.
    Raises :class:`BusyError` if another process holds it."""
    import fcntl

    from .errors import BusyError

    with disk_errors(f"cannot create {part}"):
        make_dirs(part.parent)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BusyError(f"another segdl process is downloading {part.name.removesuffix(PART_SUFFIX)} "
                        f"into {part.parent}; wait for it or stop it, then run this again") from None
    except OSError:
        pass  # a filesystem without flock (some network mounts): unlocked, as before
    return fd


def unlock(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def open_for_write(path: str, *, file: int = 0, direct: bool = True):
    """Open a part file for the writers: a descriptor through the page cache
    always, and one with ``O_DIRECT`` too where the file system takes it
    (tmpfs and many FUSE or network file systems do not).  Returns a
    :class:`~segdl.engine.staging.FileHandle`; ``handle.direct`` is None
    when direct I/O is off or refused."""
    from .staging import FileHandle

    with disk_errors(f"cannot open {path}"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    dfd = None
    if direct and hasattr(os, "O_DIRECT"):
        try:
            dfd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as e:
            if not direct_refused(e):
                close_quietly(fd)
                raise StorageError(f"cannot open {path}: {e.strerror or e}") from e
    return FileHandle(fd, dfd, path, file)


def direct_refused(e: OSError) -> bool:
    """The file system does not do O_DIRECT (as opposed to a disk error)."""
    return e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)


def close_quietly(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.close(fd)
    except OSError:
        pass


def write_error(path: str, e: OSError) -> StorageError:
    if e.errno == errno.ENOSPC:
        return StorageError(f"cannot write {path}: no space left on device")
    return StorageError(f"cannot write {path}: {e.strerror or e}")


def pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def write_at(path: Path, data: bytes, offset: int) -> None:
    """``data`` at ``offset`` of an existing file, through the page cache
    (not synced: whoever claims it syncs first)."""
    with disk_errors(f"cannot write {path}"):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            pwrite_all(fd, data, offset)
        finally:
            os.close(fd)


def sync(fd: int) -> None:
    os.fdatasync(fd)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finalize_many(items: list[tuple[Path, Path, int | None]]) -> list[StorageError | None]:
    """Move verified part files to their final names, durably: each is
    fsynced (fdatasync need not persist timestamps, and the journal records
    the final file's mtime to recognise it on a re-run), renamed, and then
    each folder is fsynced once, not once per file.  Returns, per item,
    None or the error that stopped it (the others go on)."""
    out: list[StorageError | None] = []
    folders: set[Path] = set()
    for part, final, size in items:
        try:
            with disk_errors(f"cannot rename {part} to {final}"):
                fd = os.open(part, os.O_RDWR | os.O_CLOEXEC)
                try:
                    if size is not None and os.fstat(fd).st_size != size:
                        os.ftruncate(fd, size)
                    os.fsync(fd)  # the mtime the journal records, too
                finally:
                    os.close(fd)
                os.replace(part, final)
            folders.add(final.parent)
            out.append(None)
        except StorageError as e:
            out.append(e)
    for folder in folders:
        fsync_dir(folder)
    return out


def link_or_copy(src: Path, final: Path) -> None:
    """Put ``src``'s content at ``final``: a hard link when both are on one
    filesystem, else a copy; through a part file, so ``final`` is never
    half there."""
    import shutil

    from .naming import part_path

    part = part_path(final)
    with disk_errors(f"cannot copy {src} to {final}"):
        make_dirs(final.parent)
        if part.exists():
            part.unlink()
        try:
            os.link(src, part)
        except OSError:
            shutil.copyfile(src, part)
            fd = os.open(part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(part, final)
        fsync_dir(final.parent)


def file_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
