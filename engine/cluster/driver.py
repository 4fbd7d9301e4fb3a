"""``segdl get --ray``: plan the collection over the cluster's nodes, start
one :class:`~.node.NodeEngine` per node and a lease actor, keep each node's
queue filled ahead from its shard (a node whose shard runs out takes files
from the longest other), follow their progress, hand a dead node's
unfinished files to the survivors, and try a file that failed for a
reason another node could change (reset, stall, 5xx) on another node.

Imported only when ``--ray`` is given; it is the one module that connects
to Ray (:func:`connect`)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from collections import deque
from typing import Callable

from ..values.errors import ClusterError, DownloadError, UsageError
from ..rules.lifecycle import COMPLETE, FAILURES
from ..values.request import Request, Settings
from ..values.results import FileResult
from . import plan
from .report import ClusterProgress, ClusterResults, NodeProgress

POLL = 0.25  # seconds between the driver's polls of each node
DEFAULT_JOURNALS = os.path.join(os.environ.get("XDG_STATE_HOME") or "~/.local/state", "segdl", "ray")


def connect(address: str | None):
    """``ray`` connected to the cluster at ``address`` (None: $RAY_ADDRESS
    or ``auto``).  Raises UsageError without the extra, ClusterError when
    no cluster answers."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting home
    addr = address or os.environ.get("RAY_ADDRESS") or "auto"
    if addr.split(":")[0] in ("127.0.0.1", "localhost", "[::1]"):
        # A cluster on this machine's loopback (tests, one-box trials):
        # otherwise Ray swaps 127.0.0.1 for the outward address.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'segdl[ray]'") from None
    if not ray.is_initialized():
        try:
            ray.init(address=addr, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     namespace="segdl")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(f"no Ray cluster at {addr}: {e}") from None
    return ray


def worker_nodes(ray) -> list[dict]:
    """Alive nodes that offer CPUs (a head started with ``--num-cpus 0``
    is kept for Ray's own work), each with a stable name: its host name,
    or host-nodeid when several nodes share one host (tests)."""
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
    if not nodes:
        raise ClusterError("the Ray cluster has no alive node with CPUs to download on")
    hosts = [n.get("NodeManagerHostname") or n["NodeManagerAddress"] for n in nodes]
    out = []
    for n, h in zip(nodes, hosts):
        name = h if hosts.count(h) == 1 else f"{h}-{n['NodeID'][:8]}"
        out.append({"id": n["NodeID"], "name": name})
    return sorted(out, key=lambda n: n["name"])


def pinned(ray, cls, node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))


