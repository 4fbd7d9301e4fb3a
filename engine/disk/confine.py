"""Files under a target folder, reached without leaving it.

Every file segdl creates, writes, renames or removes under a job's folder
(``-d``, a service's root, the HF cache) is reached from that folder's
descriptor (:class:`Root`), not by its path:

* the folders on the way with ``openat2(RESOLVE_BENEATH)``: a symbolic link
  is followed only while it stays under the root; one that leads out, or
  an absolute one, is refused by the kernel;
* the file itself with ``O_NOFOLLOW``, and it must be a regular file;
* a rename or an unlink takes the folder's descriptor and a bare name.

A symlink planted in place of a part file, or a symlinked folder that
leads outside, fails that one file with :class:`UnsafePathError` (exit 2);
nothing is written outside.  The root itself is the user's (``-d``,
``--root``): it may be a symlink.

Where the kernel has no openat2 (Linux before 5.6, some seccomp filters,
other systems), the folders are opened one by one with ``O_NOFOLLOW``, and
a symlinked folder is followed only when its real path is under the
root's real path (checked, then opened: not atomic, unlike openat2).

The hot path costs no more than opening by path did: one ``openat2`` for
the part file (its folders exist), one ``fstat``; a folder is opened only
to rename or remove, once per folder per batch.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from pathlib import Path

from ..values.errors import UnsafePathError

_RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437  # the same on every Linux architecture (new syscalls share numbers since 5.1)
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_openat2():
    if not hasattr(os, "O_PATH"):  # not Linux
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    return fn


_syscall = _load_openat2()
#: None until the first call tells whether the kernel has openat2.
_openat2_works: bool | None = None if _syscall is not None else False


def use_openat2(on: bool) -> None:
    """Use openat2 (when the kernel has it) or the portable walk: for the
    tests, which run both on real folders."""
    global _openat2_works
    _openat2_works = None if (on and _syscall is not None) else False


def _beneath(dirfd: int, rel: str, flags: int, mode: int = 0) -> int:
    """``openat2(dirfd, rel, flags, RESOLVE_BENEATH)``, or None when the
    kernel does not have it."""
    global _openat2_works
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, _RESOLVE_BENEATH)
    fd = _syscall(_SYS_OPENAT2, dirfd, os.fsencode(rel), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        _openat2_works = True
        return fd
    e = ctypes.get_errno()
    if _openat2_works is None and e in (errno.ENOSYS, errno.EPERM):
        _openat2_works = False  # no openat2 here, or a seccomp filter refuses it
        return -1
    raise OSError(e, os.strerror(e), rel)


def ident(st: os.stat_result) -> tuple[int, int]:
    """What a file is, whatever its name: (device, inode)."""
    return (st.st_dev, st.st_ino)


class Root:
    """A folder that files are written under, and the only way to reach
    them.  Its descriptor is opened when first needed (creating the folder,
    as ``mkdir -p`` would) and kept until :meth:`close`; methods are safe
    to call from several threads."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(os.path.abspath(path))
        self._fd: int | None = None
        self._lock = threading.Lock()

    def fd(self) -> int:
        with self._lock:
            if self._fd is None:
                from .storage import make_dirs

                make_dirs(self.path)
                self._fd = os.open(self.path, _DIR)
            return self._fd

    def identity(self) -> tuple[int, int]:
        """What the root folder is (device, inode): another process that
        opens it again by its path checks that it found the same one."""
        return ident(os.fstat(self.fd()))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def relative(self, path: Path) -> str:
        """``path`` relative to the root; it must lie under it by name."""
        try:
            rel = Path(os.path.abspath(path)).relative_to(self.path)
        except ValueError:
            raise UnsafePathError(f"{path} is not under {self.path}") from None
        return rel.as_posix()

    # ------------------------------------------------------------ folders

    def folder(self, path: Path, *, create: bool = False) -> int:
        """A descriptor of the folder ``path`` (the root or under it),
        which the caller closes.  ``create``: make it and the folders above
        it that are missing, each fsynced into its parent."""
        rel = self.relative(path)
        parts = () if rel == "." else tuple(rel.split("/"))
        return self._folder(parts, create)

    def _folder(self, parts: tuple[str, ...], create: bool) -> int:
        root = self.fd()
        if not parts:
            return os.open(".", _DIR, dir_fd=root)
        try:
            return self._open_folder(root, parts)
        except FileNotFoundError:
            if not create:
                raise
        parent = self._folder(parts[:-1], True)
        try:
            try:
                os.mkdir(parts[-1], dir_fd=parent)
            except FileExistsError:
                pass  # made meanwhile (or a link to a folder: opened below, beneath the root or not at all)
            else:
                os.fsync(parent)  # the new folder's name is durable before anything in it
        finally:
            os.close(parent)
        return self._open_folder(root, parts)

    def _open_folder(self, root: int, parts: tuple[str, ...]) -> int:
        rel = "/".join(parts)
        try:
            if _openat2_works is not False:
                fd = _beneath(root, rel, _DIR)
                if fd >= 0:
                    return fd
            return self._walk(root, parts)
        except OSError as e:
            raise self._unsafe(e, rel) or e

    def _walk(self, root: int, parts: tuple[str, ...]) -> int:
        """The portable way: one folder at a time, never through a symlink
        unless its real path is under the root's."""
        fd = os.open(".", _DIR, dir_fd=root)
        try:
            for i, part in enumerate(parts):
                if part in ("", ".", ".."):
                    raise OSError(errno.EXDEV, "a '..' or empty part", "/".join(parts))
                try:
                    nfd = os.open(part, _DIR | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR) or not stat.S_ISLNK(
                            os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise
                    real = os.path.realpath(self.path.joinpath(*parts[: i + 1]))
                    top = os.path.realpath(self.path)
                    if real != top and not real.startswith(top.rstrip("/") + "/"):
                        raise OSError(errno.EXDEV, "a symbolic link leads outside", "/".join(parts)) from None
                    nfd = os.open(real, _DIR | os.O_NOFOLLOW)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    # ------------------------------------------------------------ files

    def open_file(self, path: Path, flags: int, mode: int = 0o644) -> tuple[int, os.stat_result]:
        """Open the regular file ``path`` under the root, never through a
        symlink in its place nor out of the root; with ``O_CREAT`` its
        missing folders are made.  Returns the descriptor and its stat."""
        rel = self.relative(path)
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = self._open_rel(rel, flags, mode)
        except FileNotFoundError:
            if not flags & os.O_CREAT or "/" not in rel:
                raise
            os.close(self._folder(tuple(rel.split("/")[:-1]), True))
            fd = self._open_rel(rel, flags, mode)
        return fd, self._regular(fd, path)

    def _open_rel(self, rel: str, flags: int, mode: int) -> int:
        root = self.fd()
        try:
            if _openat2_works is not False:
                fd = _beneath(root, rel, flags, mode)
                if fd >= 0:
                    return fd
            folder, _, name = rel.rpartition("/")
            dfd = self._walk(root, tuple(folder.split("/"))) if folder else os.open(".", _DIR, dir_fd=root)
            try:
                return os.open(name, flags, mode, dir_fd=dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise self._unsafe(e, rel) or e

    def open_at(self, folder: int, name: str, flags: int, mode: int = 0o644) -> tuple[int, os.stat_result]:
        """Open the regular file ``name`` in an opened ``folder`` (of this
        root), as :meth:`open_file` does."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=folder)
        except OSError as e:
            raise self._unsafe(e, name) or e
        return fd, self._regular(fd, name)

    def check(self, path: Path) -> None:
        """Raise :class:`UnsafePathError` if the folder of ``path`` leads
        outside the root (a folder that is not there yet is fine)."""
        if "/" not in self.relative(path):
            return  # right in the root
        from .storage import disk_errors

        with disk_errors(f"cannot open the folder of {path}"):
            try:
                os.close(self.folder(path.parent))
            except FileNotFoundError:
                pass

    def _regular(self, fd: int, shown) -> os.stat_result:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafePathError(f"{shown} is not a regular file; segdl writes only files it makes under "
                                  f"{self.path}: remove it and run again")
        return st

    def _unsafe(self, e: OSError, rel: str) -> UnsafePathError | None:
        """The refusals of a path that would leave the root, in words."""
        if e.errno == errno.EXDEV:
            return UnsafePathError(f"{rel} leads outside {self.path} through a symbolic link; "
                                   "refusing to write there")
        if e.errno == errno.ELOOP:
            return UnsafePathError(f"{rel} is a symbolic link (segdl writes only regular files it makes "
                                   f"under {self.path}): remove it and run again")
        return None
