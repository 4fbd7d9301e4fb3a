"""Browser login for ``segdl serve``'s page, without the token ever
reaching the browser.

``segdl serve`` prints ``http://HOST:PORT/login?code=CODE``: the code is
random, good for one use within :data:`CODE_TTL`, and unrelated to the
token.  Opening it sets a session cookie (HttpOnly, SameSite=Strict, this
port's own name; Secure when the request came over https, guard.py) on a
small page that goes on to ``/`` by itself (a refresh: no script), so the
code leaves the address bar at once; a fresh code is printed for the next
browser.  Not a redirect: a link on another
page (a notebook on another port) makes a navigation that stays foreign
through redirects, and the cookie would not count on its last step.

Cookies are not kept apart by port: every page on 127.0.0.1, whatever its
port, is the *same site* as this service.  So a request that comes with
the cookie (and no Bearer token) is taken only when the browser says it
comes from this very origin (``Sec-Fetch-Site: same-origin``, or ``none``
for an address the user typed); a state change also needs the
:data:`CSRF_HEADER` header (a form cannot send one, and a foreign page's
fetch with one needs a CORS preflight the service never grants) and an
allowed ``Origin`` (guard.py).  Sessions live in this process only: they
end when the service stops, or after :data:`SESSION_TTL`.

Every answer carries a strict Content-Security-Policy (no inline script,
no frames, nothing from another origin), ``nosniff`` and no referrer.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

CODE_TTL = 600.0  # seconds a printed login code stays good
SESSION_TTL = 12 * 3600.0
CSRF_HEADER = b"x-segdl-request"  # sent by the page's own script on every state change
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
MAX_SESSIONS = 64
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
     b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Sessions:
    """Login codes and the sessions they open, in memory (never in the
    journal: they are not download state, and they end with the service).
    Only digests are kept, and compared in constant time."""

    def __init__(self, port_tag: str, clock=time.monotonic) -> None:
        self.cookie = f"segdl_session_{port_tag}"
        self.clock = clock
        self.lock = threading.Lock()
        self.codes: dict[bytes, float] = {}
        self.sessions: dict[bytes, float] = {}

    def new_code(self) -> str:
        code = secrets.token_urlsafe(24)
        with self.lock:
            self._expire()
            self.codes[_digest(code)] = self.clock() + CODE_TTL
        return code

    def redeem(self, code: str) -> str | None:
        """A new session id for a good, unused, unexpired code (which is
        then used up); None otherwise."""
        if not code or len(code) > 128:
            return None
        key = _digest(code)
        with self.lock:
            self._expire()
            found = next((k for k in self.codes if hmac.compare_digest(k, key)), None)
            if found is None:
                return None
            del self.codes[found]
            while len(self.sessions) >= MAX_SESSIONS:  # the oldest goes
                self.sessions.pop(min(self.sessions, key=self.sessions.get))
            session = secrets.token_urlsafe(32)
            self.sessions[_digest(session)] = self.clock() + SESSION_TTL
            return session

    def valid(self, session: str | None) -> bool:
        if not session or len(session) > 128:
            return False
        key = _digest(session)
        with self.lock:
            self._expire()
            return any(hmac.compare_digest(k, key) for k in self.sessions)

    def end(self, session: str | None) -> None:
        if session:
            with self.lock:
                self.sessions.pop(_digest(session), None)

    def _expire(self) -> None:
        now = self.clock()
        for table in (self.codes, self.sessions):
            for k in [k for k, until in table.items() if until <= now]:
                del table[k]

    def session_of(self, cookie_header: bytes | None) -> str | None:
        """This service's session id in a Cookie header, if any: a valid
        one first.  Another page on 127.0.0.1 (any port) may plant a cookie
        of the same name with a longer Path, which the browser then sends
        first; it must not push the real session out."""
        if not cookie_header:
            return None
        found = []
        for part in cookie_header.decode("latin-1").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == self.cookie:
                found.append(value)
        return next((v for v in found if self.valid(v)), found[0] if found else None)

    def set_cookie(self, session: str, secure: bool = False) -> str:
        """``secure``: the request came over https (guard.py says when)."""
        return (f"{self.cookie}={session}; Path=/; HttpOnly; SameSite=Strict; "
                f"Max-Age={int(SESSION_TTL)}" + ("; Secure" if secure else ""))

    def clear_cookie(self, secure: bool = False) -> str:
        return f"{self.cookie}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" + ("; Secure" if secure else "")


def from_this_origin(headers: dict[str, bytes]) -> bool:
    """The browser says the request comes from this service's own page (or
    from an address the user typed).  A browser that sends no
    Sec-Fetch-Site cannot use the cookie: it could not tell a page on
    another port of this machine from ours."""
    return headers.get("sec-fetch-site") in (b"same-origin", b"none")


def with_security_headers(send):
    """``send`` with :data:`SECURITY_HEADERS` added to every response."""
    async def wrapped(message):
        if message["type"] == "http.response.start":
            have = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []),
                                              *(h for h in SECURITY_HEADERS if h[0] not in have)]}
        await send(message)
    return wrapped