class Run:
    """One ``--ray`` run: the plan, the actors, and every file's fate."""

    def __init__(self, ray, requests: list[Request], settings: Settings, *, mode: str, journals: str,
                 collection: str | None, on_progress, on_result, on_message) -> None:
        from .lease_actor import Leases
        from .node import NodeEngine

        self.ray, self.requests, self.mode = ray, requests, mode
        self.on_progress, self.on_result, self.on_message = on_progress, on_result, on_message
        self.works = [plan.Work(i, r.size, plan.hosts_of(r.url, r.mirrors)) for i, r in enumerate(requests)]
        self.nodes = worker_nodes(ray)
        # The lease actor on the head (whose loss is the cluster's anyway),
        # else on the driver's node.
        here = next((n["NodeID"] for n in ray.nodes() if n["Alive"] and "node:__internal_head__" in n["Resources"]),
                    ray.get_runtime_context().get_node_id())
        cap = settings.max_per_host or max(settings.connections, 32)
        self.leases = pinned(ray, Leases, here).remote(cap, settings.max_speed)
        self.actors = {n["name"]: pinned(ray, NodeEngine, n["id"]).remote(
            n["name"], settings, journals, self.leases, collection) for n in self.nodes}
        self.where = dict(zip(self.actors, ray.get([a.where.remote() for a in self.actors.values()])))
        self.alive = set(self.actors)
        self.assigned: dict[str, set[int]] = {n: set() for n in self.actors}
        self.attempts: dict[int, int] = {}
        self.final: dict[tuple[int, str], FileResult] = {}  # (file, node) -> result
        self.pending: set[tuple[int, str]] = set()  # (file, node) handed out, not final
        self.backlog: dict[str, deque[int]] = {n: deque() for n in self.actors}  # planned, not handed yet
        self.held: set[int] = set()  # files a node's journal has: not moved to another
        self.ahead = plan.ahead(settings.concurrent_files)
        self.last: dict[str, dict] = {}
        self.errors: dict[str, int] = {}
        self.started = time.monotonic()

    # ------------------------------------------------------------ plan

    def start(self) -> None:
        names = sorted(self.alive)
        sizes = [w.size for w in self.works if w.size is not None]
        if self.mode == "shard" and sizes and plan.split_gain(sizes, len(names)) > 1.25:
            self.on_message(f"one file is {max(sizes) / sum(sizes):.0%} of the collection's bytes: it takes one "
                            f"node its whole time, and more nodes will not finish it sooner")
        if self.mode == "replicate":
            shards = plan.replicate(self.works, names)
        else:
            shards = plan.shard(self.works, names, held=self._held())
        for name, idx in shards.items():
            self.backlog[name].extend(idx)
        self._refill()

    def _refill(self) -> None:
        """Keep each alive node ``ahead`` files beyond what it finished: from
        its backlog first (every node), then (shard mode) from the tail of
        the longest backlog left, whose owner has its ``ahead`` already:
        files no journal holds."""
        out: dict[str, int] = {}
        for _, n in self.pending:
            out[n] = out.get(n, 0) + 1
        for name in sorted(self.alive):
            mine = self.backlog[name]
            take = [mine.popleft() for _ in range(min(self.ahead - out.get(name, 0), len(mine)))]
            out[name] = out.get(name, 0) + len(take)
            self._hand(name, take, journal=None)
        if self.mode != "shard":
            return
        for name in sorted(self.alive):
            if out[name] < self.ahead and not self.backlog[name]:
                take = self._steal(name, self.ahead - out[name])
                out[name] += len(take)
                self._hand(name, take, journal=None)

    def _steal(self, name: str, room: int) -> list[int]:
        others = [n for n in sorted(self.alive) if n != name and self.backlog[n]]
        if not others:
            return []
        richest = max(others, key=lambda n: len(self.backlog[n]))
        source, got = self.backlog[richest], []
        keep: list[int] = []
        while source and len(got) < min(room, (len(source) + 1) // 2):
            ix = source.pop()
            (keep if ix in self.held else got).append(ix)
        source.extend(reversed(keep))
        return got

    def _held(self) -> dict[int, str]:
        """Files a node's journal already has (done or part-way): they stay
        with it, so the same command continues on each node."""
        urls = list({r.url for r in self.requests})
        held_by = self.ray.get([a.holdings.remote(urls) for a in self.actors.values()])
        by_url: dict[str, list[int]] = {}
        for w, r in zip(self.works, self.requests):
            by_url.setdefault(r.url, []).append(w.index)
        held: dict[int, str] = {}
        for name, states in zip(self.actors, held_by):
            for url, state in states.items():
                if state in FAILURES:
                    continue
                for ix in by_url.get(url, ()):
                    held.setdefault(ix, name)
        self.held = set(held)
        return held

    def _hand(self, name: str, indexes: list[int], journal: str | None) -> None:
        from .node import Item

        if not indexes:
            return
        for ix in indexes:
            self.attempts[ix] = self.attempts.get(ix, 0) + 1
            self.assigned[name].add(ix)
            self.pending.add((ix, name))
        self.actors[name].add.remote([Item(self.works[ix], self.requests[ix], journal) for ix in indexes])

    # ------------------------------------------------------------ follow

    def follow(self) -> None:
        while not self._complete():
            time.sleep(POLL)
            names = sorted(self.alive)
            refs = {n: self.actors[n].poll.remote() for n in names}
            for n, ref in refs.items():
                try:
                    got = self.ray.get(ref, timeout=10)
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.GetTimeoutError) as e:
                    self.errors[n] = self.errors.get(n, 0) + 1
                    if isinstance(e, self.ray.exceptions.ActorDiedError) or self.errors[n] >= 3:
                        self._lost(n, e)
                    continue
                self.errors[n] = 0
                self.last[n] = got
                for ix, r in got["results"]:
                    self._settle(ix, n, FileResult(**r))
            self._refill()
            self._progress()

    def _complete(self) -> bool:
        return not self.pending and not any(self.backlog[n] for n in self.alive)

    def _settle(self, ix: int, node: str, result: FileResult) -> None:
        if (ix, node) in self.final:
            return
        if self.mode == "shard" and self._elsewhere(ix, node, result):
            return
        self.final[(ix, node)] = result
        self.pending.discard((ix, node))
        self.on_result(result, node)

    def _elsewhere(self, ix: int, node: str, result: FileResult) -> bool:
        """A file that failed on ``node`` for a reason another node could
        change goes to the least loaded other node, once (the node-attempt
        limit counts it); True when it went."""
        others = sorted(n for n in self.alive if n != node)
        if (not others or self.attempts.get(ix, 1) >= plan.MAX_NODE_ATTEMPTS
                or not plan.try_elsewhere(result.status, result.exit_code, result.error)):
            return False
        target = min(others, key=lambda n: (self._left_bytes(n), n))
        self.pending.discard((ix, node))
        self.assigned[node].discard(ix)
        self.on_message(f"{self._name(ix)} failed on {node} ({result.error}); trying it on {target}")
        self._hand(target, [ix], journal=None)
        return True

    def _lost(self, name: str, why) -> None:
        """A node is gone: its leases return; its unfinished files go to the
        survivors (shard mode), resuming from its journal where they can
        read it, or fail where this was their last chance."""
        self.alive.discard(name)
        self.leases.drop.remote(name)
        self.on_message(f"node {name} lost ({type(why).__name__}); taking over its unfinished files")
        left = sorted(ix for ix in self.assigned[name] if (ix, name) not in self.final)
        if self.mode == "shard":  # handed on: no longer this node's to finish
            self.assigned[name] -= set(left)
            self.pending -= {(ix, name) for ix in left}
        waiting = list(self.backlog[name])  # never handed out: they go on, no attempt spent
        self.backlog[name].clear()
        if self.mode == "replicate":
            for ix in left + waiting:  # its copies are its own: nobody else can make them
                self._fail(ix, name, f"node {name} was lost")
            return
        if waiting and self.alive:
            spread = plan.shard([self.works[ix] for ix in waiting], sorted(self.alive),
                                loads={n: self._left_bytes(n) for n in self.alive})
            for n, idx in spread.items():
                self.backlog[n].extend(idx)
        elif waiting:
            for ix in waiting:
                self._fail(ix, name, f"lost with node {name}: no node left")
        loads = {n: self._left_bytes(n) for n in self.alive}
        re = plan.reassign([self.works[ix] for ix in left], self.attempts, sorted(self.alive), loads)
        for ix in re.failed:
            self._fail(ix, name, f"lost with node {name}, after {self.attempts[ix]} nodes: not tried again")
        dead_journal = self.where[name]["journal"]
        for n, idx in re.placed.items():
            sees = self._sees(n, dead_journal)
            shown = ", ".join(self._name(ix) for ix in idx[:5]) + (", ..." if len(idx) > 5 else "")
            self.on_message(f"{len(idx)} file(s) of {name} to {n}"
                            + (", resuming from its journal" if sees else ", from the start") + f": {shown}")
            self._hand(n, idx, journal=dead_journal if sees else None)

    def _name(self, ix: int) -> str:
        r = self.requests[ix]
        return r.path or r.url.rsplit("/", 1)[-1]

    def _sees(self, node: str, path: str) -> bool:
        try:
            return bool(self.ray.get(self.actors[node].sees.remote(path), timeout=10))
        except Exception:
            return False

    def _fail(self, ix: int, node: str, why: str) -> None:
        r = self.requests[ix]
        self.assigned.setdefault(node, set()).add(ix)
        self._settle(ix, node, FileResult(r.url, r.path or "", "failed", error=why,
                                          exit_code=DownloadError.exit_code))

    def _left_bytes(self, node: str) -> float:
        typical = plan.typical_size(self.works)
        return sum(plan.weight(self.works[ix], typical) for ix in self.assigned[node]
                   if (ix, node) not in self.final)

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        rows = []
        for n in sorted(self.actors):
            got = self.last.get(n, {})
            mine = self.assigned[n]
            ended = [self.final[(ix, n)] for ix in mine if (ix, n) in self.final]
            active = got.get("progress", {}) if n in self.alive else {}
            waiting = self.backlog[n] if n in self.alive else ()
            size = sum(self.works[ix].size or 0 for ix in (*mine, *waiting))
            finished = sum(r.size or 0 for r in ended if r.status in COMPLETE)
            # (a batch's files end before its process has, and its count)
            done = max(finished, int(got.get("done_bytes", 0)) + int(active.get("done", 0)))
            rows.append(NodeProgress(n, n in self.alive, len(ended), len(mine) + len(waiting), done, size,
                                     float(active.get("speed", 0.0))))
        self.on_progress(ClusterProgress(tuple(rows), time.monotonic() - self.started))

    # ------------------------------------------------------------ end

    def stop(self) -> None:
        refs = [self.actors[n].stop.remote() for n in self.alive]
        try:
            self.ray.get(refs, timeout=20)
        except Exception:
            pass

    def results(self) -> ClusterResults:
        """In collection order; a file's results on several nodes by node name."""
        return ClusterResults((r, n) for (_, n), r in sorted(self.final.items()))

    def close(self) -> None:
        for a in [*self.actors.values(), self.leases]:
            try:
                self.ray.kill(a)
            except Exception:
                pass


