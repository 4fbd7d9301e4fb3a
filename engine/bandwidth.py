"""Sharing bandwidth among connections: pure.

libcurl caps each connection (CURLOPT_MAX_RECV_SPEED_LARGE); this module
decides the caps so the job stays under its total and each file under its
own, with what a capped file cannot use going to the others (water-filling).
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
_UNITS = {"": 1, "B": 1, "K": KiB, "M": MiB, "G": 1024 * MiB}


def parse_rate(text: str) -> int:
    """``500K``, ``40M``, ``1.5G``, ``123`` -> bytes/s (K, M, G are 1024-based,
    as in aria2).  ``0`` means unlimited."""
    t = text.strip().upper().removesuffix("/S").removesuffix("B") if text.strip().upper() not in ("B",) else "1"
    unit = t[-1:] if t[-1:] in ("K", "M", "G") else ""
    number = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a rate: {text!r} (use e.g. 500K, 40M)") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"not a rate: {text!r}")
    return int(value * _UNITS[unit])


def share(running: dict[int, int], total: int, per_file: int) -> dict[int, int]:
    """Per-connection cap for each file.

    ``running``: file -> connections it has running.  ``total``: the job's
    limit, ``per_file``: each file's limit (bytes/s; 0 = none).  Returns file
    -> bytes/s for each of its connections (0 = uncapped).  Files with no
    running connection get the cap a first connection would get.
    """
    caps: dict[int, int] = {}
    active = {f: n for f, n in running.items() if n > 0}
    if not total and not per_file:
        return {f: 0 for f in running}
    if not total:
        return {f: (per_file // n if n else per_file) for f, n in ((f, running[f]) for f in running)}
    # Water-filling: give each file an equal share of what is left, capped at
    # per_file; files that cannot use their share return the rest.
    budget = total
    todo = dict(active)
    file_share: dict[int, float] = {}
    while todo:
        each = budget / len(todo)
        capped = {f for f in todo if per_file and per_file < each}
        if not capped:
            for f in todo:
                file_share[f] = each
            break
        for f in capped:
            file_share[f] = per_file
            budget -= per_file
            del todo[f]
    for f, n in running.items():
        if n > 0:
            caps[f] = max(1, int(file_share[f] // n))
        else:
            cap = per_file or total
            caps[f] = min(cap, total)
    return caps
