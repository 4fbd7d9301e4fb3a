"""Retry policy: a frozen value that computes, the caller sleeps.

Modelled on urllib3's ``Retry``: :meth:`RetryPolicy.increment` never mutates;
it returns the next policy (with one more attempt recorded) or raises the
error when the budget is spent.  The delay is exponential with full jitter,
capped, and a server's ``Retry-After`` wins when it is larger (but is also
capped, so a hostile server cannot park us for a day).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ..values.errors import SegdlError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8  # retries per segment, not counting the first try
    backoff: float = 0.25  # seconds; delay before retry n is ~backoff * 2**n
    max_backoff: float = 20.0
    max_retry_after: float = 60.0
    attempts: int = 0  # retries used so far

    def increment(self, error: SegdlError) -> "RetryPolicy":
        """The policy after one more failure, or raise ``error`` if it is
        not retryable or the budget is spent."""
        if not error.retryable or self.attempts >= self.max_attempts:
            raise error
        return replace(self, attempts=self.attempts + 1)

    def delay(self, error: SegdlError | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt this policy now stands at."""
        if self.attempts <= 0:
            return 0.0
        cap = min(self.max_backoff, self.backoff * (2 ** (self.attempts - 1)))
        r = (rng or random).random()
        wait = cap * (0.5 + 0.5 * r)  # "equal jitter": never zero, never above cap
        after = getattr(error, "retry_after", None)
        if after is not None and after > 0:
            wait = max(wait, min(float(after), self.max_retry_after))
        return wait

    @property
    def exhausted(self) -> bool:
        return self.attempts >= self.max_attempts


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime
    import time

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def parse_ratelimit(value: str | None) -> float | None:
    """Seconds to wait from a ``RateLimit`` header (IETF httpapi draft, as
    Hugging Face sends it: ``"api";r=0;t=55``): ``t`` when no request is
    left (``r=0``) in any of its policies, else None."""
    if not value:
        return None
    wait = None
    for item in value.split(","):
        params = {}
        for part in item.split(";")[1:]:
            k, _, v = part.partition("=")
            params[k.strip().lower()] = v.strip()
        try:
            if int(params.get("r", "1")) <= 0 and "t" in params:
                t = float(int(params["t"]))
                wait = t if wait is None else max(wait, t)
        except ValueError:
            continue
    return wait
