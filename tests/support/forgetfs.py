"""A FUSE filesystem that forgets what was not synced: the daemon.

    python forgetfs.py STORE MOUNTPOINT CONTROL_SOCKET

The state and its rules are in forgetful_model.py.  This file maps FUSE
operations onto it (mfusepy, libfuse 3, one thread: operations run one at
a time) and serves a control socket: one JSON object per line in, one per
line out.

Commands:
  {"cmd": "cut", "torn": SEED|null}   power cut now: the daemon exits at
      once, keeping only the durable state (plus, if torn, what tear()
      keeps).  The harness then unmounts and mounts the store again.
  {"cmd": "arm", "op": OP, "match": GLOB, "nth": K, "when": "before"|"after",
   "torn": SEED|null}   cut at the K-th OP (write, fsync, fdatasync,
      fsyncdir, rename, link, unlink, create) whose file name matches GLOB,
      before it takes effect or after it took effect (and before the caller
      hears of it).
  {"cmd": "fault", "op": "write"|"fsync"|"fdatasync"|"sync", "match": GLOB, "nth": K,
   "count": N, "errno": "EIO"}   the K-th to K+N-1-th such operation fails.
  {"cmd": "capacity", "bytes": N|null}   data beyond N bytes: ENOSPC.
  {"cmd": "clear"}   no more faults or capacity limit.
  {"cmd": "stats"}   operation counts so far, by op.

Kernel caching is off: no writeback cache, no keep_cache, attribute and
entry timeouts of 0, so every operation reaches the daemon.  Direct I/O is
not forced (SQLite's -shm needs a shared mmap); O_DIRECT opens pass
through.
"""

from __future__ import annotations

import errno
import fnmatch
import functools
import json
import os
import socket
import stat
import sys
import threading

import mfusepy as fuse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from forgetful_model import FsError, Volume  # noqa: E402

ERRNO = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}


class Control:
    """Armed cuts, faults and counts; consulted by every operation."""

    def __init__(self, volume: Volume) -> None:
        self.volume = volume
        self.counts: dict[str, int] = {}
        self.arms: list[dict] = []
        self.faults: list[dict] = []
        trace = os.environ.get("FORGETFS_TRACE")  # a file: every counted operation, one per line
        self.trace = open(trace, "a", buffering=1) if trace else None

    def command(self, msg: dict) -> dict:
        cmd = msg["cmd"]
        if cmd == "cut":
            self.cut(msg.get("torn"))
        if cmd == "arm":
            self.arms.append(dict(msg, seen=0))
        elif cmd == "fault":
            self.faults.append(dict(msg, seen=0))
        elif cmd == "capacity":
            self.volume.capacity = msg["bytes"]
        elif cmd == "clear":
            self.faults.clear()
            self.volume.capacity = None
        elif cmd != "stats":
            return {"error": f"unknown command {cmd}"}
        return {"ok": True, "counts": self.counts}

    def cut(self, torn) -> None:
        record = self.volume.tear(torn) if torn is not None else {}
        with open(os.path.join(self.volume.store, "last-cut.json"), "w") as f:
            json.dump(dict(record, counts=self.counts), f)
        os._exit(0)  # the power is off: no operation after this one runs

    def before(self, op: str, path: str | None) -> None:
        name = os.path.basename(path or "")
        self.counts[op] = self.counts.get(op, 0) + 1
        if self.trace and not (op == "write" and name.endswith(".segdl-part")):
            self.trace.write(f"{op} {path}\n")
        for f in self.faults:
            if f["op"] in (op, "sync" if op.endswith("sync") and op != "fsyncdir" else op) and fnmatch.fnmatch(name, f.get("match", "*")):
                f["seen"] += 1
                if f["nth"] <= f["seen"] < f["nth"] + f.get("count", 1):
                    raise FsError(ERRNO[f.get("errno", "EIO")])
        self._trigger(op, name, "before")

    def after(self, op: str, path: str | None) -> None:
        self._trigger(op, os.path.basename(path or ""), "after")

    def _trigger(self, op: str, name: str, when: str) -> None:
        for a in self.arms:
            if a["op"] == op and fnmatch.fnmatch(name, a.get("match", "*")):
                if when == "before":
                    a["seen"] += 1
                if a["seen"] == a["nth"] and a.get("when", "before") == when:
                    self.cut(a.get("torn"))


