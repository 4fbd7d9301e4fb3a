"""Run one command as a child process and measure the whole process tree.

* wall time: ``perf_counter`` from just before ``Popen`` to ``wait4`` returning;
* CPU: user + sys from ``os.wait4`` (the child plus every descendant it
  waited for), cross-checked with the ``RUSAGE_CHILDREN`` delta;
* memory: every ``interval`` seconds the child and all its descendants (found
  by parent pid, plus anything left in its process group) are looked up in
  /proc and their ``VmRSS`` summed; the peak of that sum is reported.  The sum
  of ``Pss`` (shared pages divided among sharers, so forked workers are not
  double counted) is sampled alongside.

The child runs in its own session/process group; on timeout the whole group
is killed.  Processes still in the group after the child exited are
reported (``leftover``) and killed: a tool must not leave workers behind.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_TIMEOUT = 600.0
SAMPLE_INTERVAL = 0.05
_TAIL_BYTES = 4000


@dataclass
class Measurement:
    """What one measured run produced (all sizes in bytes, times in seconds)."""

    argv: list[str]
    returncode: int | None = None
    timed_out: bool = False
    start_epoch: float = 0.0
    wall_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    children_cpu_s: float = 0.0  # RUSAGE_CHILDREN delta (cross-check of user+sys)
    sampled_cpu_s: float = 0.0  # last /proc utime+stime seen per process, summed (lower
    #                             bound; far above cpu_s = a process was never waited for)
    max_single_rss: int = 0  # ru_maxrss of the largest single process
    peak_rss: int = 0  # peak of the summed VmRSS over the tree
    peak_pss: int = 0  # peak of the summed Pss over the tree
    peak_procs: int = 0  # most processes seen in the tree at once
    samples: int = 0
    leftover: list[str] = field(default_factory=list)  # processes outliving the child
    stdout_tail: str = ""
    stderr_tail: str = ""

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cpu_s"] = self.cpu_s
        return d


# --------------------------------------------------------------------------- /proc


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> tuple[int, int, str, float] | None:
    """(ppid, pgrp, comm, utime+stime seconds) of ``pid`` from /proc/<pid>/stat.

    None if the process is gone.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    lpar, rpar = raw.find(b"("), raw.rfind(b")")
    rest = raw[rpar + 2:].split()  # rest[0] is field 3 (state)
    cpu = (int(rest[11]) + int(rest[12])) / _TICKS  # fields 14, 15
    return int(rest[1]), int(rest[2]), raw[lpar + 1:rpar].decode(errors="replace"), cpu


def process_tree(root: int, cpu: dict[int, float] | None = None) -> dict[int, str]:
    """pid -> comm of ``root``, its descendants and the members of its process group.

    If ``cpu`` is given, it is updated with pid -> utime+stime of those processes.
    """
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    times: dict[int, float] = {}
    group: set[int] = set()
    with os.scandir("/proc") as it:
        for entry in it:
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            info = _stat_fields(pid)
            if info is None:
                continue
            parents[pid], pgrp, names[pid], times[pid] = info
            if pgrp == root:
                group.add(pid)
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = set(), [root] if root in names else []
    for _ in range(100_000):  # bounded walk
        if not todo:
            break
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo.extend(children.get(pid, ()))
    found = {pid: names[pid] for pid in tree | group if pid in names}
    if cpu is not None:
        cpu.update((pid, times[pid]) for pid in found)
    return found


def _status_kib(pid: int, path: str, key: bytes) -> int:
    """Value in KiB of line ``key`` in /proc/<pid>/<path> (0 if absent or gone)."""
    try:
        with open(f"/proc/{pid}/{path}", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_memory(pids) -> tuple[int, int]:
    """(sum of VmRSS, sum of Pss) in bytes over ``pids``."""
    rss = sum(_status_kib(p, "status", b"VmRSS:") for p in pids)
    pss = sum(_status_kib(p, "smaps_rollup", b"Pss:") for p in pids)
    return rss * 1024, pss * 1024


# --------------------------------------------------------------------------- sampler


class _Sampler(threading.Thread):
    """Samples the tree's memory until stopped; kills the group at the deadline."""

    def __init__(self, pid: int, interval: float, deadline: float, m: Measurement):
        super().__init__(daemon=True, name="bench-sampler")
        self.pid, self.interval, self.deadline, self.m = pid, interval, deadline, m
        self.stop_event = threading.Event()
        self.cpu: dict[int, float] = {}  # pid -> last utime+stime seen

    def run(self) -> None:
        max_samples = int((self.deadline - time.monotonic()) / self.interval) + 100
        for _ in range(max(1, max_samples)):
            if self.stop_event.is_set():
                return
            self.sample()
            if time.monotonic() >= self.deadline:
                self.m.timed_out = True
                _kill_group(self.pid)
                return
            self.stop_event.wait(self.interval)

    def sample(self) -> None:
        tree = process_tree(self.pid, self.cpu)
        if not tree:
            return
        rss, pss = tree_memory(tree)
        m = self.m
        m.samples += 1
        m.peak_rss = max(m.peak_rss, rss)
        m.peak_pss = max(m.peak_pss, pss)
        m.peak_procs = max(m.peak_procs, len(tree))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _leftovers(pgid: int) -> list[str]:
    """Processes still in the (finished) child's group: report, then kill them."""
    left = [f"{pid}:{comm}" for pid, comm in process_tree(pgid).items() if pid != pgid]
    if left:
        _kill_group(pgid)
    return left


# --------------------------------------------------------------------------- public


def run_measured(argv: list[str], *, log_dir: Path, timeout: float = DEFAULT_TIMEOUT,
                 interval: float = SAMPLE_INTERVAL, cwd: str | None = None,
                 env: dict | None = None) -> Measurement:
    """Run ``argv`` to completion (or ``timeout``) and measure it.

    stdout/stderr go to ``log_dir/stdout.log`` / ``stderr.log``; their tails
    are kept in the result.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / "stdout.log", log_dir / "stderr.log"
    m = Measurement(argv=list(argv))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        m.start_epoch = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=cwd, env=env, start_new_session=True)
        sampler = _Sampler(proc.pid, interval, time.monotonic() + timeout, m)
        sampler.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:  # KeyboardInterrupt: never leave the tool running
            _kill_group(proc.pid)
            proc.wait(timeout=10)
            raise
        finally:
            sampler.stop_event.set()
        m.wall_s = time.perf_counter() - t0
        sampler.join(timeout=5)
        m.sampled_cpu_s = sum(sampler.cpu.values())
    proc.returncode = m.returncode = os.waitstatus_to_exitcode(status)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m.user_s, m.sys_s = ru.ru_utime, ru.ru_stime
    m.children_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    m.max_single_rss = ru.ru_maxrss * 1024
    m.leftover = _leftovers(proc.pid)
    m.stdout_tail, m.stderr_tail = _tail(out_path), _tail(err_path)
    return m
