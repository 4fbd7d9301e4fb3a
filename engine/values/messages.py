"""Small picklable values that cross the coordinator/worker boundary.

Orders go from the coordinator to one worker; events come back on one shared
queue.  Positions are absolute file offsets; ranges are half-open.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SegdlError


@dataclass(frozen=True, slots=True)
class Expect:
    """What a response must match before its first byte is written."""

    size: int | None  # total size; None when the server gave no length
    etag: str | None = None
    last_modified: str | None = None
    ranged: bool = True  # False: one plain GET, 200 expected, no Range


@dataclass(frozen=True, slots=True)
class TransferOptions:
    """libcurl knobs that come from the user, per job."""

    headers: tuple[str, ...] = ()
    connect_timeout: float = 15.0
    stall_timeout: float = 20.0  # no byte for this long: cut and retry
    buffer_size: int = 256 * 1024  # libcurl's receive buffer (BUFFERSIZE)
    # Kernel receive buffer per connection (SO_RCVBUF); None: autotuned.
    # Bounds the bytes in flight that a cut connection (split, pause, crash)
    # throws away.
    recv_buffer: int | None = 1024 * 1024
    insecure: bool = False
    ca_cert: str | None = None
    max_redirects: int = 10
    user_agent: str = "segdl/0.1"
    # The model hub a request goes to ("hf", "civitai"; "" for none): its
    # error answers are read for what they say (engine/hubs/errors.py).
    hub: str = ""
    # ``headers`` follow a redirect to another origin too (--location-trusted,
    # as curl names it).  Off: they go to the URL's own origin only.
    location_trusted: bool = False


# ----------------------------------------------------------------- orders


@dataclass(frozen=True, slots=True)
class Fetch:
    """Download ``[position, end)`` of a segment into ``path`` at ``position``.

    ``end`` is None only for a length-less stream (read to EOF).
    """

    segment: int
    file: int
    url: str
    path: str
    position: int
    end: int | None
    expect: Expect
    options: TransferOptions = field(default_factory=TransferOptions)
    redirected: bool = False  # url is a redirect target (e.g. a signed URL)
    max_speed: int = 0  # bytes/s for this connection; 0: unlimited
    # This many bytes at ``position`` are already in the file (the probe
    # fetched them and the coordinator wrote them, not yet synced): the
    # worker syncs and hashes them as its own; a request follows only for
    # what they do not cover.
    written: int = 0
    # What the part file is (device, inode), as the coordinator created it:
    # the worker opens ``path`` by name and must find that very file.
    ident: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Limit:
    """Change the speed limit of a running segment's connection."""

    segment: int
    max_speed: int  # bytes/s; 0: unlimited


@dataclass(frozen=True, slots=True)
class Shrink:
    """Ask the owner of ``segment`` to stop at ``at`` (or as soon after as
    it can); it answers with :class:`Shrunk`."""

    segment: int
    at: int
    min_tail: int = 0  # a tail shorter than this is not worth a split


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop ``segment`` now; the worker answers with a ``Finished``
    (outcome ``cancelled``) carrying its durable position."""

    segment: int


@dataclass(frozen=True, slots=True)
class Track:
    """Hash ``file`` in order as its bytes are written (see hashing.py).
    ``on_disk``: ranges already in the file from an earlier run."""

    file: int
    path: str
    size: int | None
    sha256: bool
    on_disk: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Digest:
    """Every segment of ``file`` is durable: answer with :class:`Hashed`."""

    file: int
    size: int | None  # known now even for a length-less stream


@dataclass(frozen=True, slots=True)
class Finalize:
    """Move verified part files to their final names, durably
    (``storage.finalize_many``), in the worker's process, not the
    coordinator's: answer with :class:`Finalized`.  An item is ((root
    folder, its (device, inode)), part, final, size, ident, data).
    ``journal_too``: the batch's syncfs makes the journal's commit of it
    durable too (see ``storage.finalize_many``)."""

    batch: int
    items: tuple
    journal_too: bool = False


@dataclass(frozen=True, slots=True)
class Release:
    """The file is finished: close its descriptor."""

    file: int


@dataclass(frozen=True, slots=True)
class Stop:
    pass


# ----------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Written:
    """Progress received (not yet durable): for display and for choosing
    split points.  ``positions`` maps segment -> next offset."""

    worker: int
    positions: dict[int, int]


@dataclass(frozen=True, slots=True)
class Durable:
    """Bytes up to each position are on disk (fdatasync returned)."""

    worker: int
    positions: dict[int, int]


@dataclass(frozen=True, slots=True)
class Shrunk:
    """The owner of ``segment`` now ends it at ``end``; None: refused
    (it had got too close to its end)."""

    worker: int
    segment: int
    end: int | None


@dataclass(frozen=True, slots=True)
class LinkStats:
    """How a segment's requests went over the network: the connections
    that carried them (libcurl's ids, unique within one worker), the HTTP
    version of the last one, and the seconds spent in TCP connects and TLS
    handshakes of the connections it opened."""

    connections: frozenset[int] = frozenset()
    protocol: str = ""
    connect: float = 0.0
    tls: float = 0.0
    requests: int = 0


@dataclass(frozen=True, slots=True)
class Finished:
    """A segment's transfer ended.  ``position`` is durable.

    outcome: ``done`` (reached its end), ``cancelled`` (on request) or
    ``error`` (``error`` says why).  ``total`` is the length learnt from a
    length-less stream that reached EOF.
    """

    worker: int
    segment: int
    position: int
    outcome: str
    error: SegdlError | None = None
    total: int | None = None
    final_url: str | None = None
    link: LinkStats | None = None


@dataclass(frozen=True, slots=True)
class Wakeup:
    """Posted by the coordinator's own threads: a background job is done."""


@dataclass(frozen=True, slots=True)
class Hashed:
    """The digests of a tracked file, hashed as it was written; None (with
    ``why``) when this worker could not see every byte."""

    worker: int
    file: int
    blake3: str | None
    sha256: str | None
    read_back: int = 0  # bytes hashed from disk rather than from memory
    why: str | None = None


@dataclass(frozen=True, slots=True)
class Finalized:
    """Per item of a :class:`Finalize`, in its order: the final file's
    (mtime, size), or the error that stopped it."""

    worker: int
    batch: int
    results: tuple


@dataclass(frozen=True, slots=True)
class Probed:
    """What a worker's probe of a file's URLs found (``key``: the order's),
    each URL's RemoteInfo or error.  Its connection is kept in the
    worker's pool, for the file's first range."""

    worker: int
    key: int
    found: dict


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person may want to know (verbose output), e.g. that
    direct I/O is refused and writes go through the page cache."""

    worker: int
    text: str


@dataclass(frozen=True, slots=True)
class WorkerCrashed:
    worker: int
    message: str
