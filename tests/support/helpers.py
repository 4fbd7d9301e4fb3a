"""Running the segdl CLI from tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SEGDL = [sys.executable, "-m", "segdl.cli.main"]


def run_segdl(args, journal: Path, *, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    e = dict(os.environ, SEGDL_JOURNAL=str(journal))
    e.update(env or {})
    return subprocess.run([*SEGDL, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=e)


def journal_rows(journal: Path, sql: str) -> list[tuple]:
    """Rows of ``sql`` from a journal a running job may not have created
    yet (or whose tables are not there yet): [] until it has."""
    import sqlite3

    if not Path(journal).exists():
        return []
    con = sqlite3.connect(journal)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def json_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    """stdout must be JSON lines and nothing else."""
    return [json.loads(line) for line in proc.stdout.splitlines()]


# segdl's probe asks for the first byte of a file it already has part of,
# and for the first MiB (engine/net/probe.py PROBE_DATA) of a new one.
PROBE_RANGES = ("bytes=0-0", "bytes=0-1048575")


def is_probe(range_header) -> bool:
    return range_header in PROBE_RANGES


def cut_short(entries: list[dict]) -> int:
    """Requests of an nginx access log that did not complete: a request
    segdl cut short for a split or a stall closes its connection, so the
    next request there opens another.  (A loaded machine slows transfers
    enough for a split to cut one; an idle one seldom does.)"""
    return sum(1 for e in entries if e.get("completion") not in (True, "OK"))  # (nginx: a bool)
