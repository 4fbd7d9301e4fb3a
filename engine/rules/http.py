"""HTTP facts, parsed and checked without doing any I/O.

:class:`ResponseHead` is what the transport collects from header callbacks;
:func:`check_response` decides, before the first body byte is written,
whether a response is the one that was asked for.  :class:`RemoteInfo` is
what a probe learns about a URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..values.errors import (
    AccessExpiredError,
    BadResponseError,
    DownloadError,
    HttpError,
    RangeIgnoredError,
    RemoteChangedError,
    SegdlError,
    TransientError,
)
from ..values.messages import Expect
from .retry import parse_ratelimit, parse_retry_after

_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)\s*-\s*(\d+)|\*)\s*/\s*(\d+|\*)\s*$", re.I)
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ContentRange:
    start: int | None  # None for "bytes */total"
    end: int | None  # exclusive
    total: int | None  # None for "/*"


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse ``bytes a-b/total`` (inclusive b) into half-open form."""
    if value is None:
        return None
    m = _CONTENT_RANGE.match(value)
    if not m:
        return None
    a, b, total = m.groups()
    t = None if total == "*" else int(total)
    if a is None:
        return ContentRange(None, None, t)
    start, last = int(a), int(b)
    if last < start or (t is not None and last >= t):
        return None
    return ContentRange(start, last + 1, t)


