"""The engine of one node: a Ray actor pinned to that node.

It works through the files the driver hands it (:meth:`NodeEngine.add`),
a batch at a time (``plan.next_batch``): it takes connection leases for the
batch's hosts from the lease actor, runs the batch in a process of its own
(``nodejob``) with its own journal, on this node's disk, and reports its
speed to get its part of the cluster's bandwidth.  The driver calls
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
from .plan import MAX_BATCH, Work, next_batch

REPORT_PERIOD = 0.5  # seconds between speed reports to the lease actor
LEASE_RETRY = 0.1  # seconds before asking again for leases refused


@dataclass(frozen=True, slots=True)
class Item:
    """A file handed to a node."""

    work: Work
    request: object  # Request
    journal: str | None = None  # another node's journal to resume from (a takeover)


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
        self.progress: dict = {}
        self.busy = False
        self.stopping = False
        self.proc = None
        self.done_bytes = 0  # bytes of this node's batches that have ended
        threading.Thread(target=self._loop, daemon=True, name="segdl-node").start()

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
            p = dict(self.progress)
            return {"results": out, "progress": p, "busy": self.busy or bool(self.queue),
                    "queued": len(self.queue), "done_bytes": self.done_bytes}

    def sees(self, path: str) -> bool:
        return os.path.exists(path)

    def holdings(self, urls: list[str]) -> dict[str, str]:
        """url -> state of the files this node's journal has under its dest."""
        from segdl.engine.journal import Journal

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
        from segdl.engine.journal import Journal

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
            p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout)
            except Exception:
                p.kill()
        return True

    # ---------------------------------------------------- the work loop

    def _loop(self) -> None:
        while True:
            with self.lock:
                if self.stopping:
                    return
                items = list(self.queue)
            if not items:
                time.sleep(0.05)
                continue
            first = items[0]
            same = [i for i in items if i.journal == first.journal]
            lease = self._lease(first.work.hosts, len([i for i in same if i.work.hosts == first.work.hosts]))
            if not lease:
                return  # stopping
            chosen = {w.index for w in next_batch([i.work for i in same], lease)}
            with self.lock:
                batch = [i for i in self.queue if i.work.index in chosen and i.journal == first.journal]
                for i in batch:
                    self.queue.remove(i)
                self.busy = True
            try:
                self._run(batch, lease, first.journal)
            finally:
                self.leases.release.remote(self.name, first.work.hosts, lease)
                with self.lock:
                    self.busy = False

    def _lease(self, hosts: tuple[str, ...], files: int) -> int:
        """Connections to ``hosts`` for the next batch: what its transfers
        use at once (-j files x -x connections), or more, up to one per
        file for the engine's probes (at most MAX_BATCH at once), since
        the batch may hold as many files as it has leases, and fewer
        batches start fewer processes."""
        s = self.settings
        want = max(min(files, s.concurrent_files) * s.connections, min(files, MAX_BATCH))
        while True:
            with self.lock:
                if self.stopping:
                    return 0
            n = ray.get(self.leases.acquire.remote(self.name, hosts, want))
            if n:
                return n
            time.sleep(LEASE_RETRY)

    def _run(self, batch: list[Item], lease: int, journal: str | None) -> None:
        s = self.settings
        speed = ray.get(self.leases.share.remote(self.name))
        settings = replace(s, journal=Path(journal) if journal else self.journal, max_per_host=lease,
                           connections=min(s.connections, lease), max_speed=speed)
        pending: dict[str, deque[int]] = {}
        for i in batch:
            pending.setdefault(i.request.url, deque()).append(i.work.index)
        log = self.journal.with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if self.stopping:
                return
            p = self.proc = nodejob.spawn(nodejob.Batch(tuple(i.request for i in batch), settings,
                                                        self.collection), log)
        reader = threading.Thread(target=self._read, args=(p, pending), daemon=True)
        reader.start()
        allotted = float(speed)
        while p.poll() is None:
            time.sleep(REPORT_PERIOD)
            with self.lock:
                now_speed = float(self.progress.get("speed", 0.0))
            try:
                new = ray.get(self.leases.report.remote(self.name, now_speed, allotted, True), timeout=5)
            except Exception:
                continue
            if new != allotted:
                allotted = float(new)
                nodejob.set_speed(p, new)
        reader.join(10)
        self.leases.report.remote(self.name, 0.0, 0.0, False)
        with self.lock:
            self.proc = None
            self.done_bytes += int(self.progress.get("done", 0))
            self.progress = {}
            lost = [ix for q in pending.values() for ix in q]
            if lost and not self.stopping:
                # The batch ended without a word on these (the engine
                # stopped on a job-wide error): they fail here, alone.
                why = self._last_error or f"the engine on {self.name} ended (exit {p.returncode})"
                for ix, i in ((i.work.index, i) for i in batch):
                    if ix in lost:
                        self.results.append((ix, {"url": i.request.url, "path": i.request.path or "",
                                                  "status": "failed", "error": why, "exit_code": p.returncode or 1}))
            self._last_error = None

    _last_error: str | None = None

    def _read(self, p, pending: dict[str, deque[int]]) -> None:
        for line in p.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if "result" in ev:
                    r = ev["result"]
                    q = pending.get(r["url"])
                    if q:
                        self.results.append((q.popleft(), r))
                elif "progress" in ev:
                    self.progress = ev["progress"]
                elif "error" in ev:
                    self._last_error = ev["error"]
