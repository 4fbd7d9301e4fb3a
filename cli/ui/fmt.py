"""What the terminal UI shows of numbers: sizes, speeds, times, a bar, and
the job's total.  Pure (no Textual), so the screens stay thin and this is
tested alone."""

from __future__ import annotations

from dataclasses import dataclass

from segdl.engine.rules.lifecycle import COMPLETE, DOWNLOADING, FAILURES, REMOVED

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def size(n: int | None) -> str:
    """1024-based, as the limits are typed (``40M`` is 40 MiB/s)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in UNITS:
        if value < 1024 or unit == UNITS[-1]:
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def rate(bps: float | None) -> str:
    return f"{size(int(bps))}/s" if bps else ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def bar(done: int, total: int | None, width: int = 16) -> str:
    """``█████░░░░░  48%``; an unknown size shows only the bytes."""
    if not total:
        return "" if total is None else "█" * width + " 100%"
    frac = min(1.0, max(0.0, done / total))
    full = int(frac * width)
    return "█" * full + "░" * (width - full) + f" {int(frac * 100):3d}%"


def done_bytes(f: dict) -> int:
    """A file's bytes so far: all of it once it is done."""
    if f["state"] in COMPLETE and f.get("size") is not None:
        return f["size"]
    return max(f.get("bytes_done") or 0, f.get("received") or 0)


def live_speed(f: dict) -> float:
    return (f.get("speed") or 0.0) if f["state"] == DOWNLOADING and not f.get("paused") else 0.0


def eta(remaining: int | None, speed: float) -> float | None:
    if remaining is None or speed <= 0:
        return None
    return max(0, remaining) / speed


@dataclass(frozen=True, slots=True)
class Totals:
    files: int
    finished: int  # done or skipped
    failed: int
    done: int  # bytes
    size: int | None  # None while a size is unknown
    speed: float
    partial: bool = False  # done counts only the files in progress (a big job)

    @property
    def eta(self) -> float | None:
        return eta(None if self.size is None else self.size - self.done, self.speed)

    def line(self) -> str:
        parts = [f"{self.finished}/{self.files} files done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        of = "" if self.size is None else f" of {size(self.size)}"
        pct = f" ({int(100 * self.done / self.size)}%)" if self.size else ""
        parts.append(f"{size(self.done)} in progress" if self.partial else f"{size(self.done)}{of}{pct}")
        if self.speed:
            parts.append(rate(self.speed))
        if self.eta is not None:
            parts.append(f"ETA {duration(self.eta)}")
        return " · ".join(parts)


def totals(files: list[dict]) -> Totals:
    """The job's total over its files (a dropped file does not count, nor
    a failed one's size)."""
    kept = [f for f in files if f["state"] != REMOVED]
    sizes = [f.get("size") for f in kept if f["state"] not in FAILURES]
    return Totals(
        files=len(kept),
        finished=sum(1 for f in kept if f["state"] in COMPLETE),
        failed=sum(1 for f in kept if f["state"] in FAILURES),
        done=sum(done_bytes(f) for f in kept),
        size=None if any(s is None for s in sizes) else sum(sizes),
        speed=sum(live_speed(f) for f in kept),
    )


def counted(counts: dict[str, int], shown: list[dict]) -> Totals:
    """A big job's total: its files by state from the journal's counts;
    bytes and speed of the ``shown`` files (every moving one is among
    them), its size unknown (the files not shown are not summed)."""
    kept = {k: n for k, n in counts.items() if k != REMOVED}
    return Totals(
        files=sum(kept.values()),
        finished=sum(n for k, n in kept.items() if k in COMPLETE),
        failed=sum(n for k, n in kept.items() if k in FAILURES),
        done=sum(done_bytes(f) for f in shown if f["state"] not in COMPLETE and f["state"] != REMOVED),
        size=None,
        speed=sum(live_speed(f) for f in shown),
        partial=True,
    )


def mirror(f: dict) -> str:
    """The host (or hosts) a downloading file is fetched from now."""
    if f["state"] != DOWNLOADING or f.get("paused"):
        return ""
    from urllib.parse import urlsplit

    mirrors = f.get("mirrors")
    if mirrors:
        if isinstance(mirrors, str):
            import json

            mirrors = json.loads(mirrors)
        hosts = [urlsplit(m["url"]).netloc for m in mirrors if m.get("connections") and not m.get("dropped")]
        return ", ".join(hosts)
    return urlsplit(f.get("url") or "").netloc
