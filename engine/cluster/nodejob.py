"""The engine of one node, in a process of its own: no Ray here.

The node actor starts ``python -m segdl.engine.cluster.nodejob`` with
:func:`spawn` and writes its settings (pickled, base64, one line) to its
stdin.  Then, any time, a line ``{"add": B64}`` hands it more files (a
pickled tuple of requests): they join the running engine as a new job, so
a node is fed while it works and never waits for a batch to end; a line
``{"max_speed": N}`` sets its part of the cluster's bandwidth (that goes
the way ``segdl limit`` goes: into the journal, which the engine reads
within a second); a line ``{"close": true}`` (or the end of stdin) lets it
end once every file it was given is final.  It prints one JSON line per
event on stdout: ``{"result": ...}``, ``{"progress": ...}``,
``{"message": ...}``, ``{"error": ...}``.

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
    """What a node's engine starts with: its settings and first files."""
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


def _say(p: subprocess.Popen, obj: dict) -> bool:
    try:
        p.stdin.write(json.dumps(obj).encode() + b"\n")
        p.stdin.flush()
        return True
    except (BrokenPipeError, OSError, ValueError):
        return False  # it has ended


def set_speed(p: subprocess.Popen, max_speed: int) -> None:
    """Tell a running engine its bandwidth (0: unlimited)."""
    _say(p, {"max_speed": int(max_speed)})


def add(p: subprocess.Popen, requests: tuple) -> bool:
    """More files for a running engine; False if it has ended."""
    return _say(p, {"add": base64.b64encode(pickle.dumps(tuple(requests))).decode()})


def close(p: subprocess.Popen) -> None:
    """No more files: end once every file given is final."""
    if _say(p, {"close": True}):
        try:
            p.stdin.close()
        except OSError:
            pass


# ------------------------------------------------------------ the child

def _emit(obj: dict, lock=threading.Lock()) -> None:
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class _Feed:
    """The child's side of the control pipe: files to add, limits to set,
    and when to end (every file given is final, and no more will come)."""

    def __init__(self, engine, journal_path: Path, collection: str | None) -> None:
        self.engine, self.journal_path, self.collection = engine, journal_path, collection
        self.lock = threading.Lock()
        self.given = 0
        self.final = 0
        self.closed = False

    def add(self, requests: list) -> None:
        with self.lock:
            self.given += len(requests)
        if requests:
            collection = self.collection
            self.engine.submit(lambda c: c.add_job(list(requests), collection=collection))

    def settled(self) -> None:
        with self.lock:
            self.final += 1
        self._maybe_end()

    def _maybe_end(self) -> None:
        with self.lock:
            done = self.closed and self.final >= self.given
        if done:
            self.engine.stop()

    def follow(self, control) -> None:
        j = None
        for line in control:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "add" in msg:
                self.add(list(pickle.loads(base64.b64decode(msg["add"]))))
            elif "close" in msg:
                break
            elif "max_speed" in msg:
                try:
                    if j is None:
                        from segdl.engine.journal.writer import Journal

                        j = Journal(self.journal_path)
                    self._set_speed(j, int(msg["max_speed"]))
                except Exception as e:  # the engine goes on at its last limit
                    _emit({"message": f"could not set the speed limit: {e}"})
        with self.lock:
            self.closed = True
        self._maybe_end()

    def _set_speed(self, j, speed: int) -> None:
        """Every running job of this process (the engine reads the oldest's),
        once the engine has made the first (within 5 s)."""
        deadline = time.monotonic() + 5
        while True:
            mine = [r["id"] for r in j.running_jobs() if r["pid"] == os.getpid()]
            if mine or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for job_id in mine:
            j.update_job(job_id, max_speed=speed or None)


def main() -> int:
    from segdl.engine.run.coordinator import Coordinator
    from segdl.engine.values.errors import EXIT_INTERRUPTED, SegdlError
    from segdl.engine.journal.writer import Journal, default_path
    from segdl.engine.rules.lifecycle import ACTIVE

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
    last = [0.0]

    def progress(snap) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_PERIOD:
            return
        last[0] = now
        _emit({"progress": {"done": snap.done, "size": snap.size, "speed": snap.speed,
                            "finished": snap.finished, "files": snap.total_files,
                            "active": [[f.path, f.done, f.size, f.speed] for f in snap.files
                                       if f.state in ACTIVE]}})

    journal = Journal(s.journal or default_path())
    feed = None

    def result(r) -> None:
        _emit({"result": r.as_dict()})
        feed.settled()

    engine = Coordinator(s, journal, on_progress=progress, on_message=lambda m: _emit({"message": m}),
                         on_result=result)
    feed = _Feed(engine, s.journal or default_path(), batch.collection)
    try:
        engine.start(files_at_once=s.concurrent_files)
        feed.add(list(batch.requests))
        threading.Thread(target=feed.follow, args=(control,), daemon=True).start()
        engine.serve()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SegdlError as e:
        _emit({"error": e.message, "exit_code": e.exit_code})
        return e.exit_code
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
