"""One service per journal: :func:`hold` takes the journal's service lock
(a ``flock`` on a file beside it) for as long as the service runs, and
says who holds it when it is taken; :func:`alive` tells whether a job's
process still runs."""

from __future__ import annotations

import os
from pathlib import Path

from ..values.errors import JournalError


def hold(journal: Path) -> int:
    """The journal's service lock (a ``flock`` on a file beside it), held
    while the service runs: a second service on the same journal would
    resume the same jobs and hide the first from the CLI."""
    import fcntl

    from ..disk.storage import disk_errors, make_dirs

    path = journal.with_name(journal.name + ".service")
    with disk_errors(f"cannot create {path}"):
        make_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = os.pread(fd, 32, 0).decode().strip()
        except (OSError, UnicodeDecodeError):
            pid = "?"
        os.close(fd)
        raise JournalError(f"another segdl service (segdl serve or segdl ui, pid {pid or '?'}) runs on the "
                           f"journal {journal}: use that one (segdl ui --attach; segdl pause, resume and limit "
                           "go through it), stop it first, or give another --journal") from None
    except OSError:
        pass  # a filesystem without flock: unguarded, as before
    with disk_errors(f"cannot write {path}"):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
