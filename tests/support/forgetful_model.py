"""The state of a forgetful filesystem: what the programs see, and what a
power cut would leave.  Pure bookkeeping plus its own store on the real
disk; the FUSE glue is in forgetfs.py.

The model (after LazyFS, and SQLite's crash-test VFS):

* Every write lands in an overlay (each file's current bytes, in memory)
  and marks its 4 KiB pages dirty.  Reads see the overlay: a process sees
  its own writes.
* ``fdatasync`` makes the file's data and size durable; ``fsync`` also its
  metadata (mode, mtime).  close persists nothing.
* Creating, linking, renaming and unlinking are namespace operations, kept
  in a log until a directory holding them is fsynced.  ``fsyncdir(D)``
  makes durable the operations that touch D and, so that no impossible
  state is ever made durable, every earlier operation that touches a
  directory those touch (walking the log backwards).  A rename touches both
  its directories and is applied at once: the old name or the new one,
  never both, never neither.  An fsync of a *file* makes no name durable
  (strict POSIX; ext4 is kinder).
* A power cut keeps only what is durable.  A torn cut (seeded) also keeps a
  random half of the dirty pages, garbles some of those, and applies a
  random prefix of the namespace log.

The durable state is the store: ``meta.json`` (every durable inode and
directory entry) and ``data/INO`` (each inode's durable bytes).  It is
written at each sync, so a daemon that dies keeps exactly the durable state
and a new one mounted on the same store starts from it.

Not modelled: writes through a shared mmap reach the daemon late (when the
kernel writes the pages back), so they count as written then; extended
attributes, ownership changes, special files; a cut while the daemon itself
is writing its store (the cut happens under the lock, between operations).
"""

from __future__ import annotations

import errno
import json
import os
import random
import stat
import time
from dataclasses import dataclass, field

PAGE = 4096
ROOT = 1


class FsError(OSError):
    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


@dataclass
class Node:
    kind: str  # "f", "d" or "l"
    mode: int
    mtime_ns: int
    data: bytearray = field(default_factory=bytearray)
    entries: dict[str, int] | None = None  # directories: name -> inode
    target: str = ""  # symlinks
    # Pages written since the last sync -> the byte ranges written in each
    # (offsets within the page, merged).
    dirty: dict[int, list[list[int]]] = field(default_factory=dict)
    allocated: set[int] = field(default_factory=set)  # pages that hold data (for ENOSPC)
    meta_dirty: bool = False  # size, mode or mtime changed since the last fsync
    links: int = 0  # names in the current tree
    opened: int = 0

    def attrs(self, ino: int) -> dict:
        now = self.mtime_ns
        kind = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK}[self.kind]
        size = len(self.data) if self.kind == "f" else len(self.target) if self.kind == "l" else 4096
        return {"st_mode": kind | self.mode, "st_ino": ino, "st_nlink": max(self.links, 1),
                "st_size": size, "st_blocks": (size + 511) // 512, "st_blksize": 1 << 20,
                "st_mtime": now, "st_ctime": now, "st_atime": now,
                "st_uid": os.getuid(), "st_gid": os.getgid()}


def _merge(ranges: list[list[int]], lo: int, hi: int) -> None:
    """Add [lo, hi) to a sorted list of disjoint ranges, merging."""
    out = []
    for a, b in ranges:
        if b < lo or a > hi:
            out.append([a, b])
        else:
            lo, hi = min(a, lo), max(b, hi)
    out.append([lo, hi])
    ranges[:] = sorted(out)


