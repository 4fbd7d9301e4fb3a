"""What every request to ``segdl serve`` must pass, before any handler runs.

aria2's RPC without a secret could be driven by any web page the user had
open (aria2#200); Transmission's RPC was taken over by DNS rebinding
(CVE-2018-5702).  So, for every request:

* the Host header is on the allowlist: a rebinding page's requests carry
  its own host name (400);
* ``Authorization: Bearer TOKEN``, compared in constant time (401 without
  it or with a wrong one), or the web page's session cookie, taken only
  from the page's own origin, and for a change only with the header
  ``X-Segdl-Request: 1`` and an Origin (webauth.py);
* a state-changing request (anything but GET/HEAD) that carries an Origin
  must carry one of the service's own (403): ``http://NAME:PORT`` for each
  name it answers to (loopback, the address it listens on, ``--allow-host``),
  and the ``--public-url``.  Browsers send Origin on cross-site requests,
  scripts and curl send none.  No CORS header is ever sent, so a browser
  never lets a foreign page read an answer;
* a request came over https only when its Host is the ``--public-url``'s
  (https): a proxy in front terminated TLS and passed the Host on.  Then
  the page's cookie is ``Secure``.  No ``X-Forwarded-*`` header is
  believed (any program on this machine could send one);
* a body is JSON (415 otherwise) and at most ``max_body`` bytes (413).

``GET /login?code=CODE`` needs no token either: its one-time code is
checked there (webauth.py).  Every answer, a refusal too, carries the
page's security headers (CSP, nosniff).  One more request needs no token: ``GET /proof?nonce=HEX``, answered with
:func:`proof`, an HMAC of the nonce keyed by the token.  A client (``segdl
pause``, ``resume``, ``limit``, the TUI) sends it first and sends the token
only once the answer proves that this is the service that holds the token:
a stale ``serve.json`` (the service was killed, or its pid taken) must not
hand the token to whatever listens on that port now.  The answer tells
nothing of the token (HMAC-SHA256, a fresh nonce each time), and it is
bound to where the service listens, so it cannot be relayed from another.
Every refusal is JSON, ``{"error": ..., "status": ...}``, as the API's are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from pathlib import Path

from .webauth import CSRF_HEADER, LOGIN_PATH, from_this_origin, with_security_headers

MAX_BODY = 1 << 20
TOKEN_BYTES = 32  # 256 bits
PROOF_PATH = "/proof"
NONCE = re.compile(r"[0-9a-f]{32,128}")


def proof(token: str, where: str, nonce: str) -> str:
    """What only the holder of ``token`` can answer to ``nonce``, for a
    service that listens at ``where`` (its URL or socket path, as
    ``serve.json`` says it)."""
    message = f"segdl serve proof\n{where}\n{nonce}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()
_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/@\s]+)(?::(?P<port>[0-9]{1,5}))?")
_ORIGIN = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9a-f:.]+\]|(?P<any>\*\.)?[a-z0-9._-]+)"
                     r"(?::(?P<port>[0-9]{1,5}))?")
DEFAULT_PORT = {"http": 80, "https": 443}


def authority(value: bytes | None) -> tuple[str, int | None] | None:
    """The host (``[::1]`` keeps its brackets, lower case) and the port
    (None when it names none) of a Host header; None if it is missing or
    malformed."""
    if value is None:
        return None
    m = _HOST.fullmatch(value.decode("latin-1"))
    return (m["host"].lower(), int(m["port"]) if m["port"] else None) if m else None


def origin_parts(value: str, pattern: bool = False) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, lower case, its default port
    filled in; None if malformed.  With ``pattern`` (an allowed origin, not
    a browser's), the host may be ``*.NAME``: any name under NAME."""
    m = _ORIGIN.fullmatch(value.lower())
    if m is None or (m["any"] and not pattern):
        return None
    return m["scheme"], m["host"], int(m["port"]) if m["port"] else DEFAULT_PORT[m["scheme"]]


