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

from helpers import SEGDL


@dataclass
class Trial:
    kill_after: float
    killed: bool  # the first run was still going when the kill came
    first_rc: int | None
    final_rc: int
    sent: int  # body bytes the server sent for the file, all runs together
    size: int
    ok: bool  # final file has the right digest
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


def crash_trial(nginx, url: str, expected_blake3: str, size: int, workdir: Path, kill_after: float,
                extra_args=(), timeout: float = 120) -> Trial:
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
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    entries = nginx.access_log_entries()
    sent = sum(e["body_bytes_sent"] for e in entries if e["path"] == "/" + path)
    final = out / path
    ok = final.exists() and blake3_file(final) == expected_blake3
    return Trial(kill_after, killed, first_rc, second.returncode, sent, size, ok,
                 second.stdout, second.stderr)