class Volume:
    """The filesystem's state.  Not thread-safe: the caller serialises."""

    def __init__(self, store: str) -> None:
        self.store = store
        self.nodes: dict[int, Node] = {}
        self.durable: dict[str, dict] = {}  # str(ino) -> {kind, mode, size, mtime_ns, target}
        self.dentries: dict[str, dict[str, int]] = {}  # str(dir ino) -> {name: ino}
        self.log: list[tuple] = []  # pending namespace operations
        self.next_ino = ROOT + 1
        self.capacity: int | None = None  # bytes of data pages; beyond: ENOSPC
        os.makedirs(os.path.join(store, "data"), exist_ok=True)
        self._load()

    # ------------------------------------------------------------ the store

    def _load(self) -> None:
        path = os.path.join(self.store, "meta.json")
        if os.path.exists(path):
            with open(path) as f:
                meta = json.load(f)
            self.durable, self.dentries, self.next_ino = meta["nodes"], meta["entries"], meta["next_ino"]
        else:
            self.durable = {str(ROOT): {"kind": "d", "mode": 0o755, "size": 0, "mtime_ns": time.time_ns(), "target": ""}}
            self.dentries = {str(ROOT): {}}
            self._save()
        # The tree after a cut: what is reachable from the root.
        todo = [ROOT]
        while todo:
            ino = todo.pop()
            d = self.durable[str(ino)]
            node = Node(d["kind"], d["mode"], d["mtime_ns"], target=d["target"])
            if d["kind"] == "f":
                node.data = self._durable_bytes(ino, d["size"])
                node.allocated = set(range((d["size"] + PAGE - 1) // PAGE))
            elif d["kind"] == "d":
                node.entries = dict(self.dentries.get(str(ino), {}))
                for child in node.entries.values():
                    if child not in self.nodes and child not in todo:
                        todo.append(child)
            self.nodes[ino] = node
        for node in self.nodes.values():
            for child in (node.entries or {}).values():
                self.nodes[child].links += 1
        self.nodes[ROOT].links = 1

    def _durable_bytes(self, ino: int, size: int) -> bytearray:
        try:
            with open(self._data_path(ino), "rb") as f:
                data = bytearray(f.read(size))
        except FileNotFoundError:
            data = bytearray()
        data.extend(bytes(size - len(data)))
        return data

    def _data_path(self, ino: int) -> str:
        return os.path.join(self.store, "data", str(ino))

    def _save(self) -> None:
        path = os.path.join(self.store, "meta.json")
        with open(path + ".tmp", "w") as f:
            json.dump({"nodes": self.durable, "entries": self.dentries, "next_ino": self.next_ino}, f)
        os.replace(path + ".tmp", path)

    def _durable_node(self, ino: int) -> dict:
        """The durable record of ``ino``, created empty (size 0) the first
        time a durable name or sync refers to it."""
        key = str(ino)
        if key not in self.durable:
            n = self.nodes[ino]
            self.durable[key] = {"kind": n.kind, "mode": n.mode, "size": 0, "mtime_ns": n.mtime_ns, "target": n.target}
            if n.kind == "d":
                self.dentries.setdefault(key, {})
        return self.durable[key]

    def _write_pages(self, ino: int, node: Node, pages, garble: set[int] = frozenset()) -> None:
        """The pages' current bytes to the durable store; in ``garble``
        pages, the bytes written since the last sync become garbage, and
        only those (SQLite's "powersafe overwrite": a torn write never
        damages bytes that were not written)."""
        fd = os.open(self._data_path(ino), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for page in sorted(pages):
                chunk = bytearray(node.data[page * PAGE:(page + 1) * PAGE])
                if page in garble:
                    for lo, hi in node.dirty.get(page, ()):
                        hi = min(hi, len(chunk))
                        if hi > lo:
                            chunk[lo:hi] = os.urandom(hi - lo)
                if chunk:
                    os.pwrite(fd, chunk, page * PAGE)
        finally:
            os.close(fd)

    # ------------------------------------------------------------- lookups

    def lookup(self, path: str) -> int:
        ino = ROOT
        for part in [p for p in path.split("/") if p]:
            node = self.nodes[ino]
            if node.entries is None:
                raise FsError(errno.ENOTDIR)
            if part not in node.entries:
                raise FsError(errno.ENOENT)
            ino = node.entries[part]
        return ino

    def parent(self, path: str) -> tuple[int, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        ino = self.lookup(head or "/")
        if self.nodes[ino].entries is None:
            raise FsError(errno.ENOTDIR)
        return ino, name

    # ------------------------------------------------- namespace operations

    def create(self, path: str, kind: str, mode: int, target: str = "") -> int:
        dino, name = self.parent(path)
        if name in self.nodes[dino].entries:
            raise FsError(errno.EEXIST)
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        node = Node(kind, stat.S_IMODE(mode), time.time_ns(), target=target)
        if kind == "d":
            node.entries = {}
        self.nodes[ino] = node
        self._add(dino, name, ino)
        return ino

    def link(self, old: str, new: str) -> None:
        ino = self.lookup(old)
        dino, name = self.parent(new)
        if name in self.nodes[dino].entries:
            raise FsError(errno.EEXIST)
        self._add(dino, name, ino)

    def _add(self, dino: int, name: str, ino: int) -> None:
        self.nodes[dino].entries[name] = ino
        self.nodes[ino].links += 1
        self.log.append(("add", (dino,), dino, name, ino))

    def remove(self, path: str, directory: bool) -> None:
        dino, name = self.parent(path)
        ino = self.lookup(path)
        node = self.nodes[ino]
        if directory != (node.kind == "d"):
            raise FsError(errno.ENOTDIR if directory else errno.EISDIR)
        if directory and node.entries:
            raise FsError(errno.ENOTEMPTY)
        del self.nodes[dino].entries[name]
        node.links -= 1
        self.log.append(("remove", (dino,), dino, name, ino))
        self._forget(ino)

    def rename(self, old: str, new: str) -> None:
        sdir, sname = self.parent(old)
        ddir, dname = self.parent(new)
        ino = self.lookup(old)
        replaced = self.nodes[ddir].entries.get(dname)
        if replaced == ino:
            return
        if replaced is not None:
            r = self.nodes[replaced]
            if r.kind == "d" and r.entries:
                raise FsError(errno.ENOTEMPTY)
            r.links -= 1
        del self.nodes[sdir].entries[sname]
        self.nodes[ddir].entries[dname] = ino
        self.log.append(("rename", (sdir, ddir), sdir, sname, ddir, dname, ino))
        if replaced is not None:
            self._forget(replaced)

    def _forget(self, ino: int) -> None:
        node = self.nodes[ino]
        if node.links <= 0 and node.opened <= 0 and ino != ROOT:
            # Gone from the current tree, and closed: its bytes are freed.
            # The node stays, for the pending operations that name it; a
            # durable record stays while a durable name refers to it.
            node.data, node.dirty, node.allocated = bytearray(), {}, set()

    def opened(self, ino: int, delta: int) -> None:
        node = self.nodes.get(ino)
        if node is not None:
            node.opened += delta
            self._forget(ino)

    # ----------------------------------------------------------------- data

    def read(self, ino: int, size: int, offset: int) -> bytes:
        return bytes(self.nodes[ino].data[offset:offset + size])

    def write(self, ino: int, data: bytes, offset: int) -> int:
        node = self.nodes[ino]
        end = offset + len(data)
        pages = range(offset // PAGE, (end + PAGE - 1) // PAGE)
        self._reserve(node, pages)
        if end > len(node.data):
            node.data.extend(bytes(end - len(node.data)))
            node.meta_dirty = True
        node.data[offset:end] = data
        for page in pages:
            lo, hi = max(offset - page * PAGE, 0), min(end - page * PAGE, PAGE)
            _merge(node.dirty.setdefault(page, []), lo, hi)
        node.allocated.update(pages)
        node.mtime_ns = time.time_ns()
        node.meta_dirty = True
        return len(data)

    def _reserve(self, node: Node, pages) -> None:
        if self.capacity is None:
            return
        new = sum(1 for p in pages if p not in node.allocated)
        used = sum(len(n.allocated) for n in self.nodes.values())
        if (used + new) * PAGE > self.capacity:
            raise FsError(errno.ENOSPC)

    def truncate(self, ino: int, size: int) -> None:
        """Also fallocate's size change: the space is not reserved (a disk
        that overcommits), so a full disk shows in a later write."""
        node = self.nodes[ino]
        if size < len(node.data):
            del node.data[size:]
            last = (size + PAGE - 1) // PAGE
            node.dirty = {p: r for p, r in node.dirty.items() if p < last}
            node.allocated = {p for p in node.allocated if p < last}
            if size % PAGE:
                _merge(node.dirty.setdefault(size // PAGE, []), size % PAGE, PAGE)
        else:
            node.data.extend(bytes(size - len(node.data)))
        node.mtime_ns = time.time_ns()
        node.meta_dirty = True

    def set_attrs(self, ino: int, mode: int | None = None, mtime_ns: int | None = None) -> None:
        node = self.nodes[ino]
        if mode is not None:
            node.mode = stat.S_IMODE(mode)
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        node.meta_dirty = True

    # ------------------------------------------------------------ syncing

    def fsync(self, ino: int, datasync: bool) -> None:
        node = self.nodes[ino]
        d = self._durable_node(ino)
        if node.kind == "f":
            self._write_pages(ino, node, node.dirty)
            os.truncate(self._data_path(ino), len(node.data))
            d["size"] = len(node.data)
        node.dirty.clear()
        if not datasync:
            d["mode"], d["mtime_ns"] = node.mode, node.mtime_ns
            node.meta_dirty = False
        self._save()

    def drop_dirty(self, ino: int) -> None:
        """A failed fsync: like Linux after a writeback error, the pages are
        no longer dirty, and not durable either."""
        self.nodes[ino].dirty.clear()

    def fsyncdir(self, dino: int, datasync: bool = False) -> None:
        dirs = {dino}
        chosen = []
        for i in range(len(self.log) - 1, -1, -1):
            if dirs.intersection(self.log[i][1]):
                chosen.append(i)
                dirs.update(self.log[i][1])
        for i in reversed(chosen):
            self._apply(self.log[i])
        self.log = [op for i, op in enumerate(self.log) if i not in set(chosen)]
        d = self._durable_node(dino)
        if not datasync:
            d["mtime_ns"] = self.nodes[dino].mtime_ns
        self._save()

    def _apply(self, op: tuple) -> None:
        kind = op[0]
        if kind == "add":
            _, _, dino, name, ino = op
            self._durable_node(dino)
            self._durable_node(ino)
            self.dentries[str(dino)][name] = ino
        elif kind == "remove":
            _, _, dino, name, ino = op
            if self.dentries.get(str(dino), {}).get(name) == ino:
                del self.dentries[str(dino)][name]
        else:
            _, _, sdir, sname, ddir, dname, ino = op
            self._durable_node(sdir)
            self._durable_node(ddir)
            self._durable_node(ino)
            if self.dentries[str(sdir)].get(sname) == ino:
                del self.dentries[str(sdir)][sname]
            self.dentries[str(ddir)][dname] = ino

    # ------------------------------------------------------------- the cut

    def tear(self, seed: int) -> dict:
        """What a torn cut leaves besides the durable state: a seeded half of
        the dirty pages (a fifth of those garbled) and a prefix of the
        namespace log.  Returns what it kept, for the trial's record."""
        rng = random.Random(seed)
        kept = garbled = 0
        for ino, node in sorted(self.nodes.items()):
            if node.kind != "f" or not node.dirty:
                continue
            survive = {p for p in sorted(node.dirty) if rng.random() < 0.5}
            garble = {p for p in sorted(survive) if rng.random() < 0.2}
            d = self._durable_node(ino)
            self._write_pages(ino, node, survive, garble)
            if survive and len(node.data) > d["size"]:
                d["size"] = min(len(node.data), (max(survive) + 1) * PAGE)
            kept += len(survive)
            garbled += len(garble)
        prefix = rng.randint(0, len(self.log))
        for op in self.log[:prefix]:
            self._apply(op)
        self.log = self.log[prefix:]
        self._save()
        return {"pages_kept": kept, "pages_garbled": garbled, "names_kept": prefix}
