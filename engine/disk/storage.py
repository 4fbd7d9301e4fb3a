"""The local disk: preallocated part files, positioned writes, batched
fdatasync, and the final rename.  ``OSError`` becomes :class:`StorageError`
here and nowhere else."""

from __future__ import annotations

import ctypes  # (loaded by confine.py already)
import errno
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from .confine import Root, ident
from ..values.errors import ExistsError, SegdlError, StorageError, UnsafePathError
from ..inputs.naming import PART_SUFFIX


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
        with disk_errors(f"cannot create the folder {d}"):
            fsync_dir(d.parent)


class Held(NamedTuple):
    """A part file taken by this process: its path, the descriptor that
    holds its ``flock``, and what the file is (device, inode), so that
    whoever opens it by name later can tell it is still the same file."""

    path: Path
    fd: int
    ident: tuple[int, int]


def lock_part(root: Root, part: Path) -> Held:
    """Create or open ``part`` under ``root`` (never through a symlink, see
    confine.py) and take it for this process: an exclusive ``flock``, held
    through its descriptor until :func:`unlock`.  Two segdl processes (two
    terminals, a nightly sync overlapping the last one) never write one
    part file; a killed process's lock goes with it.  Raises
    :class:`BusyError` if another process holds it, :class:`UnsafePathError`
    if the name leads outside ``root`` or is not a regular file."""
    import fcntl

    from ..values.errors import BusyError

    with disk_errors(f"cannot create {part}"):
        fd, st = root.open_file(part, os.O_RDWR | os.O_CREAT)
    if st.st_nlink != 1:
        os.close(fd)
        raise _linked(part)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BusyError(f"another segdl process is downloading {part.name.removesuffix(PART_SUFFIX)} "
                        f"into {part.parent}; wait for it or stop it, then run this again") from None
    except OSError:
        pass  # a filesystem without flock (some network mounts): unlocked, as before
    return Held(part, fd, ident(st))


def _linked(part: Path) -> UnsafePathError:
    # A hard link to a file elsewhere: writing it would write that file.
    return UnsafePathError(f"{part} has another name (a hard link), so writing it would change a file "
                           "elsewhere; remove it and run again")


PREALLOCATE_FROM = 1024 * 1024  # bytes: smaller part files are sized, not preallocated


def prepare(held: Held, size: int | None, *, keep: bool) -> None:
    """Reserve ``size`` bytes for the part file ``held``.

    ``keep``: an existing part file of the right size is resumed as it is.
    Anything else starts empty.  Space is reserved with posix_fallocate, so
    a full disk is found now, not half-way through the download.

    No fsync here: the journal claims no byte of this file until an
    fdatasync of its data (which also persists its size), and a worker's
    syncer fsyncs the folder (the part file's name) before it reports the
    file's first bytes durable (staging.Syncer).
    """
    with disk_errors(f"cannot create {held.path}"):
        fd = held.fd
        current = os.fstat(fd).st_size
        if size is not None and size <= PREALLOCATE_FROM:
            # A small file is not preallocated: its first write finds a full
            # disk as early, and fallocate's extent work costs more than that
            # write (20,000 files of 4 KiB).  Its part file is only sized.
            if not keep or current != size:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
            return
        if not keep or (size is not None and current != size):
            os.ftruncate(fd, 0)
        if size:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.ftruncate(fd, size)  # a filesystem without fallocate


def unlock(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def open_for_write(path: str, *, file: int = 0, direct: bool = True, expect: tuple[int, int] | None = None):
    """Open a part file for the writers: a descriptor through the page cache
    always, and one with ``O_DIRECT`` too where the file system takes it
    (tmpfs and many FUSE or network file systems do not).  Returns a
    :class:`~segdl.engine.disk.staging.FileHandle`; ``handle.direct`` is None
    when direct I/O is off or refused.

    The coordinator created and locked the file (:func:`lock_part`);
    ``expect`` is what it is (device, inode).  Opened by name here, in
    another process, it must still be that file: not a symlink, not
    something put in its place or in place of a folder on the way."""
    from .staging import FileHandle

    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # (a FIFO in its place must not block)
    with disk_errors(f"cannot open {path}"):
        fd, what = _open_same(path, flags, expect)
    dfd = None
    if direct and hasattr(os, "O_DIRECT"):
        try:
            dfd, _ = _open_same(path, flags | os.O_DIRECT, what)
        except OSError as e:
            if not direct_refused(e):
                close_quietly(fd)
                raise StorageError(f"cannot open {path}: {e.strerror or e}") from e
        except SegdlError:
            close_quietly(fd)
            raise
    return FileHandle(fd, dfd, path, file)


def _open_same(path: str, flags: int, expect: tuple[int, int] | None) -> tuple[int, tuple[int, int]]:
    """``path`` opened, and what it is; it must be ``expect`` if given."""
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{path} is a symbolic link now, not the part file segdl made; "
                                  "refusing to write it") from None
        raise
    what = ident(os.fstat(fd))
    if expect is not None and what != expect:
        close_quietly(fd)
        raise UnsafePathError(f"{path} is not the part file segdl made any more (something was put in "
                              "its place, or in place of a folder on its way); refusing to write it")
    return fd, what


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


