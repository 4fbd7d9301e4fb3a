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


def share(running: dict[int, int], total: int, per_file: int) -> dict[int, int]:
    """Per-connection cap for each file.

    ``running``: file -> connections it has running.  ``total``: the job's
    limit, ``per_file``: each file's limit (bytes/s; 0 = none).  Every running
    file gets an equal part of ``total``, at most ``per_file``, split evenly
    over its connections.  Returns file -> bytes/s for each of its
    connections (0 = uncapped); a file with no running connection gets the
    cap a first connection would get.
    """
    if not total and not per_file:
        return {f: 0 for f in running}
    active = sum(1 for n in running.values() if n > 0)
    budget = min(per_file or total, total / max(1, active) if total else per_file)
    caps = {}
    for f, n in running.items():
        caps[f] = max(1, int(budget // n)) if n > 0 else min(per_file or total, total or per_file)
    return caps