@dataclass(slots=True)
class ResponseHead:
    """Status and headers of the last response in a redirect chain."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    redirects: int = 0  # 3xx responses seen before this one
    # X-Linked-ETag of any response in the chain: a hub (Hugging Face) puts
    # the file's sha256 there on the answer that redirects to its CDN.
    linked_etag: str | None = None

    def feed(self, line: bytes) -> None:
        """Feed one raw header line (as libcurl's HEADERFUNCTION gives it)."""
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if text.startswith("HTTP/"):
            parts = text.split(None, 2)
            if 300 <= self.status < 400:
                self.redirects += 1
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.headers = {}  # a new response (redirect, 100-continue) starts over
        elif ":" in text:
            name, _, value = text.partition(":")
            name = name.strip().lower()
            self.headers[name] = value.strip()
            if name == "x-linked-etag":
                self.linked_etag = value.strip()

    def get(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_length(self) -> int | None:
        v = self.get("content-length")
        return int(v) if v is not None and v.strip().isdigit() else None


def status_error(status: int, head: ResponseHead | None = None, *, after_redirect: bool = False,
                 body: bytes = b"", hub: str = "", url: str = "") -> SegdlError:
    """The error a non-success status stands for.

    A model hub's answer (``hub`` set, or Hugging Face's ``X-Error-Code``)
    is translated by :mod:`segdl.engine.inputs.hubs.errors`, which reads what the
    hub says (error code, JSON body) and names the file (``url``)."""
    retry_after = wait_asked(head) if head else None
    if head is not None and not after_redirect and (hub or head.get("x-error-code")):
        from ..inputs.hubs.errors import hub_error

        e = hub_error(hub or "hf", status, head.headers, body, url, retry_after)
        if e is not None:
            return e
    if status in TRANSIENT_STATUS:
        return TransientError(f"server answered HTTP {status}", retry_after=retry_after)
    if status in (401, 403, 410) and after_redirect:
        return AccessExpiredError(
            f"HTTP {status} from a redirected (signed) URL: it has probably expired",
            status_code=status,
        )
    reason = {
        401: "authentication required",
        403: "access forbidden",
        404: "not found",
        410: "gone",
        416: "range not satisfiable",
    }.get(status, "unexpected status")
    return HttpError(f"HTTP {status} ({reason})", status_code=status)


def wait_asked(head: ResponseHead) -> float | None:
    """Seconds the server asks us to wait: ``Retry-After``, else a
    ``RateLimit`` header with no request left."""
    after = parse_retry_after(head.get("retry-after"))
    return after if after is not None else parse_ratelimit(head.get("ratelimit"))


def check_response(
    head: ResponseHead, position: int, end: int | None, expect: Expect, *, redirected: bool = False
) -> SegdlError | None:
    """Is this the response to "give me ``[position, end)``"?  None: yes."""
    status = head.status
    if 300 <= status < 400 and head.get("location"):
        # Only when libcurl does not follow redirects itself (headers that
        # must not follow them, see net.curl.follows_itself): the URL sends
        # elsewhere now; resolving it again follows the redirect safely.
        return AccessExpiredError(f"HTTP {status}: the URL redirects elsewhere now; resolving it again",
                                  status_code=status)
    if status >= 400 or status < 200 or status >= 300:
        return status_error(status, head, after_redirect=redirected)
    changed = _validators_differ(head, expect)
    if changed:
        return RemoteChangedError(f"the remote file changed: {changed}")
    if not expect.ranged:
        if status != 200:
            return BadResponseError(f"expected 200 for a plain download, got {status}")
        length = head.content_length
        if expect.size is not None and length is not None and length != expect.size:
            return RemoteChangedError(
                f"the remote file changed: size {length} instead of {expect.size}"
            )
        return None
    if status == 200:
        return RangeIgnoredError("the server ignored the Range header (answered 200)")
    if status != 206:
        return BadResponseError(f"expected 206 Partial Content, got {status}")
    cr = parse_content_range(head.get("content-range"))
    if cr is None or cr.start is None:
        return BadResponseError(
            f"206 without a usable Content-Range ({head.get('content-range')!r})"
        )
    if cr.total is not None and expect.size is not None and cr.total != expect.size:
        return RemoteChangedError(
            f"the remote file changed: size {cr.total} instead of {expect.size}"
        )
    if cr.start != position or (end is not None and cr.end != end):
        return BadResponseError(
            f"asked for bytes [{position}, {end}), server sent [{cr.start}, {cr.end})"
        )
    length = head.content_length
    if length is not None and length != cr.end - cr.start:
        return BadResponseError(
            f"Content-Length {length} does not match Content-Range [{cr.start}, {cr.end})"
        )
    return None


def _validators_differ(head: ResponseHead, expect: Expect) -> str | None:
    etag = head.get("etag")
    if expect.etag and etag and etag != expect.etag:
        return f"ETag {etag} instead of {expect.etag}"
    lm = head.get("last-modified")
    if expect.last_modified and lm and lm != expect.last_modified:
        return f"Last-Modified {lm} instead of {expect.last_modified}"
    return None


@dataclass(frozen=True, slots=True)
class RemoteInfo:
    """What one probe request learnt about a URL."""

    url: str  # as given
    final_url: str  # after redirects
    size: int | None
    ranged: bool
    etag: str | None
    last_modified: str | None
    filename: str | None  # from Content-Disposition, not yet sanitised
    redirected: bool = False
    sha256: str | None = None  # published by the server (see published_sha256)
    # The first bytes of the file, when the probe asked for them and got
    # them whole: the probe was also the first request for its data.
    first_bytes: bytes = b""
    # Seconds from the request sent to its first byte back (the server's
    # and the path's latency per request), as the probe measured it.
    latency: float = 0.0

    def expect(self) -> Expect:
        return Expect(self.size, self.etag, self.last_modified, self.ranged)

    @property
    def whole(self) -> bool:
        """Did the probe bring every byte of the file (a small one)?"""
        return bool(self.first_bytes) and len(self.first_bytes) == self.size


_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def why_changed(row: dict, remote: RemoteInfo) -> str | None:
    """Why the remote is not the file a journal row recorded (another
    size, ETag or Last-Modified), or None: what restarts a download from
    zero, and what a review calls changed upstream."""
    if row["size"] != remote.size:
        return f"the remote size changed ({row['size']} -> {remote.size})"
    if row["etag"] and remote.etag and row["etag"] != remote.etag:
        return f"the remote ETag changed ({row['etag']} -> {remote.etag})"
    if row["last_modified"] and remote.last_modified and row["last_modified"] != remote.last_modified:
        return "the remote Last-Modified changed"
    return None


def published_sha256(head: ResponseHead) -> str | None:
    """The sha256 of the whole file where the server publishes it, as hex:
    ``Repr-Digest: sha-256=:BASE64:`` (RFC 9530), the older ``Digest:
    SHA-256=BASE64`` (RFC 3230), or an ``X-Linked-ETag`` that is 64 hex
    digits (Hugging Face's LFS files).  ``Content-Digest`` is not used: it
    covers only the bytes of this (ranged) response."""
    import base64
    import binascii

    for header, pattern in (("repr-digest", r"sha-256=:([A-Za-z0-9+/=]+):"),
                            ("digest", r"sha-256=([A-Za-z0-9+/=]+)")):
        value = head.get(header)
        if not value:
            continue
        m = re.search(r"(?:^|,)\s*" + pattern + r"\s*(?:[,;]|$)", value, re.I)
        if m:
            try:
                raw = base64.b64decode(m.group(1), validate=True)
            except (binascii.Error, ValueError):
                continue
            if len(raw) == 32:
                return raw.hex()
    tag = (head.linked_etag or "").removeprefix("W/").strip('"')
    return tag.lower() if _HEX64.match(tag) else None


def remote_from_probe(url: str, final_url: str, head: ResponseHead, body: bytes = b"",
                      asked: int = 1, *, hub: str = "", error_body: bytes = b"") -> RemoteInfo:
    """Interpret the answer to ``GET`` with ``Range: bytes=0-(asked - 1)``.

    ``body`` (what came of it: all of it, or the start when the probe
    stopped early) becomes ``first_bytes`` only when the Content-Range
    announced exactly what was asked from offset 0 (or the whole file)
    and the body is no longer than that."""
    from ..inputs.naming import filename_from_disposition

    status = head.status
    redirected = final_url != url
    size: int | None
    first = b""
    if status == 206:
        cr = parse_content_range(head.get("content-range"))
        if cr is None:
            raise BadResponseError(f"206 without a usable Content-Range ({head.get('content-range')!r})")
        size, ranged = cr.total, cr.total is not None
        if (asked > 1 and ranged and cr.start == 0 and cr.end == min(asked, size)
                and 0 < len(body) <= cr.end):
            first = bytes(body)
    elif status == 416:
        cr = parse_content_range(head.get("content-range"))
        if cr is not None and cr.total == 0:
            size, ranged = 0, True
        else:
            raise DownloadError("the server refused a range request at offset 0 (HTTP 416)")
    elif status == 200:
        enc = (head.get("transfer-encoding") or "").lower()
        size = None if "chunked" in enc else head.content_length
        ranged = False
    else:
        # A hub's own error (not its CDN's, after a redirect) says why.
        raise status_error(status, head, body=error_body, hub="" if redirected else hub, url=url)
    return RemoteInfo(
        url=url,
        final_url=final_url,
        size=size,
        ranged=ranged,
        etag=head.get("etag"),
        last_modified=head.get("last-modified"),
        filename=filename_from_disposition(head.get("content-disposition")),
        redirected=redirected,
        sha256=published_sha256(head),
        first_bytes=first,
    )