def load_or_create_token(path: Path) -> str:
    """The service's token, in a file only its owner can read (0600),
    created with a fresh random token the first time.  A file anyone else
    can read is not trusted: a new token replaces it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = path.stat()
        if stat.S_IMODE(st.st_mode) & 0o077 == 0 and st.st_uid == os.getuid():
            token = path.read_text().strip()
            if len(token) >= 22:  # >= 128 bits of urlsafe base64
                return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(TOKEN_BYTES)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.replace(tmp, path)
    return token


class Guard:
    """ASGI middleware: the Host, the token, the Origin and the body rules above."""

    def __init__(self, app, *, token: str, hosts: list[str], origins: set[str], max_body: int = MAX_BODY,
                 sessions=None, https_hosts: list[tuple[str, int]] = ()) -> None:
        """``origins``: the origins a change may come from (``*.NAME`` as a
        host: any name under NAME); ``https_hosts``: the (host, port) of
        the Host headers that a proxy in front, which terminates TLS, sends
        (``--public-url https://...``): such requests came over https."""
        self.app = app
        self.sessions = sessions  # webauth.Sessions: the page's logins (None: Bearer only)
        self.expected = f"Bearer {token}".encode()
        self.hosts = [h.lower() for h in hosts]
        self.origins = [o for o in (origin_parts(x, pattern=True) for x in origins) if o is not None]
        self.https_hosts = [(h.lower(), p) for h, p in https_hosts]
        self.max_body = max_body

    def _host_allowed(self, host: str | None) -> bool:
        return host is not None and any(_matches(host, h) for h in self.hosts)

    def _origin_allowed(self, origin: bytes) -> bool:
        got = origin_parts(origin.decode("latin-1"))
        return got is not None and any(got[0] == s and got[2] == p and _matches(got[1], h)
                                       for s, h, p in self.origins)

    def _over_https(self, host: tuple[str, int | None]) -> bool:
        """Whether the request came over https: only when its Host is the
        public https URL's, as its proxy sends it.  No X-Forwarded-* header
        is believed: any client on this machine could send one."""
        return any(host[0] == h and (host[1] or 443) == p for h, p in self.https_hosts)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = with_security_headers(send)
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        host = authority(headers.get("host"))
        if host is None or not self._host_allowed(host[0]):
            # First, before the token: a DNS-rebinding page names its own host.
            return await _refuse(send, 400, "the Host header must name this machine (a loopback name or "
                                            "one given with --allow-host or --public-url)")
        scope.setdefault("state", {})["https"] = self._over_https(host)
        if scope["path"] == PROOF_PATH and scope["method"] == "GET":
            return await self.app(scope, receive, send)  # the service proves itself: no token (see above)
        if self.sessions is not None and scope["path"] == LOGIN_PATH and scope["method"] == "GET":
            return await self.app(scope, receive, send)  # a one-time code, checked there (webauth.py)
        method = scope["method"]
        by_cookie = False
        if not hmac.compare_digest(headers.get("authorization", b""), self.expected):
            by_cookie = (self.sessions is not None and from_this_origin(headers)
                         and self.sessions.valid(self.sessions.session_of(headers.get("cookie"))))
            if not by_cookie:
                return await _refuse(send, 401, "a valid 'Authorization: Bearer TOKEN' is required "
                                                "(the token is in the file segdl serve printed), or a session "
                                                "of this page (open the login URL segdl serve printed)",
                                     [(b"www-authenticate", b'Bearer realm="segdl"')])
        if method not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if origin is not None and not self._origin_allowed(origin):
                return await _refuse(send, 403, f"origin {origin.decode('latin-1')!r} is not allowed")
            if by_cookie and (origin is None or headers.get(CSRF_HEADER.decode()) != b"1"):
                return await _refuse(send, 403, "a change made with the page's session needs its Origin and "
                                                "the header X-Segdl-Request: 1")
        scope.setdefault("state", {})["auth"] = "session" if by_cookie else "token"
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _refuse(send, 413, f"the body is limited to {self.max_body} bytes")
        if method in ("POST", "PATCH", "PUT") and (length not in (None, b"0") or "transfer-encoding" in headers):
            ctype = headers.get("content-type", b"").split(b";")[0].strip().lower()
            if ctype != b"application/json":
                return await _refuse(send, 415, "bodies are JSON: Content-Type: application/json")
        seen = 0

        async def capped_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge()
            return message

        try:
            await self.app(scope, capped_receive, send)
        except BodyTooLarge:
            await _refuse(send, 413, f"the body is limited to {self.max_body} bytes")


def _matches(host: str, allowed: str) -> bool:
    return host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:]))


class BodyTooLarge(Exception):
    pass


async def _refuse(send, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
