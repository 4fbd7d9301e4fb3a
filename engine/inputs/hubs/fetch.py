"""The hubs' listing calls: small JSON GETs through libcurl
(:func:`segdl.engine.net.http_get`, so libcurl stays in one module),
with the token sent to the hub's own host only, the waits a hub asks for
on 429 (``Retry-After``, ``RateLimit: "api";r=0;t=55``), bounded, and
pagination by ``Link: <...>; rel="next"``.

File downloads do not come through here: they go to the engine.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator
from urllib.parse import urljoin

from ...values.errors import HttpError, HubProtocolError, HubRateLimitError, SegdlError
from ...values.messages import TransferOptions
from ..naming import same_origin
from .errors import describe, hub_error

#: At most this many waits per call (429 or a transient failure) ...
MAX_TRIES = 6
#: ... each at most this long, whatever the hub asks.
MAX_WAIT = 120.0
#: A listing is followed for at most this many pages.
MAX_PAGES = 10_000
_LINK = re.compile(r'<([^>]*)>\s*;([^,]*)')


def next_link(value: str | None) -> str | None:
    """The target of ``rel="next"`` in a ``Link`` header."""
    for target, params in _LINK.findall(value or ""):
        if re.search(r'(?:^|;)\s*rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?\s*(?:;|$)', params, re.I):
            return target
    return None


@dataclass
class Client:
    """Listing calls to one hub."""

    hub: str  # "hf" | "civitai"
    base: str  # the hub's endpoint: Authorization goes to its origin only
    options: TransferOptions = field(default_factory=TransferOptions)
    auth: str | None = None  # "Authorization: Bearer ..." (memory only)
    on_message: Callable[[str], None] = lambda m: None
    sleep: Callable[[float], None] = time.sleep
    calls: int = 0  # requests made (for tests and the summary)

    def get(self, url: str, what: str):
        """(parsed JSON, answer) of ``GET url``; a hub error names ``what``."""
        from ...net import http_get

        opts = self.options
        if self.auth and same_origin(url, self.base):
            opts = replace(opts, headers=opts.headers + (self.auth,))
        opts = replace(opts, hub=self.hub)
        waited = 0
        while True:
            self.calls += 1
            try:
                ans = http_get(url, opts)
                error = None if 200 <= ans.status < 300 else self._error(ans, url, what)
            except SegdlError as e:
                ans, error = None, e
            if error is None:
                return self._json(ans, what), ans
            if not error.retryable or waited >= MAX_TRIES - 1:
                raise error
            waited += 1
            delay = min(MAX_WAIT, error.retry_after if error.retry_after is not None else 2.0 ** waited / 4)
            if isinstance(error, HubRateLimitError):
                self.on_message(f"{what}: rate-limited by the hub; waiting {delay:g} s as it asks")
            self.sleep(delay)

    def _error(self, ans, url: str, what: str) -> SegdlError:
        from ...rules.http import status_error, wait_asked

        e = hub_error(self.hub, ans.status, ans.head.headers, ans.body, url, wait_asked(ans.head), what)
        if e is not None:
            return e
        e = status_error(ans.status, ans.head)
        msg = f"{what}: {e.message} from {describe(url)}"
        if isinstance(e, HttpError):
            return type(e)(msg, status_code=e.status_code, retry_after=e.retry_after)
        return type(e)(msg, retry_after=e.retry_after)

    @staticmethod
    def _json(ans, what: str):
        try:
            return json.loads(ans.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise HubProtocolError(f"{what}: the hub's answer from {describe(ans.final_url)} is not JSON") from None

    def pages(self, url: str, what: str) -> Iterator[object]:
        """Each page of a listing paginated by ``Link: rel="next"``."""
        seen = set()
        for _ in range(MAX_PAGES):
            doc, ans = self.get(url, what)
            yield doc
            nxt = next_link(ans.head.get("link"))
            if not nxt:
                return
            url = urljoin(ans.final_url, nxt)
            if url in seen:
                raise HubProtocolError(f"{what}: the listing's next page loops back to {describe(url)}")
            seen.add(url)
        raise HubProtocolError(f"{what}: the listing has more than {MAX_PAGES} pages")
