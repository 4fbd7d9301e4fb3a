"""The runtime record of one file being worked on (a sub-resource of a job),
and of each URL that serves it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from ..inputs.naming import PART_SUFFIX
from ..rules import lifecycle
from ..disk.confine import Root
from ..values.errors import SegdlError
from ..rules.http import RemoteInfo
from ..values.request import Request
from ..values.results import FileResult
from ..rules.retry import RetryPolicy
from ..disk.storage import Held
from ..disk.verify import Digests, digest_bytes


@dataclass(slots=True)
class JobRun:
    """One job (a batch of files added together) while the engine runs it:
    where its files go and how, and their results in request order."""

    id: int
    dest: Path
    connections: int  # per file
    force: bool
    results: list[FileResult | None]
    collection: str | None = None
    left: int = 0  # files not in a final state yet
    # ``dest`` opened: every file of the job is written under it, never
    # outside (see confine.py); closed when the job ends.
    root: Root | None = None
    # The names in each target folder when the job first looked there (a
    # hint only: whether a file's probe may bring its bytes too).
    listings: dict[str, frozenset[str]] = field(default_factory=dict)  # folder -> its names

    def __post_init__(self) -> None:
        if self.root is None:
            self.root = Root(self.dest)

    def had(self, final: Path, part: bool = False) -> bool:
        """Did the folder of ``final`` hold its name (``part``: or its part
        file's) when the job first asked?  One listing a folder, not two
        stats a file (20,000 files)."""
        folder, name = os.path.split(str(final))
        names = self._listing(folder)
        return name in names or (part and name + PART_SUFFIX in names)

    def _listing(self, folder: str) -> frozenset[str]:
        names = self.listings.get(folder)
        if names is None:
            try:
                names = frozenset(os.listdir(folder))
            except OSError:
                names = frozenset()  # not there yet (or not readable: each file finds out)
            self.listings[folder] = names
        return names

    @property
    def finished(self) -> bool:
        return self.left <= 0


@dataclass(slots=True)
class FileRun:
    """A file being worked on in this run."""

    index: int
    request: Request
    job: JobRun
    id: int = 0
    final: Path | None = None
    part: Path | None = None
    remote: RemoteInfo | None = None
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    plain: bool = False  # forced to one plain stream (server ignores Range)
    fresh: bool = False  # do not resume: start over
    received: int = 0  # bytes taken off the wire in this run
    snap: int = 0  # ``received`` at the last snapshot
    done: int = 0  # bytes on disk (estimate, includes earlier runs)
    seen: dict[int, int] = field(default_factory=dict)
    speed: float = 0.0
    state: str = lifecycle.QUEUED
    draining: set[int] = field(default_factory=set)
    restart_reason: SegdlError | None = None
    sources: list["Source"] = field(default_factory=list)  # the URL and its mirrors
    source_of: dict[int, int] = field(default_factory=dict)  # segment -> source index
    paused: bool = False
    priority: int = 0  # higher first: for intake and for connections
    provisional: Path | None = None  # the row it was registered under before it started
    speed_cap: int = 0  # bytes/s for the whole file, set live (0: the job's per-file limit)
    resolving: bool = False  # re-resolving an expired signed URL
    probe_retry: RetryPolicy = field(default_factory=RetryPolicy)
    not_before: float = 0.0  # do not probe before this (monotonic)
    probe_sent: float = 0.0  # when its last probe went out (monotonic)
    limit: int = 0  # bytes/s for each of its connections (0: none)
    allotted: float = 0.0  # bytes/s for the whole file under the job's limit
    allotted_at: float = 0.0  # when ``allotted`` last changed (monotonic)
    demand: float | None = None  # what it can use, if less than allotted
    lock: Held | None = None  # its part file, held with a flock
    busy: bool = False  # another process downloads it: leave its journal row alone
    # The sha256 the server publishes for this download (not the user's
    # expectation: never journaled as one, learnt again by every probe).
    published_sha256: str | None = None
    # The network side of this run: (worker, connection id) pairs that
    # carried its ranges, protocols spoken, connect and TLS seconds.
    conns: set = field(default_factory=set)
    protocols: set = field(default_factory=set)
    connect_s: float = 0.0
    tls_s: float = 0.0
    updating: bool = False  # its final file is segdl's and out of date: replace it
    named: tuple[str, Path] | None = None  # its target's relative path and path (Intake.target)
    hosts: frozenset | None = None  # of its URL and mirrors (host_names)
    # The digests of the whole file, when its probe carried all of it and
    # those bytes were written: no worker needs to hash it.
    carried: Digests | None = None
    # A small file carried whole and verified whose part file is not
    # written yet: the finishing writes it with its rename, off the loop.
    unwritten: bytes | None = None
    probed_by: int | None = None  # the worker that probed it (its ranges go there too)
    # Its final name was not in its folder when the job looked, and was not
    # looked at since: its rename must not replace a file that appeared.
    new: bool = False

    def move(self, state: str) -> None:
        """The one place a run changes state (see lifecycle.py)."""
        self.state = lifecycle.move(self.state, state)

    def take_first_bytes(self) -> bytes:
        """The file's first bytes its probe fetched, once: every source
        forgets them (their memory goes now)."""
        first = self.sources[0].remote.first_bytes if self.sources else b""
        if first:
            for src in self.sources:
                src.remote = replace(src.remote, first_bytes=b"")
            self.remote = self.sources[0].remote
        return first

    def host_names(self) -> frozenset[str]:
        """The hosts of its URL and mirrors (each counts one probe)."""
        if self.hosts is None:
            self.hosts = frozenset(urlsplit(u).netloc.lower() for u in (self.request.url, *self.request.mirrors))
        return self.hosts

    def wants_sha256(self) -> bool:
        """Is the file checked against a sha256 (the user's, or one the
        server publishes)?"""
        return bool(self.request.sha256 or self.published_sha256)

    def digests_of(self, data: bytes) -> Digests:
        """The digests the file is checked by, of its bytes ``data`` (the
        whole file, in memory: one its probe carried)."""
        return digest_bytes(data, sha256=self.wants_sha256(), git_sha1=bool(self.request.git_sha1))


@dataclass(slots=True)
class Source:
    """One URL that serves a file: the original or a mirror."""

    url: str
    remote: RemoteInfo
    failures: int = 0
    disabled: bool = False
    received: int = 0
    running: int = 0
    rate: float = 0.0  # bytes/s per connection, smoothed
    snap: int = 0  # ``received`` at the last snapshot