def write_at(held: Held, data: bytes, offset: int) -> None:
    """``data`` at ``offset`` of a part file this process holds, through
    the page cache (not synced: whoever claims it syncs first)."""
    with disk_errors(f"cannot write {held.path}"):
        pwrite_all(held.fd, data, offset)


def sync(fd: int) -> None:
    os.fdatasync(fd)


def sync_many(fds: list[int]) -> dict[int, OSError]:
    """fdatasync each descriptor, side by side when there are several (they
    share the file system's journal commits); returns the ones that failed."""
    def one(fd: int) -> OSError | None:
        try:
            os.fdatasync(fd)
        except OSError as e:
            return e
        return None

    results = _sync_pool().map(one, fds) if len(fds) > 1 else map(one, fds)
    return {fd: e for fd, e in zip(fds, results) if e is not None}


def fsync_dir(path: Path) -> None:
    """Make the names in the folder ``path`` durable.  Raises OSError when
    that fails: a file just created or renamed there may then not survive
    a power cut, and nothing may claim it did."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finalize_many(items: list[tuple], journal_too: bool = False
                  ) -> list[SegdlError | tuple[float, int]]:
    """Move verified part files to their final names, durably: each one's
    data (and the mtime the journal records to recognise it on a re-run)
    is made durable, then it is renamed, then each folder is fsynced once,
    not once per file.

    The data of a batch of several files is made durable by one
    ``syncfs`` of their file system, not by an fsync each: every fsync
    waits for a commit of the file system's journal, and a file created
    meanwhile waits with it (many small files: benchmarks/many_files.py).
    A batch of few files is fsynced file by file.

    An item is (root, part, final, size, ident, data[, replace]).
    ``replace`` False: nothing was at the final name when the caller last
    looked, and a file that appeared since is not replaced (ExistsError).
    ``data``: the
    whole file, not written yet (a small file its probe carried): its part
    file is created, locked and written here, off the coordinator's loop.
    Otherwise the part file must still be the one downloaded (``ident``),
    reached under ``root`` without a symlink.  The rename takes the
    folder's descriptor, and the final name is checked to hold that file
    after it (something swapped in between is removed again), so it never
    ends up a symlink.  Returns, per item, the final file's (mtime, size)
    or the error that stopped it (the others go on).

    ``journal_too``: the caller's last journal commit, on the same file
    system as every root (:func:`syncfs_device`), was not synced: the
    ``syncfs`` before the renames makes it durable with the data, whatever
    the batch's size, and a batch whose ``syncfs`` fails renames nothing."""
    out: list = []
    for i in range(0, len(items), FINALIZE_CHUNK):
        out += _finalize_chunk(items[i:i + FINALIZE_CHUNK], journal_too)
    return out


_POOL = None


def _forget_pool() -> None:
    """In a forked child: the parent's pool has no threads here (a fork
    copies only the forking thread), and a job given to it would wait
    forever.  A worker forked after the coordinator synced side by side
    (a service's later job, a restarted worker) makes its own."""
    global _POOL
    _POOL = None


os.register_at_fork(after_in_child=_forget_pool)


