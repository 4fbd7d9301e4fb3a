"""Which node downloads which file: pure, no Ray, no I/O.

A collection is planned as *shards*, one per node, balanced by bytes
(longest-processing-time first: the largest unplaced file goes to the least
loaded node, which is within 4/3 of the best possible balance).  Files a
node already holds (done, or partly downloaded in its journal) stay with
it, so the same command run again continues where each node stopped.

Each node is handed its shard a part at a time, :func:`ahead` files
beyond what it has finished, and feeds them to one running engine per
set of hosts; :func:`try_elsewhere` says which failures another node
could change.

A file is never split across nodes by byte range: see the README
("Why a file is not split across nodes") and :func:`makespan`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Times a file may be handed to a node.  A node that dies takes its
#: unfinished files with it; they go to another node once.  When that one
#: dies too, the file fails alone (it may be what kills nodes).
MAX_NODE_ATTEMPTS = 2

#: Requests a node's engine may have out at once for its probes (the
#: engine probes up to 16 files ahead): the least lease a node asks for.
PROBES_AT_ONCE = 16


@dataclass(frozen=True, slots=True)
class Work:
    """One file of the collection, as the planner sees it."""

    index: int  # position in the collection: results come back in this order
    size: int | None  # bytes, when the manifest says
    hosts: tuple[str, ...]  # the hosts it may be fetched from (origin, mirrors)


def hosts_of(url: str, mirrors: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``host[:port]`` of each URL a file may come from, once each, in order."""
    return tuple(dict.fromkeys(urlsplit(u).netloc.lower() for u in (url, *mirrors)))


def weight(work: Work, typical: float) -> float:
    """Bytes to balance: the known size, else the collection's typical size."""
    return float(work.size) if work.size is not None else typical


def typical_size(works: list[Work]) -> float:
    """The mean known size (1 when none is known: balance by count)."""
    known = [w.size for w in works if w.size is not None]
    return sum(known) / len(known) if known else 1.0


def shard(works: list[Work], nodes: list[str], held: dict[int, str] | None = None,
          loads: dict[str, float] | None = None) -> dict[str, list[int]]:
    """Place every file on one node, balancing bytes.

    ``held``: file index -> a node that has it already (kept there when
    that node is in ``nodes``).  ``loads``: bytes each node has to do
    already (a reassignment adds to running shards).  Returns node ->
    file indexes, largest first (so a shard's tail is its small files)."""
    if not nodes:
        raise ValueError("no node to place files on")
    typical = typical_size(works)
    load = {n: float((loads or {}).get(n, 0.0)) for n in nodes}
    out: dict[str, list[int]] = {n: [] for n in nodes}
    free: list[Work] = []
    for w in works:
        owner = (held or {}).get(w.index)
        if owner in load:
            out[owner].append(w.index)
            load[owner] += weight(w, typical)
        else:
            free.append(w)
    for w in sorted(free, key=lambda w: (-weight(w, typical), w.index)):
        n = min(nodes, key=lambda n: (load[n], nodes.index(n)))
        out[n].append(w.index)
        load[n] += weight(w, typical)
    by_index = {w.index: w for w in works}
    for n in out:
        out[n].sort(key=lambda i: (-weight(by_index[i], typical), i))
    return out


def replicate(works: list[Work], nodes: list[str]) -> dict[str, list[int]]:
    """Every file on every node, largest first."""
    typical = typical_size(works)
    order = [w.index for w in sorted(works, key=lambda w: (-weight(w, typical), w.index))]
    return {n: list(order) for n in nodes}


@dataclass(frozen=True, slots=True)
class Reassignment:
    placed: dict[str, list[int]]  # survivor -> files it takes over
    failed: list[int]  # files that have had their MAX_NODE_ATTEMPTS


def reassign(lost: list[Work], attempts: dict[int, int], survivors: list[str],
             loads: dict[str, float]) -> Reassignment:
    """A dead node's unfinished files: each one that has been handed out
    fewer than :data:`MAX_NODE_ATTEMPTS` times goes to a survivor (bytes
    balanced against what each still has to do); the others fail, alone.
    With no survivor every file fails."""
    again = [w for w in lost if attempts.get(w.index, 1) < MAX_NODE_ATTEMPTS]
    failed = [w.index for w in lost if attempts.get(w.index, 1) >= MAX_NODE_ATTEMPTS]
    if not survivors:
        return Reassignment({}, sorted(failed + [w.index for w in again]))
    placed = {n: f for n, f in shard(again, survivors, loads=loads).items() if f}
    return Reassignment(placed, sorted(failed))


#: What a hard HTTP answer looks like in a failure's message (engine/http.py
#: names a 404, 410, 401/403 so): the server said no, wherever asked from.
_HARD_HTTP = re.compile(r"^HTTP [0-9]{3} \(")


def try_elsewhere(status: str, exit_code: int, error: str | None) -> bool:
    """Whether a file that failed on one node may succeed on another: a
    download failure the engine gave up on after its retries (connection
    reset, stall, 5xx, a body cut short), not a hard HTTP answer (404,
    410...), a hash mismatch, a usage or disk problem."""
    from ..values.errors import EXIT_DOWNLOAD_FAILED

    return status == "failed" and exit_code == EXIT_DOWNLOAD_FAILED and not _HARD_HTTP.match(error or "")


def ahead(concurrent_files: int) -> int:
    """Files a node is given beyond what it has finished: enough that its
    engine always has the next ones when a file ends, between two polls
    of the driver."""
    return max(4 * PROBES_AT_ONCE, 8 * concurrent_files)


def makespan(sizes: list[int], nodes: int, split: bool) -> float:
    """Bytes the busiest node must fetch, a lower bound of the wall time in
    units of one node's bandwidth: with whole files it is at least the
    largest file; split by byte range, the even share."""
    if not sizes or nodes <= 0:
        return 0.0
    even = sum(sizes) / nodes
    return even if split else max(even, float(max(sizes)))


def split_gain(sizes: list[int], nodes: int) -> float:
    """How much faster the best case gets if large files were split across
    nodes: ``makespan(whole) / makespan(split)``, >= 1.  It is above 1
    only when one file is larger than the even share of the collection."""
    s = makespan(sizes, nodes, split=True)
    return makespan(sizes, nodes, split=False) / s if s else 1.0


