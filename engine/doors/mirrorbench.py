"""Benchmark mirrors of one file: latency, Range support, throughput per
connection count, and which ``-x`` and mirrors to use.

Measurement only: no typer, no rich (``segdl bench`` in
:mod:`segdl.cli.bench` renders).  Everything that talks to the network goes
through :mod:`segdl.engine.net`; received data is ``pwrite``-n to
``/dev/null``, so nothing is stored.

* **TTFB** is the wall time of :func:`~segdl.engine.net.probe_many` on
  one URL: a ``GET`` with ``Range: bytes=0-0`` on a fresh connection, from
  the start of the request (DNS, TCP, TLS, request, redirects included) until
  the response's one byte (or, for a server without Range support, its first
  body byte) arrived.  The best of ``ttfb_samples`` probes is kept.
* **Throughput** for ``N`` connections: ``[0, sample)`` is cut into ``N``
  equal half-open ranges, each fetched by one connection of a single
  :class:`~segdl.engine.net.MultiDriver` (fresh connections, connect
  time included), timed from the first request to the last byte.  With
  ``rounds`` > 1 each measurement is repeated and the median round kept.
* :func:`recommend` (pure) turns the numbers into a recommendation.

Rates are in MB/s (10^6 bytes per second).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable, Mapping

from ..values.errors import SegdlError
from ..rules.http import RemoteInfo
from ..values.messages import Fetch, TransferOptions
from ..rules.ranges import plan_segments
from ..net import MultiDriver, probe_many

MB = 1_000_000
DEFAULT_CONNECTIONS = (1, 4, 16, 64)
DEFAULT_SAMPLE = 256 * 1024 * 1024
DEFAULT_TIMEOUT = 60.0
#: The recommended ``-x`` is the smallest count reaching this share of the
#: best mirror's best throughput.
SCALING_SHARE = 0.9
#: Mirrors at least this share of the best mirror's throughput are worth using.
MIRROR_SHARE = 0.5


@dataclass(slots=True)
class Measurement:
    """One throughput sample: ``connections`` connections moving ``bytes``
    in ``seconds``.  ``error`` is None when the sample was taken (possibly
    cut short by the timeout: then ``complete`` is False and the rate is
    over what arrived); otherwise it says why not and ``mbps`` is None."""

    connections: int
    bytes: int
    seconds: float
    mbps: float | None
    error: str | None = None
    complete: bool = True
    rounds: list[float] = field(default_factory=list)  # MB/s of each round


@dataclass(slots=True)
class MirrorReport:
    """Everything learnt about one mirror."""

    url: str
    final_url: str | None = None
    ttfb_ms: float | None = None
    ranges: bool | None = None
    size: int | None = None
    error: str | None = None  # the probe failed: nothing else was measured
    results: list[Measurement] = field(default_factory=list)

    def throughput(self) -> dict[int, float | None]:
        """connections -> MB/s (None where the sample failed)."""
        return {m.connections: m.mbps for m in self.results}

    @property
    def best_mbps(self) -> float | None:
        rates = [m.mbps for m in self.results if m.mbps]
        return max(rates) if rates else None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """``connections``: the ``-x`` value (None: nothing could be measured);
    ``mirrors``: the URLs worth using, fastest first."""

    connections: int | None
    mirrors: list[str]


@dataclass(slots=True)
class BenchReport:
    mirrors: list[MirrorReport]
    recommendation: Recommendation
    sample: int  # bytes asked per measurement (0: the whole file)
    connections: list[int]
    rounds: int = 1

    def to_dict(self) -> dict:
        mirrors = []
        for m in self.mirrors:
            d = asdict(m)
            d["best_connections"] = knee(m.throughput())
            mirrors.append(d)
        return {
            "mirrors": mirrors,
            "recommendation": {"connections": self.recommendation.connections,
                               "mirrors": list(self.recommendation.mirrors)},
            "sample_bytes": self.sample,
            "connections": list(self.connections),
            "rounds": self.rounds,
            "unit": "MB/s (10^6 bytes per second)",
        }


# ------------------------------------------------------------ the rule


def knee(curve: Mapping[int, float | None], share: float = SCALING_SHARE) -> int | None:
    """Smallest connection count whose throughput reaches ``share`` of the
    best throughput on ``curve`` (connections -> MB/s; None/0 = failed).
    None when nothing on the curve worked."""
    ok = {n: r for n, r in curve.items() if r is not None and r > 0}
    if not ok:
        return None
    best = max(ok.values())
    return min(n for n, r in ok.items() if r >= share * best)


def recommend(
    curves: Mapping[str, Mapping[int, float | None]],
    ranges: Mapping[str, bool | None] | None = None,
    *,
    scaling_share: float = SCALING_SHARE,
    mirror_share: float = MIRROR_SHARE,
) -> Recommendation:
    """The recommendation rule (pure).

    ``curves``: mirror URL -> (connections -> MB/s, None for a failed
    sample).  A mirror's throughput is the best rate on its curve.
    ``ranges``: mirror URL -> Range support; when any measured mirror
    supports ranges, mirrors without are left out (they can only serve
    the whole file over one connection).

    * ``mirrors``: those whose throughput is at least ``mirror_share`` of the
      best mirror's, fastest first (ties: input order).
    * ``connections``: on the best mirror's curve, the smallest count whose
      rate is at least ``scaling_share`` of that mirror's best, i.e. where
      adding connections stops paying.
    """
    ranges = ranges or {}
    measured = [u for u, c in curves.items() if any(r is not None and r > 0 for r in c.values())]
    if any(ranges.get(u) for u in measured):
        curves = {u: c for u, c in curves.items() if ranges.get(u)}
    peaks: list[tuple[str, float]] = []
    for url, curve in curves.items():
        rates = [r for r in curve.values() if r is not None and r > 0]
        if rates:
            peaks.append((url, max(rates)))
    if not peaks:
        return Recommendation(None, [])
    order = sorted(range(len(peaks)), key=lambda i: (-peaks[i][1], i))
    best_url, best = peaks[order[0]]
    mirrors = [peaks[i][0] for i in order if peaks[i][1] >= mirror_share * best]
    return Recommendation(knee(curves[best_url], scaling_share), mirrors)


# --------------------------------------------------------- measurements

#: on_progress(url, connections, bytes_done, bytes_total) during a sample.
Progress = Callable[[str, int, int, int], None]


def measure_ttfb(url: str, options: TransferOptions, *, samples: int = 3,
                 timeout: float = DEFAULT_TIMEOUT) -> tuple[RemoteInfo | SegdlError, float | None]:
    """Probe ``url`` ``samples`` times; returns the first probe's answer and
    the best wall time in ms (None if no probe succeeded)."""
    info: RemoteInfo | SegdlError | None = None
    best: float | None = None
    for _ in range(max(1, samples)):
        t0 = time.perf_counter()
        got = probe_many([url], options, concurrency=1, deadline=timeout)[url]
        ms = (time.perf_counter() - t0) * 1000.0
        if info is None or isinstance(info, SegdlError):
            info = got
        if isinstance(got, SegdlError):
            break  # a failing mirror is not probed again
        best = ms if best is None else min(best, ms)
    assert info is not None
    return info, best


def measure_throughput(
    remote: RemoteInfo,
    connections: int,
    sample: int,
    options: TransferOptions,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: Progress | None = None,
) -> Measurement:
    """Fetch ``[0, sample)`` of ``remote`` (``sample`` 0: the whole file)
    over ``connections`` equal ranges on one MultiDriver, into /dev/null.

    Never raises for network trouble: a failure comes back as the
    measurement's ``error``.  Stops at ``timeout`` seconds (the rate is then
    over the bytes that arrived).
    """
    size = remote.size
    if size is not None:
        total = size if sample <= 0 else min(sample, size)
    else:
        total = sample if sample > 0 else 0  # 0: unknown length, read to EOF
    if size == 0:
        return Measurement(connections, 0, 0.0, None, "the file is empty")
    if connections > 1 and not remote.ranged:
        return Measurement(connections, 0, 0.0, None, "no Range support: one connection only")
    if remote.ranged:
        assert size is not None
        plan = [(r.start, r.end) for r in plan_segments(total, connections, min_segment=1)]
        if len(plan) < connections:
            return Measurement(connections, 0, 0.0, None, f"sample of {total} bytes is too small")
    else:
        plan = [(0, total if total > 0 else None)]
    expect = remote.expect()
    driver = MultiDriver()  # no disk: bytes are counted, not kept
    t0 = time.perf_counter()
    deadline = t0 + timeout
    error: str | None = None
    finished: dict[int, int] = {}  # segment -> bytes it moved
    last_report = 0.0
    try:
        for i, (start, end) in enumerate(plan):
            driver.start(Fetch(segment=i, file=0, url=remote.final_url, path=os.devnull,
                               position=start, end=end, expect=expect, options=options,
                               redirected=remote.redirected), None)
        while driver.transfers:
            for o in driver.step(0.05):
                t = o.transfer
                finished[t.segment] = t.position - t.fetch.position
                if o.outcome != "done" and error is None:
                    error = str(o.error) if o.error is not None else "transfer failed"
            if error is not None:
                break
            now = time.perf_counter()
            if on_progress is not None and now - last_report >= 0.1:
                last_report = now
                on_progress(remote.url, connections, _moved(driver, finished), total)
            if now >= deadline:
                break
        seconds = time.perf_counter() - t0
        moved = _moved(driver, finished)
    finally:
        driver.close()
    if on_progress is not None:
        on_progress(remote.url, connections, moved, total)
    if error is not None:
        return Measurement(connections, moved, seconds, None, error)
    complete = len(finished) == len(plan)
    if moved == 0:
        return Measurement(connections, 0, seconds, None,
                           f"no data within {timeout:g} s" if not complete else "no data")
    return Measurement(connections, moved, seconds, moved / seconds / MB, None, complete)


def _moved(driver: MultiDriver, finished: dict[int, int]) -> int:
    running = sum(t.position - t.fetch.position for t in driver.transfers.values())
    return running + sum(finished.values())


def bench(
    urls: Iterable[str],
    *,
    connections: Iterable[int] = DEFAULT_CONNECTIONS,
    sample: int = DEFAULT_SAMPLE,
    timeout: float = DEFAULT_TIMEOUT,
    options: TransferOptions | None = None,
    ttfb_samples: int = 3,
    on_progress: Progress | None = None,
    on_mirror: Callable[[MirrorReport], None] | None = None,
    rounds: int = 1,
) -> BenchReport:
    """Benchmark each mirror in turn (never two at once: they would share
    the client's link) and recommend.  ``sample`` 0 means the whole file.
    Each measurement is taken ``rounds`` times; the median round is kept."""
    options = options or TransferOptions()
    counts = sorted({max(1, int(n)) for n in connections})
    reports: list[MirrorReport] = []
    for url in dict.fromkeys(urls):
        rep = MirrorReport(url)
        reports.append(rep)
        info, ttfb = measure_ttfb(url, options, samples=ttfb_samples, timeout=timeout)
        if isinstance(info, SegdlError):
            rep.error = str(info)
        else:
            rep.final_url, rep.ttfb_ms = info.final_url, ttfb
            rep.ranges, rep.size = info.ranged, info.size
            for n in counts:
                runs = []
                for _ in range(max(1, rounds)):
                    m = measure_throughput(info, n, sample, options, timeout=timeout,
                                           on_progress=on_progress)
                    runs.append(m)
                    if m.mbps is None:
                        break
                rep.results.append(median_round(runs))
        if on_mirror is not None:
            on_mirror(rep)
    rec = recommend({r.url: r.throughput() for r in reports}, {r.url: r.ranges for r in reports})
    return BenchReport(reports, rec, sample, counts, max(1, rounds))


def median_round(runs: list[Measurement]) -> Measurement:
    """One measurement from several rounds: the first failed one if any
    failed, else the median by rate (the lower middle for an even count),
    with every round's rate in ``rounds``."""
    failed = [m for m in runs if m.mbps is None]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda m: m.mbps or 0.0)
    pick = ordered[(len(ordered) - 1) // 2]
    pick.rounds = [m.mbps or 0.0 for m in runs]
    return pick


__all__ = [
    "BenchReport", "Measurement", "MirrorReport", "Recommendation",
    "bench", "knee", "measure_throughput", "measure_ttfb", "median_round", "recommend",
]
