"""One batch of files on one node, in a process of its own: no Ray here.

The node actor starts ``python -m segdl.engine.cluster.nodejob`` with
:func:`spawn`, writes the batch (requests and settings, pickled, base64, one
line) to its stdin, and then, any time, a line ``{"max_speed": N}`` to set
the batch's part of the cluster's bandwidth.  That goes the way ``segdl
limit`` goes: into the journal, which the running job reads within a
second.  The process prints one JSON line per event on stdout:
``{"result": ...}``, ``{"progress": ...}``, ``{"message": ...}``.

A process of its own, because the engine forks its workers, and forking
a Ray worker (gRPC threads) is unsafe; and because it dies with the actor
that started it (``PR_SET_PDEATHSIG``), as it would with its machine.
SIGINT stops it the way Ctrl-C stops ``segdl get``: durable progress is
committed, and the next run continues from it.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROGRESS_PERIOD = 0.25  # seconds between progress lines


@dataclass(frozen=True, slots=True)
class Batch:
    requests: tuple  # of Request
    settings: object  # Settings, with dest and journal set for this node
    collection: str | None = None

    def encode(self) -> bytes:
        return base64.b64encode(pickle.dumps(self)) + b"\n"

    @staticmethod
    def decode(line: bytes) -> "Batch":
        return pickle.loads(base64.b64decode(line))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Ray's workers block SIGINT, and a blocked mask survives exec: the
    # batch could not be stopped the way Ctrl-C stops segdl.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT, signal.SIGTERM])
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(batch: Batch, log: Path | None = None) -> subprocess.Popen:
    """Start the batch; it is killed when the calling thread's process dies."""
    err = open(log, "ab") if log else subprocess.DEVNULL
    try:
        p = subprocess.Popen([sys.executable, "-m", "segdl.engine.cluster.nodejob"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                             preexec_fn=_die_with_parent, bufsize=0)
    finally:
        if log:
            err.close()
    p.stdin.write(batch.encode())
    p.stdin.flush()
    return p


def set_speed(p: subprocess.Popen, max_speed: int) -> None:
    """Tell a running batch its bandwidth (0: unlimited)."""
    try:
        p.stdin.write(json.dumps({"max_speed": int(max_speed)}).encode() + b"\n")
        p.stdin.flush()
    except (BrokenPipeError, OSError, ValueError):
        pass  # it has ended


# ------------------------------------------------------------ the child

def _emit(obj: dict, lock=threading.Lock()) -> None:
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _follow_limits(control, journal_path: Path, started: threading.Event) -> None:
    """Read ``{"max_speed": N}`` lines and write them to this job's row
    (once the job has made its journal: opening a new journal here too
    would race it through the schema's migrations)."""
    from segdl.engine.journal import Journal

    job_id = None
    j = None
    for line in control:
        try:
            speed = int(json.loads(line)["max_speed"])
        except (ValueError, KeyError, TypeError):
            continue
        started.wait()
        try:
            if j is None:
                j = Journal(journal_path)
            deadline = time.monotonic() + 5
            while job_id is None and time.monotonic() < deadline:
                mine = [r["id"] for r in j.running_jobs() if r["pid"] == os.getpid()]
                job_id = mine[-1] if mine else None
                if job_id is None:
                    time.sleep(0.05)
            if job_id is not None:
                j.update_job(job_id, max_speed=speed or None)
        except Exception as e:  # the job goes on at its last limit
            _emit({"message": f"could not set the speed limit: {e}"})


def main() -> int:
    from segdl.engine import api
    from segdl.engine.errors import EXIT_INTERRUPTED, SegdlError
    from segdl.engine.journal import default_path
    from segdl.engine.lifecycle import ACTIVE

    # The control pipe gets a file of its own and stdin becomes /dev/null:
    # the engine's workers start by closing sys.stdin (multiprocessing's
    # bootstrap), which would wait forever for the lock of a stdin that a
    # thread here is reading.
    control = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(os.devnull)
    batch = Batch.decode(control.readline())
    s = batch.settings
    started = threading.Event()
    threading.Thread(target=_follow_limits, args=(control, s.journal or default_path(), started),
                     daemon=True).start()
    last = [0.0]

    def progress(snap) -> None:
        started.set()  # the job is in the journal
        now = time.monotonic()
        if now - last[0] < PROGRESS_PERIOD:
            return
        last[0] = now
        _emit({"progress": {"done": snap.done, "size": snap.size, "speed": snap.speed,
                            "finished": snap.finished, "files": snap.total_files,
                            "active": [[f.path, f.done, f.size, f.speed] for f in snap.files
                                       if f.state in ACTIVE]}})

    try:
        api.download(list(batch.requests), s, collection=batch.collection, on_progress=progress,
                     on_message=lambda m: _emit({"message": m}),
                     on_result=lambda r: _emit({"result": r.as_dict()}))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SegdlError as e:
        _emit({"error": e.message, "exit_code": e.exit_code})
        return e.exit_code
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