class ForgetfulFs(fuse.Operations):
    use_ns = True
    flag_nullpath_ok = True
    flag_nopath = False

    def __init__(self, volume: Volume, control: Control, lock: threading.Lock) -> None:
        self.v, self.c, self._mutex = volume, control, lock
        self.paths: dict[int, str] = {}  # open handle -> the path it was opened at (for matching)

    def _ino(self, path, fh=None) -> int:
        if fh:
            return fh
        return self.v.lookup(path)

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name.startswith("_") or name not in ForgetfulFs.__dict__ or not callable(attr):
            return attr

        @functools.wraps(attr)
        def locked(*args, **kwargs):
            with object.__getattribute__(self, "_mutex"):
                try:
                    return attr(*args, **kwargs)
                except FsError as e:
                    raise fuse.FuseOSError(e.errno) from None
        return locked

    # metadata
    def getattr(self, path, fh=None):
        ino = self._ino(path, fh)
        return self.v.nodes[ino].attrs(ino)

    def readdir(self, path, fh):
        # With inode numbers of their own (use_ino), entries must carry
        # them: a zero d_ino makes readdir(3) skip the entry.
        ino = self._ino(path, fh)
        here = {"st_mode": stat.S_IFDIR, "st_ino": ino}
        out = [(".", here, 0), ("..", here, 0)]
        for name, child in self.v.nodes[ino].entries.items():
            out.append((name, self.v.nodes[child].attrs(child), 0))
        return out

    def readlink(self, path):
        return self.v.nodes[self.v.lookup(path)].target

    def statfs(self, path):
        free = (self.v.capacity or (64 << 30)) // 4096
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": free * 2, "f_bfree": free,
                "f_bavail": free, "f_files": 1 << 20, "f_ffree": 1 << 20, "f_namemax": 255}

    def chmod(self, path, mode):
        self.v.set_attrs(self.v.lookup(path), mode=mode)

    def chown(self, path, uid, gid):
        pass

    def utimens(self, path, times=None):
        mtime = times[1] if times else None
        self.v.set_attrs(self.v.lookup(path), mtime_ns=mtime if mtime is not None else None)

    # namespace
    def create(self, path, mode, flags=0):
        self._count_direct(flags)
        self.c.before("create", path)
        ino = self.v.create(path, "f", mode)
        self.v.opened(ino, +1)
        self.paths[ino] = path
        self.c.after("create", path)
        return ino

    def mkdir(self, path, mode):
        self.c.before("create", path)
        self.v.create(path, "d", mode)

    def symlink(self, target, source):
        self.v.create(target, "l", 0o777, target=source)

    def link(self, target, source):
        self.c.before("link", target)
        self.v.link(source, target)
        self.c.after("link", target)

    def unlink(self, path):
        self.c.before("unlink", path)
        self.v.remove(path, directory=False)
        self.c.after("unlink", path)

    def rmdir(self, path):
        self.v.remove(path, directory=True)

    def rename(self, old, new):
        self.c.before("rename", old)
        self.v.rename(old, new)
        self.c.after("rename", old)

    # data
    def _count_direct(self, flags) -> None:
        if flags & os.O_DIRECT:
            self.c.counts["open_direct"] = self.c.counts.get("open_direct", 0) + 1

    def open(self, path, flags):
        self._count_direct(flags)
        ino = self.v.lookup(path)
        if flags & os.O_TRUNC:
            self.v.truncate(ino, 0)
        self.v.opened(ino, +1)
        self.paths[ino] = path
        return ino

    def release(self, path, fh):
        self.v.opened(fh, -1)

    def flush(self, path, fh):
        pass  # close persists nothing

    def read(self, path, size, offset, fh):
        return self.v.read(self._ino(path, fh), size, offset)

    def write(self, path, data, offset, fh):
        name = self.paths.get(fh, path)
        self.c.before("write", name)
        n = self.v.write(self._ino(path, fh), bytes(data), offset)
        self.c.after("write", name)
        return n

    def truncate(self, path, length, fh=None):
        self.v.truncate(self._ino(path, fh), length)

    def fallocate(self, path, mode, offset, size, fh):
        if mode:
            raise fuse.FuseOSError(errno.EOPNOTSUPP)
        ino = self._ino(path, fh)
        if offset + size > len(self.v.nodes[ino].data):
            self.v.truncate(ino, offset + size)
        return 0

    def fsync(self, path, datasync, fh):
        op = "fdatasync" if datasync else "fsync"
        name = self.paths.get(fh, path)
        ino = self._ino(path, fh)
        try:
            self.c.before(op, name)
        except FsError:
            self.v.drop_dirty(ino)
            raise
        self.v.fsync(ino, bool(datasync))
        self.c.after(op, name)

    def opendir(self, path):
        return self.v.lookup(path)

    def releasedir(self, path, fh):
        pass

    def fsyncdir(self, path, datasync, fh):
        self.c.before("fsyncdir", path)
        self.v.fsyncdir(self._ino(path, fh), bool(datasync))
        self.c.after("fsyncdir", path)


def serve_control(sock_path: str, control: Control, lock: threading.Lock) -> None:
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(4)

    def one(conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            for line in f:
                with lock:
                    reply = control.command(json.loads(line))
                f.write(json.dumps(reply).encode() + b"\n")
                f.flush()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def main() -> None:
    store, mountpoint, sock_path = sys.argv[1:4]
    volume = Volume(store)
    lock = threading.Lock()
    control = Control(volume)
    threading.Thread(target=serve_control, args=(sock_path, control, lock), daemon=True).start()
    fuse.FUSE(ForgetfulFs(volume, control, lock), mountpoint, foreground=True, nothreads=True,
              hard_remove=True, use_ino=True, attr_timeout=0, entry_timeout=0, negative_timeout=0,
              fsname="forgetfs")


if __name__ == "__main__":
    main()
