"""Power-cut trials: segdl on a forgetful filesystem (forgetfs.py), cut at
a random instant or at a chosen operation, remounted, checked by an oracle,
and run again until it finishes.

Used by tests/test_powercut.py (a few dozen trials) and
benchmarks/powercut_soak.py (hundreds)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from crashlib import kill_tree
from helpers import SEGDL

HERE = Path(__file__).resolve().parent
FUSERMOUNT = shutil.which("fusermount3") or shutil.which("fusermount")


def unavailable() -> str | None:
    """Why power-cut trials cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse: the forgetful filesystem needs FUSE"
    if os.geteuid() != 0:
        return "not root: mounting the forgetful filesystem needs root"
    if FUSERMOUNT is None:
        return "no fusermount3 (Debian package fuse3)"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:
        return f"mfusepy cannot load libfuse: {e}"
    return None


class ForgetfulMount:
    """One forgetful filesystem: its store (the durable state, on the real
    disk), its mount point and the daemon serving it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store, self.mnt, self.sock = root / "store", root / "mnt", root / "control.sock"
        self.log = root / "forgetfs.log"
        self.proc: subprocess.Popen | None = None
        self.cuts = 0

    def mount(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        if self.sock.exists():
            self.sock.unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(HERE / "forgetfs.py"), str(self.store),
                                          str(self.mnt), str(self.sock)], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while not (os.path.ismount(self.mnt) and self.sock.exists()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"forgetfs did not mount: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def command(self, **msg) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.sock))
            s.sendall(json.dumps(msg).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data) if data else {}

    @property
    def cut_happened(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def cut(self, torn: int | None = None) -> None:
        """The power goes off now (if an armed cut has not already done it);
        then the mount goes, with the kernel's caches."""
        if not self.cut_happened:
            try:
                self.command(cmd="cut", torn=torn)
            except OSError:
                pass  # the daemon exits without answering
        self.proc.wait(10)
        self._unmount()
        self.cuts += 1

    def last_cut(self) -> dict:
        path = self.store / "last-cut.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _unmount(self) -> None:
        subprocess.run([FUSERMOUNT, "-u", "-z", str(self.mnt)], capture_output=True, timeout=10)
        deadline = time.monotonic() + 10
        while os.path.ismount(self.mnt) and time.monotonic() < deadline:
            time.sleep(0.02)

    def unmount(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._unmount()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        else:
            self._unmount()


# ---------------------------------------------------------------- the oracle


def journal_copy(journal: Path, into: Path) -> Path | None:
    """The journal as a fresh run would open it, copied out of the mount
    (the database, its WAL and any hot rollback journal, which SQLite uses
    while it creates the database; the -shm is rebuilt), so checking it
    changes nothing."""
    if not journal.exists():
        return None
    into.mkdir(parents=True, exist_ok=True)
    for f in into.iterdir():
        f.unlink()
    copy = into / journal.name
    shutil.copyfile(journal, copy)
    for suffix in ("-wal", "-journal"):
        side = journal.with_name(journal.name + suffix)
        if side.exists():
            shutil.copyfile(side, copy.with_name(copy.name + suffix))
    return copy


def read_range(path: Path, start: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(n)


@dataclass
class Check:
    """What the oracle saw after one cut."""

    integrity: str = "no journal"
    claimed: int = 0  # bytes the journal claims durable (segments)
    done_files: int = 0
    problems: list[str] = field(default_factory=list)


def check_after_cut(mnt: Path, journal: Path, out: Path, sources: dict[str, bytes], done_said: set[str],
                    scratch: Path) -> Check:
    """The oracle: run after a cut, with the filesystem mounted again.

    ``sources``: final path relative to ``out`` -> expected bytes.
    ``done_said``: the relative paths a ``--json`` line reported done.
    """
    c = Check()
    copy = journal_copy(journal, scratch)
    if copy is not None:
        con = sqlite3.connect(copy)
        try:
            c.integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
            if c.integrity != "ok":
                c.problems.append(f"journal integrity_check: {c.integrity}")
            files = con.execute("SELECT id, path, state, size, blake3 FROM files").fetchall()
            segs = con.execute('SELECT file_id, start, "end", done FROM segments').fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" not in str(e):
                c.problems.append(f"journal unreadable after the cut: {e}")
            files, segs = [], []  # created, but its first commit was not durable: it claims nothing
        except sqlite3.DatabaseError as e:
            c.problems.append(f"journal unreadable after the cut: {e}")
            files, segs = [], []
        finally:
            con.close()
        by_id = {fid: (Path(p), state, size, b3) for fid, p, state, size, b3 in files}
        for fid, start, end, done in segs:
            if not done or fid not in by_id:
                continue
            final, state, _, _ = by_id[fid]
            rel = str(final.relative_to(out)) if final.is_relative_to(out) else str(final)
            src = sources.get(rel)
            part = final.with_name(final.name + ".segdl-part")
            on_disk = part if part.exists() else final
            if src is None or not on_disk.exists():
                if state not in ("done", "skipped", "verified"):
                    c.problems.append(f"{rel}: journal claims {done} bytes at {start} of a file that is gone")
                continue
            c.claimed += done
            if read_range(on_disk, start, done) != src[start:start + done]:
                c.problems.append(f"{rel}: journal claims bytes {start}-{start + done} that are wrong on disk")
        for fid, (final, state, size, b3) in by_id.items():
            if state != "done":
                continue
            c.done_files += 1
            rel = str(final.relative_to(out)) if final.is_relative_to(out) else str(final)
            if not final.exists() or final.read_bytes() != sources.get(rel):
                c.problems.append(f"{rel}: journal says done but the file is missing or wrong")
    for rel in done_said:
        f = out / rel
        if not f.exists() or f.read_bytes() != sources[rel]:
            c.problems.append(f"{rel}: --json said done, but after the cut it is missing or wrong")
    return c


def done_lines(stdout: str, out: Path) -> set[str]:
    said = set()
    for line in stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("status") == "done" and rec.get("path"):
            said.add(str(Path(rec["path"]).relative_to(out)))
    return said


# ---------------------------------------------------------------- a trial


@dataclass
class TrialResult:
    seed: int
    cuts: list[str] = field(default_factory=list)  # where each cut came
    checks: list[Check] = field(default_factory=list)
    final_rc: int | None = None
    final_ok: bool = False
    rcs: list[int | None] = field(default_factory=list)
    sent: int = 0
    needed: int = 0
    final_stderr: str = ""

    @property
    def problems(self) -> list[str]:
        out = [p for c in self.checks for p in c.problems]
        if self.final_rc != 0:
            out.append(f"final run exited {self.final_rc}: {self.final_stderr[-600:]}")
        elif not self.final_ok:
            out.append("final run exited 0 but a file is wrong")
        out += ["a run after a cut exited 5 (exists and differs)" for rc in self.rcs if rc == 5]
        return out

    @property
    def redownloaded(self) -> int:
        return self.sent - self.needed


def segdl_env(journal: Path) -> dict:
    return dict(os.environ, SEGDL_JOURNAL=str(journal))


def run_until_cut(args: list[str], env: dict, fs: ForgetfulMount, cut_at: float | None,
                  watch_done: int | None, timeout: float, torn: int | None, out: Path,
                  before_cut=None) -> tuple[int | None, str, str]:
    """Run segdl until it ends, an armed cut fires, ``cut_at`` seconds
    pass, or ``watch_done`` files were reported done; then kill it and cut.
    ``before_cut`` runs between the kill and the cut (the journal as a
    kill -9 leaves it can be read then).
    Returns (exit code or None if killed, stdout, where the cut came)."""
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        proc = subprocess.Popen(args, env=env, stdout=so, stderr=se, start_new_session=True)
        start = time.monotonic()
        where = "end"
        while proc.poll() is None:
            now = time.monotonic() - start
            if fs.cut_happened:
                where = "armed"
                break
            if cut_at is not None and now >= cut_at:
                where = f"t={cut_at:.2f}s"
                break
            if watch_done is not None:
                so.seek(0)
                if len(done_lines(so.read().decode(errors="replace"), out)) >= watch_done:
                    where = f"after {watch_done} done"
                    break
            if now > timeout:
                where = "timeout"
                break
            time.sleep(0.01)
        rc = proc.poll()
        if rc is None:
            kill_tree(proc)
        elif fs.cut_happened:
            where = "armed"
        if before_cut is not None and not fs.cut_happened:
            before_cut()
        fs.cut(torn=torn)
        so.seek(0)
        se.seek(0)
        return (rc if where == "end" else None), so.read().decode(errors="replace"), where


# Where a cut can come.  Each is (name, how): "random" cuts at a random
# instant; "half" when half the files were reported done; the others arm
# the filesystem to cut at the nth such operation, before it takes effect
# or after it did (and before the caller hears of it).
POINTS = [
    ("random", None),
    ("random-torn", None),
    ("half", None),
    ("create-part", dict(op="create", match="*.segdl-part", when="after")),
    ("fdatasync-part", dict(op="fdatasync", match="*.segdl-part", when="before")),
    ("fdatasync-part-after", dict(op="fdatasync", match="*.segdl-part", when="after")),
    ("fsync-part-before-rename", dict(op="fsync", match="*.segdl-part", when="after")),
    ("rename-part", dict(op="rename", match="*.segdl-part", when="before")),
    ("rename-part-after", dict(op="rename", match="*.segdl-part", when="after")),
    ("fsyncdir-out", dict(op="fsyncdir", match="out", when="after")),
    ("journal-commit", dict(op="fdatasync", match="journal.sqlite-wal", when="before")),
    ("journal-commit-fsync", dict(op="fsync", match="journal.sqlite-wal", when="after")),
    ("wal-checkpoint", dict(op="write", match="journal.sqlite", when="before")),
    ("wal-checkpoint-after", dict(op="write", match="journal.sqlite", when="after")),
]


@dataclass
class Job:
    """A trial's download: files on a mirror, and the command that gets them."""

    mirror: object  # tests.servers.PacedMirror (or anything with url, access_log_entries)
    sources: dict[str, bytes]  # name on the mirror (and under out/) -> bytes
    extra: tuple[str, ...] = ()
    duration: float = 1.0  # about how long one uninterrupted run takes

    def args(self, out: Path) -> list[str]:
        urls = [self.mirror.url(name) for name in sorted(self.sources)]
        return [*SEGDL, "get", *urls, "-d", str(out), "--json", *self.extra]

    def sent(self) -> int:
        names = {"/" + n for n in self.sources}
        return sum(e["body_bytes_sent"] for e in self.mirror.access_log_entries() if e["path"] in names)


def claimed_bytes(journal: Path, scratch: Path) -> int:
    copy = journal_copy(journal, scratch)
    if copy is None:
        return 0
    con = sqlite3.connect(copy)
    try:
        return con.execute("SELECT COALESCE(SUM(done), 0) FROM segments").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0
    finally:
        con.close()


def power_trial(job: Job, root: Path, seed: int, points: list[str] | None = None,
                max_cuts: int = 3, timeout: float = 60) -> TrialResult:
    """One trial: up to ``max_cuts`` cuts (chosen by ``seed`` unless
    ``points`` names them), the oracle after each, then a run to the end,
    a last cut after it, and the final check."""
    import random

    rng = random.Random(seed)
    fs = ForgetfulMount(root)
    out, journal = fs.mnt / "out", fs.mnt / "state" / "journal.sqlite"
    scratch = root / "scratch"
    env = segdl_env(journal)
    res = TrialResult(seed, needed=sum(len(b) for b in job.sources.values()))
    job.mirror.reset_access_log()
    table = dict(POINTS)
    if points is None:
        points = [rng.choice(POINTS)[0] for _ in range(rng.randint(1, max_cuts))]
    fs.mount()
    try:
        for point in points:
            how = table[point]
            torn = rng.randrange(1 << 30) if point.endswith("torn") or rng.random() < 0.25 else None
            cut_at = watch = None
            if point.startswith("random"):
                cut_at = rng.uniform(0.05, job.duration * 1.2)
            elif point == "half":
                watch = max(1, len(job.sources) // 2)
            else:
                counts = fs.command(cmd="stats").get("counts", {})
                nth = counts.get(how["op"], 0) // 4 + rng.randint(1, 3)
                fs.command(cmd="arm", nth=nth, torn=torn, **how)
            rc, stdout, where = run_until_cut(job.args(out), env, fs, cut_at, watch, timeout, torn, out)
            res.rcs.append(rc)
            res.cuts.append(f"{point}:{where}" + (f":torn={torn}" if torn is not None else ""))
            fs.mount()
            res.checks.append(check_after_cut(fs.mnt, journal, out, job.sources, done_lines(stdout, out), scratch))
        final = subprocess.run(job.args(out), env=env, capture_output=True, text=True, timeout=timeout)
        res.final_rc, res.final_stderr = final.returncode, final.stderr + "\n" + "\n".join(l for l in final.stdout.splitlines() if "\"done\"" not in l)
        # Exit 0 means durable: a cut right after it loses nothing.
        fs.cut()
        fs.mount()
        res.checks.append(check_after_cut(fs.mnt, journal, out, job.sources, done_lines(final.stdout, out), scratch))
        res.final_ok = all((out / n).exists() and (out / n).read_bytes() == b for n, b in job.sources.items())
        res.sent = job.sent()
    finally:
        fs.unmount()
    return res


@dataclass
class ProgressTrial:
    """A cut mid-download of one paced file: the journal's claims as a
    kill -9 leaves them (read between the kill and the cut) and as the cut
    leaves them, and what the next run fetched."""

    cut_at: float
    where: str
    at_kill: int
    after_cut: int
    fetched: int  # by the run after the cut
    size: int
    per_second: int  # the paced ceiling: connections x rate
    final_rc: int
    final_ok: bool
    problems: list[str]

    @property
    def lost(self) -> int:
        return self.at_kill - self.after_cut


def progress_trial(root: Path, seed: int, size: int, rate: int, connections: int,
                   cut_window: tuple[float, float], extra: tuple[str, ...] = ()) -> ProgressTrial:
    import random

    from servers import PacedMirror

    rng = random.Random(seed)
    (root / "mirror").mkdir(parents=True)
    data = rng.randbytes(size)
    (root / "mirror" / "big.bin").write_bytes(data)
    fs = ForgetfulMount(root / "fs")
    out, journal = fs.mnt / "out", fs.mnt / "state" / "journal.sqlite"
    with PacedMirror(root / "mirror", rate=rate) as mirror:
        job = Job(mirror, {"big.bin": data}, extra=("-x", str(connections), *extra))
        fs.mount()
        try:
            at_kill: list[int] = []
            cut_at = rng.uniform(*cut_window)
            _, _, where = run_until_cut(job.args(out), segdl_env(journal), fs, cut_at, None, 60, None, out,
                                        before_cut=lambda: at_kill.append(claimed_bytes(journal, root / "s-kill")))
            fs.mount()
            after = claimed_bytes(journal, root / "s-cut")
            check = check_after_cut(fs.mnt, journal, out, job.sources, set(), root / "s-check")
            mirror.reset_access_log()
            r = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
            ok = (out / "big.bin").exists() and (out / "big.bin").read_bytes() == data
            return ProgressTrial(cut_at, where, at_kill[0] if at_kill else 0, after, job.sent(), size,
                                 rate * connections, r.returncode, ok, check.problems)
        finally:
            fs.unmount()
