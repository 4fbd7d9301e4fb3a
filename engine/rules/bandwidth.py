"""Sharing bandwidth among connections: pure.

Each connection is capped by a token bucket in the transport's write
callback; this module decides the caps so the job stays under its total and
each file under its own.
"""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024 * KiB
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": 1024 * MiB}
_RATE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMG]?)(?:I?B)?(?:/S)?\s*$", re.I)


def parse_rate(text: str) -> int:
    """``500K``, ``40M``, ``1.5G``, ``123`` (also ``40MB``, ``40M/s``) -> bytes/s;
    K, M, G are 1024-based, as in aria2.  ``0`` means unlimited."""
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"not a rate: {text!r} (use e.g. 500K, 40M)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


# Demand.  A file that runs well below what it is allowed (a slow mirror, a
# server's own per-connection cap) is given what it uses plus HEADROOM, and
# the rest of the job's limit goes to the files that can use it: max-min
# fairness.  A file that uses USES_ALL of its allotment may want more and
# takes part in the even split again.  FLOOR keeps a stalled file from
# being starved when it recovers.
HEADROOM = 1.25
USES_ALL = 0.9
FLOOR = 64 * KiB


def demand(rate: float, allotted: float) -> float | None:
    """What a file can use, judged by its speed under the allotment it had
    (bytes/s); None when it used (nearly) all of it: it may want more."""
    if allotted <= 0 or rate >= USES_ALL * allotted:
        return None
    return rate


def share(running: dict[int, int], total: int, per_file: int,
          demands: dict[int, float | None] | None = None,
          caps: dict[int, int] | None = None) -> dict[int, int]:
    """Per-connection cap for each file.

    ``running``: file -> connections it has running.  ``total``: the job's
    limit, ``per_file``: each file's limit (bytes/s; 0 = none).
    ``demands``: file -> what it can use (see :func:`demand`; missing or
    None: unknown, as much as it is given).  ``caps``: file -> its own
    limit (bytes/s), below ``per_file`` where both are set.

    The job's limit is filled like water: a file that can use less than an
    even part gets what it uses plus headroom, the others share the rest
    evenly, none above ``per_file``.  A file's part is split evenly over
    its connections.  Returns file -> bytes/s for each of its connections
    (0 = uncapped); a file with no running connection gets the cap a first
    connection would get.
    """
    caps = {f: c for f, c in (caps or {}).items() if c}
    if not total and not per_file and not caps:
        return {f: 0 for f in running}

    def cap(f: int) -> float:
        limits = [x for x in (per_file, caps.get(f, 0)) if x]
        return min(limits) if limits else float("inf")

    active = [f for f, n in running.items() if n > 0]
    parts: dict[int, float] = {}
    if total:
        def want(f: int) -> float:
            d = (demands or {}).get(f)
            return min(cap(f), float("inf") if d is None else max(FLOOR, d * HEADROOM))

        left = float(total)
        order = sorted(active, key=want)
        for i, f in enumerate(order):
            parts[f] = min(want(f), left / (len(order) - i))
            left -= parts[f]
    else:
        parts = {f: cap(f) for f in active}
    out = {}
    for f, n in running.items():
        if n > 0:
            out[f] = 0 if parts[f] == float("inf") else max(1, int(parts[f] // n))
        else:
            first = min(cap(f), total or float("inf"))
            out[f] = 0 if first == float("inf") else int(first)
    return out
