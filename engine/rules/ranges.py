"""Byte ranges and the rules that cut a file into segments.

Every range in segdl is half-open, ``[start, end)``.  The only place an
inclusive range appears is :func:`range_spec`, which renders the value of an
HTTP ``Range`` header; nothing else in the code base formats one.

This module is pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB

#: Smallest segment the planner creates up front.  Large enough that the
#: per-request latency of a slow server (50 ms) is amortised over the bytes.
DEFAULT_MIN_SEGMENT = 4 * MiB
#: A running range is only halved when each half would keep at least this
#: many bytes; below it a second connection costs more than it saves.
DEFAULT_MIN_SPLIT = 2 * MiB


#: Segment boundaries and split points of large ranges fall on multiples
#: of this (a whole number of disk blocks); small ranges are cut exactly.
ALIGNMENT = 64 * KiB
ALIGN_FROM = 1 * MiB


def aligned(offset: int) -> int:
    """``offset`` rounded down to a multiple of :data:`ALIGNMENT`."""
    return offset - offset % ALIGNMENT


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Half-open byte range ``[start, end)``."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"invalid byte range [{self.start}, {self.end})")

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def empty(self) -> bool:
        return self.end == self.start


def range_spec(start: int, end: int) -> str:
    """Value for libcurl's CURLOPT_RANGE (``Range: bytes=<value>``).

    Converts the half-open ``[start, end)`` into HTTP's inclusive form.  This
    is the only function in segdl that writes an inclusive range.
    """
    if end <= start:
        raise ValueError(f"cannot request an empty range [{start}, {end})")
    return f"{start}-{end - 1}"


def plan_segments(
    size: int,
    connections: int,
    min_segment: int = DEFAULT_MIN_SEGMENT,
) -> list[ByteRange]:
    """Cut ``size`` bytes into at most ``connections`` contiguous segments.

    Segments are as equal as possible and no smaller than ``min_segment``
    (except a file smaller than that, which is one segment).  A zero-byte
    file has no segments.  The planner deliberately makes few, large
    segments: finer splitting happens only at the tail, by
    :func:`choose_split`, where it pays.
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if size == 0:
        return []
    connections = max(1, connections)
    count = max(1, min(connections, size // max(1, min_segment)))
    if size // count >= ALIGN_FROM:
        # Boundaries on whole blocks, so the writers' O_DIRECT writes line up.
        cuts = [0, *(aligned(size * i // count) for i in range(1, count)), size]
        return [ByteRange(a, b) for a, b in zip(cuts, cuts[1:])]
    base, extra = divmod(size, count)
    out: list[ByteRange] = []
    pos = 0
    for i in range(count):
        length = base + (1 if i < extra else 0)
        out.append(ByteRange(pos, pos + length))
        pos += length
    return out


#: A file is planned as at most this many segments (larger units beyond).
MAX_UNITS = 4096


def plan_units(size: int, unit: int = DEFAULT_MIN_SEGMENT) -> list[ByteRange]:
    """Cut ``size`` bytes into consecutive segments of about ``unit`` bytes.

    The scheduler hands pending segments out in file order, so a file's
    connections work side by side near its front and its bytes arrive
    nearly in file order: the worker hashes them from memory as they come
    (see hashing.py) instead of reading the file back at the end.  Large
    units are whole multiples of :data:`ALIGNMENT`; a file of more than
    ``MAX_UNITS`` units gets larger ones.  A zero-byte file has no
    segments; the last segment takes the remainder (up to 1.5 units).
    """
    if size < 0:
        raise ValueError("size must be >= 0")
    if size == 0:
        return []
    unit = max(1, unit, -(-size // MAX_UNITS))
    if unit >= ALIGN_FROM:
        unit = -(-unit // ALIGNMENT) * ALIGNMENT
    count = max(1, size // unit)
    rest = size - count * unit
    if rest > 0 and rest >= unit // 2:
        count += 1  # a remainder of half a unit or more is a segment of its own
    cuts = [min(size, i * unit) for i in range(count)] + [size]
    return [ByteRange(a, b) for a, b in zip(cuts, cuts[1:])]


def unit_for_latency(latency: float, unit: int = DEFAULT_MIN_SEGMENT) -> int:
    """The planning unit for a server that takes ``latency`` seconds to
    start each answer: every unit is one request, so a slow-to-answer
    server gets larger units (the base up to 10 ms, then one more base
    unit per 10 ms, at most 8x).  Larger units spread a file's connections
    further apart, so more of it is read back to be hashed: worth it only
    where each request costs that much."""
    extra = int(latency / 0.010)
    return unit * max(1, min(8, 1 + extra)) if latency > 0.010 else unit


#: A range is only split when its owner would need at least this long to
#: finish it alone.  Cutting a connection throws away the bytes already in
#: flight on it (socket buffers: megabytes on a fast link), so splitting a
#: range that is about to finish anyway costs more than it saves.
DEFAULT_SPLIT_AFTER_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Running:
    """What the scheduler knows about one in-flight segment."""

    key: int  # segment id
    position: int  # first byte not yet received (best known estimate)
    end: int  # current end of the segment's range
    rate: float | None = None  # bytes/s of its connection; None: not yet known

    @property
    def remaining(self) -> int:
        return self.end - self.position

    def seconds_left(self) -> float:
        if not self.rate:
            return float("inf")
        return self.remaining / self.rate


def split_point(position: int, end: int, min_split: int = DEFAULT_MIN_SPLIT) -> int | None:
    """Where to halve the unreceived part ``[position, end)`` of a range.

    Returns the first byte of the new tail, or ``None`` when either half
    would be smaller than ``min_split``.
    """
    remaining = end - position
    if remaining < 2 * min_split:
        return None
    at = position + remaining // 2
    if remaining // 2 >= max(ALIGN_FROM, min_split + ALIGNMENT):
        at = aligned(at)
    return at


def choose_split(
    running: list[Running],
    min_split: int = DEFAULT_MIN_SPLIT,
    split_after: float = 0.0,
) -> tuple[int, int] | None:
    """The split rule: halve the range that will finish last.

    Among running ranges whose owner needs more than ``split_after``
    seconds to finish (unknown rate counts as forever) and that are at
    least ``2 * min_split`` long, pick the one with the most time left
    (then the most bytes left, then the lowest key) and halve what is left
    of it.  Returns ``(segment key, new tail start)`` or ``None``.
    """
    best: Running | None = None
    best_key = None
    for r in running:
        if r.remaining < 2 * min_split or r.seconds_left() <= split_after:
            continue
        k = (r.seconds_left(), r.remaining, -r.key)
        if best is None or k > best_key:
            best, best_key = r, k
    if best is None:
        return None
    at = split_point(best.position, best.end, min_split)
    return None if at is None else (best.key, at)


# ------------------------------------------------------- requests of a segment

#: A segment is fetched as a series of requests on one connection.  The
#: first asks for CHUNK_FIRST bytes; later ones for what the connection
#: moves in CHUNK_SECONDS, within [CHUNK_MIN, CHUNK_MAX].  Long requests
#: amortise the per-request latency of slow servers; bounded ones let a
#: tail split take over the rest of a range without cutting a connection.
CHUNK_FIRST = 16 * MiB
CHUNK_MIN = 4 * MiB
CHUNK_MAX = 256 * MiB
CHUNK_SECONDS = 2.0
#: A request lasts at least this many times its connection's latency (the
#: wait before an answer's first byte), so the round trips between
#: requests cost at most about 1% of the connection's time.
CHUNK_LATENCIES = 100
#: A running request is only cut short by a split when its connection
#: would need longer than this to finish it.
CUT_AFTER_SECONDS = 3.0


def chunk_size(remaining: int, rate: float, latency: float = 0.0) -> int:
    """Bytes to ask for next from a segment with ``remaining`` bytes left,
    on a connection that moves ``rate`` bytes/s (0: not known yet) and
    answers each request after ``latency`` seconds.

    What the connection moves in :data:`CHUNK_SECONDS` (:data:`CHUNK_FIRST`
    while its rate is unknown), or :data:`CHUNK_LATENCIES` latencies'
    worth if that is more; but at most half of what is left, so the next
    split point (the middle of the rest) falls on a request boundary and a
    tail split need not cut the connection (cuts throw away what is in
    flight, and stay rare).  Never a runt below :data:`CHUNK_MIN` at the
    end.
    """
    size = int(rate * CHUNK_SECONDS) if rate else CHUNK_FIRST
    size = max(size, int(rate * latency * CHUNK_LATENCIES))
    size = max(CHUNK_MIN, min(CHUNK_MAX, size, remaining // 2))
    if remaining - size < CHUNK_MIN:
        size = remaining
    return min(size, remaining)


def cut_pays(left: int, rate: float) -> bool:
    """Whether cutting a running request short for a split is worth it:
    only for a connection known to need longer than
    :data:`CUT_AFTER_SECONDS` for the ``left`` bytes of its range (a cut
    throws away what is in flight; an unknown rate is never cut)."""
    return bool(rate) and left / rate >= CUT_AFTER_SECONDS


def covers_exactly(ranges: list[ByteRange], size: int) -> bool:
    """True when ``ranges`` tile ``[0, size)`` with no gap and no overlap."""
    pos = 0
    for r in sorted(ranges, key=lambda r: r.start):
        if r.start != pos:
            return False
        pos = r.end
    return pos == size
