"""The lease actor: one per ``segdl get --ray``, on the driver's node.

It holds the cluster's :class:`~.leases.LeaseBook` (connections per host)
and the nodes' last speed reports, from which it shares ``--max-speed``
(:func:`~.leases.speed_shares`).  Every call is quick and answers at once;
a node that is refused asks again a moment later.
"""

from __future__ import annotations

import ray

from .leases import LeaseBook, speed_shares


@ray.remote(num_cpus=0, max_restarts=0)
class Leases:
    def __init__(self, cap: int, max_speed: int) -> None:
        self.book = LeaseBook(cap)
        self.max_speed = max_speed
        self.reports: dict[str, tuple[float, float]] = {}  # busy node -> (speed, allotted)
        self.peak: dict[str, int] = {}  # host -> most leases out at once

    def acquire(self, node: str, hosts: tuple[str, ...], want: int) -> int:
        n = self.book.acquire(node, tuple(hosts), want)
        for h in hosts:
            self.peak[h] = max(self.peak.get(h, 0), self.book.in_use(h))
        return n

    def release(self, node: str, hosts: tuple[str, ...], n: int) -> None:
        self.book.release(node, tuple(hosts), n)

    def report(self, node: str, speed: float, allotted: float, busy: bool) -> int:
        """A node's speed under its allotment; returns its new allotment."""
        if busy:
            self.reports[node] = (speed, allotted)
        else:
            self.reports.pop(node, None)
        return self.share(node)

    def share(self, node: str) -> int:
        """What ``node`` may use now (a node about to start counts as busy)."""
        reports = dict(self.reports)
        reports.setdefault(node, (0.0, 0.0))
        return speed_shares(self.max_speed, reports)[node]

    def drop(self, node: str) -> None:
        self.book.drop(node)
        self.reports.pop(node, None)

    def stats(self) -> dict:
        return {"peak": dict(self.peak), "cap": self.book.cap}