def _sync_pool():
    """Threads for fsyncs made side by side (made once per process, on
    first use)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(8, thread_name_prefix="segdl-fsync")
    return _POOL


#: Files finalized together: a written one keeps its part file open and
#: locked until its rename.
FINALIZE_CHUNK = 256


def _finalize_chunk(items, journal_too: bool = False) -> list[SegdlError | tuple[float, int]]:
    folders: dict[tuple[int, Path], int] = {}
    held: dict[int, int] = {}  # item -> its part file, written here, open and locked to its rename
    out: list = [None] * len(items)
    whole = _one_file_system(items) if journal_too or len(items) >= SYNCFS_MIN else None
    if journal_too and whole is None:  # (the caller checked: the file system changed under it)
        return [StorageError(f"cannot sync the file system of {items[0][0].path} with the journal")] * len(items)
    dev = os.fstat(whole).st_dev if whole is not None else None  # what one syncfs covers
    try:
        checked: list[tuple[int, tuple[int, int]]] = []
        for i, (root, part, final, size, expect, data, *_) in enumerate(items):
            try:
                if data is not None:
                    h = lock_part(root, part)
                    held[i] = h.fd
                    with disk_errors(f"cannot write {part}"):
                        os.ftruncate(h.fd, len(data))  # (a longer leftover part file is cut)
                        pwrite_all(h.fd, data, 0)
                        if h.ident[0] != dev:  # (a file system mounted under the root is not synced with it)
                            os.fsync(h.fd)
                    ino = h.ident
                with disk_errors(f"cannot rename {part} to {final}"):
                    key = (id(root), part.parent)
                    if key not in folders:
                        folders[key] = root.folder(part.parent)
                    if data is None:
                        ino = _ready(root, folders[key], part, size, expect, dev)
                checked.append((i, ino))
            except SegdlError as e:
                out[i] = e
        if dev is not None and checked and (journal_too or any(ino[0] == dev for _, ino in checked)):
            try:
                _sync_fs(whole)
            except OSError as e:
                if journal_too:  # the journal's commit may not be durable: no rename may come before it
                    err = StorageError(f"cannot sync the file system of {items[0][0].path}: {e.strerror}")
                    return [x if x is not None else err for x in out]
                # a write error somewhere on the file system: whose, file by file
                for i, ino in list(checked):
                    root, part = items[i][:2]
                    try:
                        with disk_errors(f"cannot write {part}"):
                            _fsync_part(held.get(i), root, folders[(id(root), part.parent)], part)
                    except SegdlError as e:
                        out[i] = e
                        checked.remove((i, ino))
        renamed: dict[tuple[int, Path], list[int]] = {}
        for i, ino in checked:
            root, part, final = items[i][:3]
            try:
                with disk_errors(f"cannot rename {part} to {final}"):
                    out[i] = _rename(folders[(id(root), part.parent)], part, final, ino,
                                     replace=items[i][6] if len(items[i]) > 6 else True)
                renamed.setdefault((id(root), part.parent), []).append(i)
            except SegdlError as e:
                out[i] = e
        for key, done in renamed.items():  # the new names, durable before any is reported done
            try:
                with disk_errors(f"cannot sync the folder {key[1]}"):
                    os.fsync(folders[key])
            except SegdlError as e:
                for i in done:
                    out[i] = e
    finally:
        for dfd in folders.values():
            os.close(dfd)
        for fd in held.values():
            unlock(fd)
    return out


def _fsync_part(fd: int | None, root: Root, folder: int, part: Path) -> None:
    if fd is not None:
        os.fsync(fd)
        return
    fd, _ = root.open_at(folder, part.name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: From how many files a batch is made durable by one ``syncfs``.
SYNCFS_MIN = 4

#: File systems whose ``syncfs`` makes every file's data and metadata
#: durable (statfs magic numbers): ext2/3/4, XFS, Btrfs, F2FS, overlayfs
#: (which syncs its upper file system), tmpfs (which keeps nothing anyway).
#: On others (FUSE, whose syncfs need not reach the daemon's disk; network
#: file systems) each file is fsynced.
SYNCFS_TRUSTED = frozenset({0xEF53, 0x58465342, 0x9123683E, 0xF2F52010, 0x794C7630, 0x01021994})


def syncfs_device(path: Path) -> int | None:
    """The device of ``path``'s file system when one ``syncfs`` there makes
    every file on it durable (:func:`_syncfs_trusted`), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.fstat(fd).st_dev if _syncfs_trusted(fd) else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _one_file_system(items) -> int | None:
    """A descriptor to ``syncfs`` for the whole batch, when every item is
    under roots on one file system whose syncfs is trusted."""
    try:
        fds = {root.fd() for root, *_ in items}
        if len({os.fstat(fd).st_dev for fd in fds}) != 1:
            return None
        fd = next(iter(fds))
        return fd if _syncfs_trusted(fd) else None
    except (OSError, SegdlError):
        return None  # each item meets its error on its own


def _syncfs_trusted(fd: int) -> bool:
    """Does one ``syncfs`` make every file on ``fd``'s file system durable
    (this libc has it, and the file system is one of :data:`SYNCFS_TRUSTED`)?"""
    return _syncfs is not None and _fs_type(fd) in SYNCFS_TRUSTED


def _fs_type(fd: int) -> int | None:
    """``fstatfs(fd).f_type``, the file system's magic number."""
    buf = ctypes.create_string_buffer(512)  # (a struct statfs is 120 bytes)
    if _libc.fstatfs(fd, buf) != 0:
        return None
    return struct.unpack_from("l", buf)[0] & 0xFFFFFFFF


