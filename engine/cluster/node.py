"""The engine of one node: a Ray actor pinned to that node.

The driver keeps its queue filled ahead (:meth:`NodeEngine.add`); the
actor feeds what arrives to a long-running engine process (``nodejob``),
one per journal and set of hosts, started once with connection leases for
those hosts from the lease actor.  The engine takes files while it runs,
so the node's connections never wait for a batch's last file, and a
process start is paid once, not per batch.  The node reports its speed
to get its part of the cluster's bandwidth.  The driver calls
:meth:`poll` for results and progress; nothing is pushed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import ray

from . import nodejob
from .plan import PROBES_AT_ONCE, Work

REPORT_PERIOD = 0.5  # seconds between speed reports to the lease actor
LEASE_RETRY = 0.1  # seconds before asking again for leases refused
LINGER = 2.0  # seconds an engine with nothing left waits for more files before it ends


@dataclass(frozen=True, slots=True)
class Item:
    """A file handed to a node."""

    work: Work
    request: object  # Request
    journal: str | None = None  # another node's journal to resume from (a takeover)


class Runner:
    """One engine process on this node, for one journal and one set of
    hosts, and what it was given: url -> the files' indexes, in order."""

    def __init__(self, proc, key: tuple, lease: int) -> None:
        self.proc, self.key, self.lease = proc, key, lease
        self.pending: dict[str, deque[int]] = {}
        self.given: dict[int, Item] = {}
        self.progress: dict = {}
        self.last_error: str | None = None
        self.idle_since: float | None = None
        self.closed = False
        self.reader: threading.Thread | None = None

    def left(self) -> int:
        return sum(len(q) for q in self.pending.values())


