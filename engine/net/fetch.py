"""One small synchronous GET, whole: a hub's JSON listing."""

from __future__ import annotations

from dataclasses import dataclass

import pycurl

from ..values.errors import TransientError
from ..rules.http import ResponseHead
from ..values.messages import TransferOptions
from .curl import _configure, _hop, _next_hop, curl_error

@dataclass(frozen=True, slots=True)
class Answer:
    """The whole answer to one small GET (a hub's listing call)."""

    status: int
    head: ResponseHead
    body: bytes
    final_url: str


def http_get(url: str, options: TransferOptions, *, max_bytes: int = 64 * 1024 * 1024,
             timeout: float = 60.0) -> Answer:
    """One synchronous ``GET`` that follows redirects (with the headers
    on the same origin only, see :func:`follows_itself`) and returns
    the body whole, for a hub's JSON listings.  A body larger than
    ``max_bytes`` or slower than ``timeout`` seconds is a
    :class:`TransientError`; network failures are translated as for
    transfers.  The HTTP status is the caller's to judge."""
    head = ResponseHead()
    body = bytearray()

    def on_write(data: bytes):
        if 300 <= head.status < 400:
            return None  # the body of a redirect we follow ourselves
        if len(body) + len(data) > max_bytes:
            return 0
        body.extend(data)
        return None

    c = pycurl.Curl()
    try:
        _configure(c, url, options)
        c.setopt(pycurl.HEADERFUNCTION, head.feed)
        c.setopt(pycurl.WRITEFUNCTION, on_write)
        c.setopt(pycurl.TIMEOUT_MS, int(timeout * 1000))
        c.setopt(pycurl.ACCEPT_ENCODING, "")  # gzip'ed JSON where offered
        hops = 0
        while True:
            try:
                c.perform()
            except pycurl.error as e:
                code, msg = e.args[0], e.args[1]
                if code == pycurl.E_WRITE_ERROR:
                    raise TransientError(f"the answer of {url.split('?')[0]} is larger than {max_bytes} bytes") from None
                raise curl_error(code, msg, stall_timeout=timeout) from None
            target = _next_hop(c, head.status, options, hops)
            if target is None:
                break
            hops += 1
            _hop(c, url, target, options)
        return Answer(head.status, head, bytes(body), c.getinfo(pycurl.EFFECTIVE_URL) or url)
    finally:
        c.close()