def download(requests: list[Request], settings: Settings, *, address: str | None = None, mode: str = "shard",
             journals: str | None = None, collection: str | None = None,
             on_progress: Callable[[ClusterProgress], None] | None = None,
             on_result: Callable[[FileResult, str], None] | None = None,
             on_message: Callable[[str], None] | None = None) -> ClusterResults:
    """Download ``requests`` on the cluster; one result per file (per file
    and node in replicate mode).  KeyboardInterrupt stops every node the
    way Ctrl-C stops ``segdl get``; the same call continues later."""
    if mode not in ("shard", "replicate"):
        raise UsageError(f"--ray-mode must be shard or replicate, not {mode!r}")
    ray = connect(address)
    settings = replace(settings, dest=_absolute(settings.dest))
    journals = journals or DEFAULT_JOURNALS
    if not journals.startswith("~"):  # "~" is each node's own home
        journals = os.path.abspath(journals)
    run = Run(ray, list(requests), settings, mode=mode, journals=journals,
              collection=collection, on_progress=on_progress, on_result=on_result or (lambda r, n: None),
              on_message=on_message or (lambda m: None))
    try:
        run.start()
        run.follow()
    except KeyboardInterrupt:
        run.stop()
        raise
    finally:
        run.close()
    return run.results()


def _absolute(dest) -> "os.PathLike":
    from pathlib import Path

    return Path(os.path.abspath(os.path.expanduser(str(dest))))



def status(address: str | None = None, journals: str | None = None) -> list[tuple[str, dict]]:
    """Every node's journal rows, as ``segdl status`` reads one journal:
    (node name, row) pairs.  A journal in ``journals`` that no alive node
    owns (a lost node's, on a shared path) is read by the first node that
    sees it."""
    ray = connect(address)  # first: it sets what Ray reads as it loads
    from .node import NodeEngine

    journals = journals or DEFAULT_JOURNALS
    if not journals.startswith("~"):
        journals = os.path.abspath(journals)
    nodes = worker_nodes(ray)
    actors = {n["name"]: pinned(ray, NodeEngine, n["id"]).remote(n["name"], Settings(), journals, None, None)
              for n in nodes}
    try:
        out = []
        for name, rows in zip(actors, ray.get([a.status_rows.remote() for a in actors.values()])):
            out += [(name, r) for r in rows]
        first = next(iter(actors.values()))
        for path in ray.get(first.journals_seen.remote(journals)):
            name = os.path.basename(path).removesuffix(".sqlite")
            if name not in actors:
                out += [(name, r) for r in ray.get(first.status_rows.remote(path))]
        return out
    finally:
        for a in actors.values():
            ray.kill(a)