def journal_file(journals: str, node: str) -> Path:
    return Path(os.path.expanduser(journals)) / f"{node}.sqlite"


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=8)
class NodeEngine:
    def __init__(self, name: str, settings, journals: str, leases, collection: str | None) -> None:
        self.name = name
        self.journal = journal_file(journals, name)
        self.dest = Path(str(settings.dest).replace("{node}", name))
        self.settings = replace(settings, dest=self.dest)
        self.leases = leases
        self.collection = collection
        self.lock = threading.Lock()
        self.queue: deque[Item] = deque()
        self.results: list[tuple[int, dict]] = []
        self.runners: list[Runner] = []  # its engines, one open per (journal, hosts)
        self.stopping = False
        self.done_bytes = 0  # bytes of this node's engines that have ended
        threading.Thread(target=self._loop, daemon=True, name="segdl-node").start()
        threading.Thread(target=self._report, daemon=True, name="segdl-node-speed").start()

    # ---------------------------------------------------- driver's calls

    def where(self) -> dict:
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                "dest": str(self.dest), "journal": str(self.journal),
                "node_id": ray.get_runtime_context().get_node_id()}

    def add(self, items: list[Item]) -> None:
        with self.lock:
            self.queue.extend(items)

    def poll(self) -> dict:
        with self.lock:
            out, self.results = self.results, []
            p = _sum_progress([r.progress for r in self.runners])
            running = sum(r.left() for r in self.runners)
            return {"results": out, "progress": p, "busy": bool(running or self.queue),
                    "queued": len(self.queue), "running": running, "done_bytes": self.done_bytes}

    def sees(self, path: str) -> bool:
        return os.path.exists(path)

    def holdings(self, urls: list[str]) -> dict[str, str]:
        """url -> state of the files this node's journal has under its dest."""
        from segdl.engine.journal.writer import Journal

        if not self.journal.exists():
            return {}
        j = Journal(self.journal, readonly=True)
        try:
            wanted = set(urls)
            return {r["url"]: r["state"] for r in j.files()
                    if r["url"] in wanted and Path(r["path"]).is_relative_to(self.dest)}
        finally:
            j.close()

    def status_rows(self, journal: str | None = None) -> list[dict]:
        from segdl.engine.journal.writer import Journal

        path = Path(journal) if journal else self.journal
        if not path.exists():
            return []
        j = Journal(path, readonly=True)
        try:
            return j.status_rows()
        finally:
            j.close()

    def journals_seen(self, journals: str) -> list[str]:
        d = Path(os.path.expanduser(journals))
        return sorted(str(p) for p in d.glob("*.sqlite")) if d.is_dir() else []

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop as Ctrl-C stops ``segdl get``: the batch commits what is
        durable and ends; nothing queued starts."""
        with self.lock:
            self.stopping = True
            self.queue.clear()
            procs = [r.proc for r in self.runners]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout)
            except Exception:
                p.kill()
        return True

    # ---------------------------------------------------- the work loop

    def _loop(self) -> None:
        """Feed each queued file to the engine for its journal and hosts,
        starting one (with leases) when there is none; end the engines
        that have had nothing to do for LINGER seconds.  Never blocks on a
        lease: an engine that ends is what frees one."""
        while True:
            with self.lock:
                if self.stopping:
                    procs = [r.proc for r in self.runners]
                    break
                items = list(self.queue)
            self._retire()
            if not items:
                time.sleep(0.05)
                continue
            fed = False
            for key in dict.fromkeys((i.journal, i.work.hosts) for i in items):
                same = [i for i in items if (i.journal, i.work.hosts) == key]
                runner = next((r for r in self.runners if r.key == key and not r.closed and r.proc.poll() is None),
                              None)
                if runner is None:
                    lease = self._lease(key[1])
                    runner = self._start(key, lease, same) if lease else None
                    if runner is None:
                        continue  # no leases now (or stopping): asked again next turn
                elif not nodejob.add(runner.proc, tuple(i.request for i in same)):
                    continue  # it ended meanwhile: the next turn starts another
                with self.lock:
                    for i in same:
                        self.queue.remove(i)
                        runner.pending.setdefault(i.request.url, deque()).append(i.work.index)
                        runner.given[i.work.index] = i
                    runner.idle_since = None
                fed = True
            if not fed:
                time.sleep(LEASE_RETRY)
        # The engines die with the thread that started them (PR_SET_PDEATHSIG
        # follows the thread): it lives until they have stopped as Ctrl-C
        # stops segdl get, durable progress committed.
        for p in procs:
            try:
                p.wait(30)
            except Exception:
                p.kill()

    def _lease(self, hosts: tuple[str, ...]) -> int:
        """Connections to ``hosts`` for an engine: what its transfers use
        at once (-j files x -x connections), and at least one per probe it
        may run at once (PROBES_AT_ONCE); 0 when the lease actor refuses
        for now (it then counts this node as waiting, for its fair part)."""
        s = self.settings
        return ray.get(self.leases.acquire.remote(self.name, hosts,
                                                  max(s.concurrent_files * s.connections, PROBES_AT_ONCE)))

    def _start(self, key: tuple, lease: int, first: list[Item]) -> Runner | None:
        journal, hosts = key
        s = self.settings
        speed = ray.get(self.leases.share.remote(self.name))
        settings = replace(s, journal=Path(journal) if journal else self.journal, max_per_host=lease,
                           connections=min(s.connections, lease), max_speed=speed)
        log = self.journal.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if self.stopping:
                self.leases.release.remote(self.name, hosts, lease)
                return None
            p = nodejob.spawn(nodejob.Batch(tuple(i.request for i in first), settings, self.collection), log)
            runner = Runner(p, key, lease)
            self.runners.append(runner)
        runner.reader = threading.Thread(target=self._read, args=(runner,), daemon=True)
        runner.reader.start()
        return runner

    def _retire(self) -> None:
        """Close an engine with nothing left (after LINGER); reap one that
        ended: its leases return, a file it said nothing of fails alone."""
        now = time.monotonic()
        for r in list(self.runners):
            key = r.key
            with self.lock:
                queued = any((i.journal, i.work.hosts) == key for i in self.queue)
                idle = not r.left() and not queued
                if idle and r.idle_since is None:
                    r.idle_since = now
            if idle and not r.closed and now - r.idle_since >= LINGER:
                r.closed = True
                nodejob.close(r.proc)
            if r.proc.poll() is None:
                continue
            if r.reader is not None:
                r.reader.join(10)
            self.leases.release.remote(self.name, key[1], r.lease)
            with self.lock:
                self.runners.remove(r)
                self.done_bytes += int(r.progress.get("done", 0))
                lost = [ix for q in r.pending.values() for ix in q]
                if lost and not self.stopping:
                    # The engine ended without a word on these (it stopped
                    # on a job-wide error): they fail here, alone.
                    why = r.last_error or f"the engine on {self.name} ended (exit {r.proc.returncode})"
                    for ix in lost:
                        req = r.given[ix].request
                        self.results.append((ix, {"url": req.url, "path": req.path or "", "status": "failed",
                                                  "error": why, "exit_code": r.proc.returncode or 1}))

    def _report(self) -> None:
        """The node's speed to the lease actor; its share back to the
        engines, split evenly among those that run."""
        allotted = 0.0
        while True:
            time.sleep(REPORT_PERIOD)
            with self.lock:
                if self.stopping:
                    return
                live = [r for r in self.runners if r.proc.poll() is None]
                speed = sum(float(r.progress.get("speed", 0.0)) for r in live)
            try:
                new = ray.get(self.leases.report.remote(self.name, speed, allotted, bool(live)), timeout=5)
            except Exception:
                continue
            if live and new != allotted:
                allotted = float(new)
                for r in live:
                    nodejob.set_speed(r.proc, int(new / len(live)) if new else 0)

    def _read(self, r: Runner) -> None:
        for line in r.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "result" in ev:
                    res = ev["result"]
                    q = r.pending.get(res["url"])
                    if q:
                        self.results.append((q.popleft(), res))
                elif "progress" in ev:
                    r.progress = ev["progress"]
                elif "error" in ev:
                    r.last_error = ev["error"]


def _sum_progress(parts: list[dict]) -> dict:
    """The node's progress: its engines' figures added up."""
    out = {"done": 0, "size": 0, "speed": 0.0, "finished": 0, "files": 0, "active": []}
    for p in parts:
        for k in ("done", "size", "speed", "finished", "files"):
            out[k] += p.get(k) or 0
        out["active"] += p.get("active") or []
    return out
