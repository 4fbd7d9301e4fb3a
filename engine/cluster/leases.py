"""Cluster-wide limits as pure arithmetic: connection leases per host and
the sharing of ``--max-speed`` among nodes.  The lease actor
(``lease_actor``) holds one :class:`LeaseBook` and calls
:func:`speed_shares`; nothing here knows about Ray.

A node may open to a host only as many connections as it holds leases
for; the book never grants more than the host's cap in all, and when
several nodes want the same host each gets at most an even part of the
cap (at least one), so one node cannot starve the others.  The sum of
what is granted is the cluster-wide connection count, which is what a
server's connection limit counts (nginx's ``limit_conn``: requests being
processed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..rules.bandwidth import demand, share


@dataclass
class LeaseBook:
    cap: int  # connections to one host, the whole cluster together
    held: dict[str, dict[str, int]] = field(default_factory=dict)  # host -> node -> leases
    waiting: dict[str, set[str]] = field(default_factory=dict)  # host -> nodes refused so far

    def free(self, host: str) -> int:
        return self.cap - sum(self.held.get(host, {}).values())

    def fair(self, host: str, node: str) -> int:
        """An even part of the cap among the nodes that hold or want it."""
        wanting = set(self.held.get(host, {})) | self.waiting.get(host, set()) | {node}
        return max(1, self.cap // len(wanting))

    def acquire(self, node: str, hosts: tuple[str, ...], want: int) -> int:
        """Leases on every one of ``hosts`` for ``node``: the number granted
        (the same on each host), 0 when it must wait and ask again."""
        n = min([want] + [min(self.free(h), self.fair(h, node) - self.held.get(h, {}).get(node, 0))
                          for h in hosts])
        if n <= 0:
            for h in hosts:
                self.waiting.setdefault(h, set()).add(node)
            return 0
        for h in hosts:
            self.held.setdefault(h, {})[node] = self.held.get(h, {}).get(node, 0) + n
            self.waiting.get(h, set()).discard(node)
        return n

    def release(self, node: str, hosts: tuple[str, ...], n: int) -> None:
        for h in hosts:
            mine = self.held.get(h, {})
            left = mine.get(node, 0) - n
            if left > 0:
                mine[node] = left
            else:
                mine.pop(node, None)

    def drop(self, node: str) -> None:
        """A node is gone: its leases return, it waits for nothing."""
        for mine in self.held.values():
            mine.pop(node, None)
        for w in self.waiting.values():
            w.discard(node)

    def in_use(self, host: str) -> int:
        return sum(self.held.get(host, {}).values())


def speed_shares(total: int, reports: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Each busy node's part of the cluster's ``--max-speed`` (bytes/s).

    ``reports``: node -> (its speed now, what it was allotted).  As the
    engine shares a job's limit among files, a node that runs well below
    its part (slow disk, its files' own limits) is given what it uses plus
    headroom, and the others share the rest: max-min fairness.  0 means
    unlimited (``total`` is 0)."""
    if not total:
        return {n: 0 for n in reports}
    names = sorted(reports)
    demands = {i: demand(*reports[n]) for i, n in enumerate(names)}
    caps = share({i: 1 for i in range(len(names))}, total, 0, demands)
    return {n: caps[i] for i, n in enumerate(names)}
