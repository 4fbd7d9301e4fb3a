"""libcurl's setup, shared by every door of the network side: how a
handle is configured for a URL, the connection policy of a multi handle,
redirects followed by hand, and the translation of libcurl's failures
into segdl's errors (:func:`curl_error`): ``pycurl.error`` and libcurl's
numeric codes never leave :mod:`segdl.engine.net`."""

from __future__ import annotations

import pycurl

from ..values.errors import DownloadError, SegdlError, StalledError, TransientError, UsageError
from ..values.messages import LinkStats, TransferOptions
from ..inputs.naming import redirect_headers

# libcurl error codes worth retrying (connection-level trouble).
_TRANSIENT_CODES = {
    pycurl.E_COULDNT_CONNECT,
    pycurl.E_PARTIAL_FILE,
    pycurl.E_OPERATION_TIMEDOUT,
    pycurl.E_GOT_NOTHING,
    pycurl.E_SEND_ERROR,
    pycurl.E_RECV_ERROR,
    pycurl.E_SSL_CONNECT_ERROR,
    getattr(pycurl, "E_HTTP2", 16),
    getattr(pycurl, "E_HTTP2_STREAM", 92),
    getattr(pycurl, "E_COULDNT_RESOLVE_PROXY", 5),
}
_USAGE_CODES = {pycurl.E_URL_MALFORMAT, pycurl.E_UNSUPPORTED_PROTOCOL}


# ------------------------------------------------------ connection policy
#
# ``-x N`` means N TCP connections, whatever protocol the server offers.
# libcurl multiplexes every transfer to a host over one HTTP/2 connection
# by default (CURLMOPT_PIPELINING = CURLPIPE_MULTIPLEX): the 16 ranges of
# a file would share one congestion window and one per-connection cap (a
# CDN's, or a far server's window / RTT).  So no multi handle of segdl
# multiplexes: a transfer (a probe, a range) has a connection of its own,
# reused by the next transfer when it ends; HTTP/2 is still negotiated and
# used, one stream per connection.  Each multi's handles share TLS
# sessions and DNS answers (CURLSH), so a further connection to a known
# host resumes its TLS session instead of a full handshake.  A file whose
# ranges are sure to follow (a job of one file, a large one) is probed on
# the multi of the worker that fetches it (MultiDriver.probe), over
# HTTP/1.1 and without data, so that the probe's connection, back in the
# pool, carries its first range: -x N is N connections, the probe's
# among them.


def _new_multi(streams: int = 1, per_host: int = 0) -> tuple[pycurl.CurlMulti, pycurl.CurlShare]:
    """A multi handle with its share.  ``streams`` > 1: HTTP/2 connections
    may carry that many transfers at once, over at most ``per_host``
    connections to a host (for small answers, where a round trip costs
    more than a shared window; never for a file's ranges)."""
    multi = pycurl.CurlMulti()
    if streams > 1:
        multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_MULTIPLEX)
        multi.setopt(pycurl.M_MAX_CONCURRENT_STREAMS, streams)
        if per_host:
            multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, per_host)
    else:
        multi.setopt(pycurl.M_PIPELINING, pycurl.PIPE_NOTHING)
    share = pycurl.CurlShare()
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_SSL_SESSION)
    share.setopt(pycurl.SH_SHARE, pycurl.LOCK_DATA_DNS)
    return multi, share


_PROTOCOLS = {pycurl.CURL_HTTP_VERSION_1_0: "HTTP/1.0", pycurl.CURL_HTTP_VERSION_1_1: "HTTP/1.1",
              pycurl.CURL_HTTP_VERSION_2_0: "HTTP/2", getattr(pycurl, "CURL_HTTP_VERSION_3", 30): "HTTP/3"}


def link_after(c: pycurl.Curl, before: LinkStats) -> LinkStats:
    """``before`` plus the request ``c`` just made: its connection, its
    protocol, and the connect and TLS time of a connection it opened."""
    try:
        conn = c.getinfo(pycurl.CONN_ID)
        protocol = _PROTOCOLS.get(c.getinfo(pycurl.INFO_HTTP_VERSION), before.protocol)
        connect = tls = 0.0
        if c.getinfo(pycurl.NUM_CONNECTS):
            lookup, tcp, app = (c.getinfo(pycurl.NAMELOOKUP_TIME), c.getinfo(pycurl.CONNECT_TIME),
                                c.getinfo(pycurl.APPCONNECT_TIME))
            connect, tls = max(0.0, tcp - lookup), max(0.0, app - tcp) if app else 0.0
    except pycurl.error:
        return before
    conns = before.connections if conn < 0 or conn in before.connections else before.connections | {conn}
    return LinkStats(conns, protocol, before.connect + connect, before.tls + tls, before.requests + 1)


def _new_handle(share: pycurl.CurlShare) -> pycurl.Curl:
    c = pycurl.Curl()
    c.setopt(pycurl.SHARE, share)
    return c