def _load_libc():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
        if hasattr(libc, "renameat2"):  # (glibc 2.28)
            libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    except (OSError, AttributeError):  # not Linux
        return None, None
    return libc, libc.syncfs


_libc, _syncfs = _load_libc()


def _sync_fs(fd: int) -> None:
    """``syncfs(2)``: write out everything of the file system ``fd`` is on."""
    if _syncfs(fd) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _ready(root: Root, folder: int, part: Path, size: int | None, expect: tuple[int, int] | None,
           synced_dev: int | None) -> tuple[int, int]:
    """Check that the part file is still the one downloaded, cut it to its
    size, and fsync it unless it is on ``synced_dev``, the file system a
    syncfs will sync."""
    fd, st = root.open_at(folder, part.name, os.O_RDWR)
    try:
        if expect is not None and ident(st) != expect:
            raise UnsafePathError(f"{part} is not the part file segdl downloaded any more (something was put "
                                  "in its place); it is not renamed")
        if st.st_nlink != 1:
            raise _linked(part)
        if size is not None and st.st_size != size:
            os.ftruncate(fd, size)
        if st.st_dev != synced_dev:
            os.fsync(fd)  # the mtime the journal records, too
    finally:
        os.close(fd)
    return ident(st)


def _rename(folder: int, part: Path, final: Path, ino: tuple[int, int], replace: bool = True) -> tuple[float, int]:
    if replace:
        os.rename(part.name, final.name, src_dir_fd=folder, dst_dir_fd=folder)
    else:
        _rename_new(folder, part, final)
    landed = os.stat(final.name, dir_fd=folder, follow_symlinks=False)
    if ident(landed) != ino:
        os.unlink(final.name, dir_fd=folder)  # swapped in between: it does not stay under the final name
        raise UnsafePathError(f"{part} was replaced while it was renamed; {final} is not written")
    return landed.st_mtime, landed.st_size


_RENAME_NOREPLACE = 1


def _rename_new(folder: int, part: Path, final: Path) -> None:
    """Rename ``part`` to ``final`` only if nothing has that name
    (``renameat2`` with ``RENAME_NOREPLACE``): ExistsError if something
    does.  Where the file system or the kernel has no such rename, a look
    just before a plain one."""
    fn = getattr(_libc, "renameat2", None)  # (None without a libc)
    if fn is not None:
        if fn(folder, os.fsencode(part.name), folder, os.fsencode(final.name), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise _appeared(part, final) if err == errno.EEXIST else OSError(err, os.strerror(err))
    try:
        os.stat(final.name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(part.name, final.name, src_dir_fd=folder, dst_dir_fd=folder)
        return
    raise _appeared(part, final)


def _appeared(part: Path, final: Path) -> ExistsError:
    return ExistsError(f"{final} appeared while segdl downloaded it; the download is left in {part}")


def link_or_copy(root: Root, src: Path, final: Path) -> None:
    """Put ``src``'s content at ``final`` (under ``root``): a hard link when
    both are on one filesystem, else a copy; through a part file, so
    ``final`` is never half there."""
    from ..inputs.naming import part_path

    part = part_path(final)
    with disk_errors(f"cannot copy {src} to {final}"):
        folder = root.folder(final.parent, create=True)
        try:
            try:
                os.unlink(part.name, dir_fd=folder)
            except FileNotFoundError:
                pass
            try:
                os.link(src, part.name, dst_dir_fd=folder)  # (to what a symlink there points at)
            except OSError:
                _copy_into(root, folder, src, part.name)
            os.rename(part.name, final.name, src_dir_fd=folder, dst_dir_fd=folder)
            os.fsync(folder)
        finally:
            os.close(folder)


def _copy_into(root: Root, folder: int, src: Path, name: str) -> None:
    import shutil

    fd, _ = root.open_at(folder, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with open(src, "rb") as f, os.fdopen(os.dup(fd), "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
        os.fsync(fd)
    finally:
        os.close(fd)


def remove(root: Root, path: Path) -> None:
    """Remove the file ``path`` under ``root`` (a symlink there is removed,
    never what it points to; a folder on the way must not lead out)."""
    with disk_errors(f"cannot remove {path}"):
        try:
            folder = root.folder(path.parent)
        except FileNotFoundError:
            return
        try:
            os.unlink(path.name, dir_fd=folder)
        except FileNotFoundError:
            pass
        finally:
            os.close(folder)


def file_size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None
