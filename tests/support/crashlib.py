"""Kill every segdl process at a random instant, run again, measure.

Used by tests/test_crash.py (a few trials) and benchmarks/crash_soak.py
(many)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from helpers import SEGDL, journal_rows


@dataclass
class Trial:
    kill_after: float
    killed: bool  # the first run was still going when the kill came
    first_rc: int | None
    final_rc: int
    sent: int  # body bytes the server sent for the file, all runs together
    size: int
    ok: bool  # final file has the right digest
    lag: int = 0  # bytes on disk after the kill, correct, but not claimed by the journal
    claimed: int = 0  # bytes the journal claimed after the kill
    final_stdout: str = ""
    final_stderr: str = ""

    @property
    def redownloaded(self) -> int:
        return self.sent - self.size


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process group: the coordinator and all its workers."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def journal_lag(journal: Path, part: Path, source: Path) -> tuple[int, int]:
    """(bytes the journal claims, bytes after each claimed prefix that are
    already correct on disk but not claimed).  Also checks every claimed
    byte is correct: the journal never claims a byte that is not there."""
    if not journal.exists() or not part.exists():
        return 0, 0
    rows = journal_rows(journal, 'SELECT start, "end", done FROM segments')
    claimed = lag = 0
    block = 1 << 20
    with open(part, "rb") as p, open(source, "rb") as s:
        for start, end, done in rows:
            p.seek(start); s.seek(start)
            left = done
            while left:
                n = min(block, left)
                assert p.read(n) == s.read(n), f"journal claims bytes at {start} that are wrong on disk"
                left -= n
            claimed += done
            pos = start + done
            while pos < end:
                n = min(block, end - pos)
                a, b = p.read(n), s.read(n)
                if a == b:
                    lag += n
                    pos += n
                    continue
                # The first difference, or the part file's end (a kill
                # before its preallocation leaves it short).
                i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
                lag += i
                break
    return claimed, lag


def crash_trial(nginx, url: str, expected_blake3: str, size: int, workdir: Path, kill_after: float,
                extra_args=(), timeout: float = 120, source: Path | None = None) -> Trial:
    from servers import blake3_file

    out = workdir / "out"
    env = dict(os.environ, SEGDL_JOURNAL=str(workdir / "journal.sqlite"))
    args = [*SEGDL, "get", url, "-d", str(out), "--json", *extra_args]
    path = url.rsplit("/", 1)[-1]
    nginx.reset_access_log()
    first = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    time.sleep(kill_after)
    killed = first.poll() is None
    kill_tree(first)
    first_rc = first.returncode
    claimed, lag = journal_lag(workdir / "journal.sqlite", out / (path + ".segdl-part"), source)
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    entries = nginx.access_log_entries()
    sent = sum(e["body_bytes_sent"] for e in entries if e["path"] == "/" + path)
    final = out / path
    ok = final.exists() and blake3_file(final) == expected_blake3
    return Trial(kill_after, killed, first_rc, second.returncode, sent, size, ok,
                 lag=lag, claimed=claimed, final_stdout=second.stdout, final_stderr=second.stderr)