def curl_error(code: int, message: str, *, stall_timeout: float | None = None) -> SegdlError:
    """Translate a libcurl failure into segdl's error tree."""
    text = message or f"libcurl error {code}"
    if code == pycurl.E_OPERATION_TIMEDOUT:
        return StalledError(f"connection stalled (no data for {stall_timeout or 0:g} s): {text}")
    if code in _TRANSIENT_CODES:
        return TransientError(text)
    if code in _USAGE_CODES:
        return UsageError(f"bad URL: {text}")
    if code == pycurl.E_COULDNT_RESOLVE_HOST:
        return DownloadError(f"cannot resolve host: {text}")
    if code == pycurl.E_TOO_MANY_REDIRECTS:
        return DownloadError(f"too many redirects: {text}")
    if code in (pycurl.E_PEER_FAILED_VERIFICATION, getattr(pycurl, "E_SSL_CACERT", 60)):
        return DownloadError(f"TLS certificate verification failed: {text}")
    return DownloadError(text)


def follows_itself(options: TransferOptions) -> bool:
    """May libcurl follow redirects itself?  Only when that cannot carry a
    header further than it should go: with no header, or when the user
    trusts every redirect (--location-trusted).  libcurl drops only
    Authorization and Cookie on another host; a custom header such as
    ``X-Api-Key`` would follow.  Otherwise the transport follows them
    (``_next_hop``), with the headers :func:`redirect_headers` allows."""
    return not options.headers or options.location_trusted


def _configure(c: pycurl.Curl, url: str, options: TransferOptions) -> None:
    c.setopt(pycurl.URL, url)
    c.setopt(pycurl.FOLLOWLOCATION, 1 if follows_itself(options) else 0)
    c.setopt(pycurl.UNRESTRICTED_AUTH, 1 if options.location_trusted else 0)
    c.setopt(pycurl.MAXREDIRS, options.max_redirects)
    # Never let a redirect take us to file://, ftp:// or other schemes.
    c.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    c.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    c.setopt(pycurl.NOSIGNAL, 1)
    c.setopt(pycurl.CONNECTTIMEOUT_MS, int(options.connect_timeout * 1000))
    # The stall timeout is enforced per transfer by MultiDriver (time since
    # the last byte); libcurl's low-speed check, which averages over a
    # window, only backs it up.
    c.setopt(pycurl.LOW_SPEED_LIMIT, 1)
    c.setopt(pycurl.LOW_SPEED_TIME, max(5, int(round(options.stall_timeout * 3))))
    c.setopt(pycurl.USERAGENT, options.user_agent)
    _set_headers(c, options.headers)
    c.setopt(pycurl.SSL_VERIFYPEER, 0 if options.insecure else 1)
    c.setopt(pycurl.SSL_VERIFYHOST, 0 if options.insecure else 2)
    if options.ca_cert:
        c.setopt(pycurl.CAINFO, options.ca_cert)
    c.setopt(pycurl.BUFFERSIZE, options.buffer_size)
    c.setopt(pycurl.TCP_KEEPALIVE, 1)
    # Never wait to share a connection (see "connection policy" above).
    c.setopt(pycurl.PIPEWAIT, 0)
    if options.recv_buffer:
        c.setopt(pycurl.SOCKOPTFUNCTION, _rcvbuf_setter(options.recv_buffer))
    else:
        c.unsetopt(pycurl.SOCKOPTFUNCTION)


def _next_hop(c: pycurl.Curl, status: int, options: TransferOptions, hops: int) -> str | None:
    """Where a redirect that libcurl left to us leads (None: the answer is
    not one).  Raises :class:`DownloadError` past ``max_redirects`` or for a
    scheme other than http(s), as libcurl would."""
    if follows_itself(options) or not 300 <= status < 400:
        return None
    target = c.getinfo(pycurl.REDIRECT_URL)
    if not target:
        return None  # a 3xx without Location: that is the answer
    if hops >= options.max_redirects:
        raise DownloadError(f"too many redirects: more than {options.max_redirects}")
    if target.split(":", 1)[0].lower() not in ("http", "https"):
        raise DownloadError("a redirect to a URL that is not http(s) is refused")
    return target


def _hop(c: pycurl.Curl, first_url: str, url: str, options: TransferOptions) -> None:
    """The same request again, to where a redirect led."""
    c.setopt(pycurl.URL, url)
    _set_headers(c, redirect_headers(options.headers, first_url, url, options.location_trusted))


def _set_headers(c: pycurl.Curl, headers: tuple[str, ...]) -> None:
    # pycurl keeps the previous list when given an empty one: a reused
    # handle would send another request's headers.
    if headers:
        c.setopt(pycurl.HTTPHEADER, list(headers))
    else:
        c.unsetopt(pycurl.HTTPHEADER)


def _rcvbuf_setter(size: int):
    import socket

    def setter(fd: int, purpose: int) -> int:
        try:
            s = socket.socket(fileno=fd)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
            finally:
                s.detach()
        except OSError:
            pass
        return pycurl.SOCKOPT_OK

    return setter


def origin(url: str) -> str:
    """``host[:port]`` of ``url`` (the key of libcurl's connection pool)."""
    return url.split("/", 3)[2] if "://" in url else ""


def discard(data):
    return None
