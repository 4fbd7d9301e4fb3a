"""``segdl serve``: run the engine as a service behind the HTTP API, and
``find_service``/:class:`Remote` for the commands that talk to it
(``pause``, ``resume``, ``limit``, ``status``).

The service writes two files next to its journal, both 0600: the token
(``serve.token``, made once, kept across restarts) and where it listens
(``serve.json``: URL or socket, pid, token file), removed when it stops.
A ``serve.json`` may outlive its service (``kill -9``): a client sends the
token only over a connection on which the service first proved it holds
it (``GET /proof``, see guard.py).
"""

from __future__ import annotations

import hmac
import http.client
import ipaddress
import json
import os
import socket
from pathlib import Path

# (Starlette compares the Host header's host part: "[::1]" for IPv6.)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def state_dir(journal: Path | None) -> Path:
    from segdl.engine.journal.writer import default_path

    return Path(journal or default_path()).parent


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen wants HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def parse_public_url(url: str) -> tuple[str, str, int]:
    """(scheme, host as a Host header names it, port) of ``--public-url``:
    ``http(s)://HOST[:PORT]``, the address a browser opens (through a proxy
    in front, or by another name), with no path, user or query."""
    from urllib.parse import urlsplit

    from .guard import DEFAULT_PORT

    wrong = ValueError(f"--public-url wants http://HOST[:PORT] or https://HOST[:PORT] (no path), not {url!r}")
    try:
        p = urlsplit(url)
        port = p.port
    except ValueError:
        raise wrong from None
    if (p.scheme not in ("http", "https") or not p.hostname or "@" in p.netloc or p.path not in ("", "/")
            or p.query or p.fragment):
        raise wrong
    return p.scheme, shown_host(p.hostname.lower()), port or DEFAULT_PORT[p.scheme]


def public_origin(scheme: str, host: str, port: int) -> str:
    from .guard import DEFAULT_PORT

    return f"{scheme}://{host}" + ("" if port == DEFAULT_PORT[scheme] else f":{port}")


def run_service(settings, roots: list[Path], *, listen: str | None, socket_path: Path | None,
                allow_hosts: list[str], say, public_url: str | None = None) -> int:
    """Serve until SIGINT/SIGTERM.  ``say`` prints a line for the user.
    ``public_url``: where browsers reach it (another name, or a proxy in
    front that terminates TLS: then the page's cookie is Secure there)."""
    import uvicorn

    from segdl.engine.doors.service import Service

    from .guard import load_or_create_token
    from .server import build_app

    state = state_dir(settings.journal)
    token_file = state / "serve.token"
    token = load_or_create_token(token_file)
    if socket_path is not None:
        clear_socket(socket_path)  # before anything starts
    service = Service(settings, roots, on_message=lambda m: say(m))
    if socket_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(socket_path))
        os.chmod(socket_path, 0o600)
        where = {"socket": str(socket_path)}
        hosts = ["localhost", "127.0.0.1"]
        origins: set[str] = set()
    else:
        host, port = parse_listen(listen or "127.0.0.1:0")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        # Clients on this machine reach a wildcard address on loopback.
        near = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        shown = f"[{near}]" if ":" in near else near
        where = {"url": f"http://{shown}:{port}"}
        if not is_loopback(host):
            say(f"warning: listening on {host}, not loopback: anyone who can reach it and has the token "
                "can drive this service")
        hosts = [*LOOPBACK_NAMES, *([shown_host(host)] if host not in ("0.0.0.0", "::") else []), *allow_hosts]
        # A change from a page may come from the page under each of these names.
        origins = {f"http://{h.lower()}:{port}" for h in hosts}
    hosts = list(dict.fromkeys([*hosts, *allow_hosts]))
    https_hosts: list[tuple[str, int]] = []
    page_url = where.get("url")
    if public_url is not None:
        scheme, public_host, public_port = parse_public_url(public_url)
        page_url = public_origin(scheme, public_host, public_port)
        hosts.append(public_host)
        origins.add(page_url)
        if scheme == "https":
            https_hosts.append((public_host, public_port))
    sock.listen(64)
    service.start()
    sessions = announce = None
    if "url" in where:  # (a browser cannot open a Unix socket)
        from .webauth import CODE_TTL, LOGIN_PATH, Sessions

        sessions = Sessions(str(port))

        def announce() -> None:
            say(f"open the page: {page_url}{LOGIN_PATH}?code={sessions.new_code()} "
                f"(the code works once, for {CODE_TTL / 60:.0f} minutes; a new one follows each login)")
    app = build_app(service, token=token, hosts=hosts, origins=origins, where=where.get("url") or where["socket"],
                    sessions=sessions, announce=announce or (lambda: None), page_url=page_url,
                    https_hosts=https_hosts)
    info = state / "serve.json"
    fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**where, "pid": os.getpid(), "token_file": str(token_file)}, f)
    say(f"serving on {where.get('url') or where['socket']}; token in {token_file} "
        "(send it as 'Authorization: Bearer TOKEN')")
    if announce is not None:
        announce()
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Shut down on SIGINT/SIGTERM, then stop the engine (below) and
            # exit 0, instead of uvicorn re-raising the signal at its end,
            # which would kill the process before the engine has stopped.
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    try:
        # (proxy_headers off: uvicorn would otherwise take X-Forwarded-Proto
        # and -For from any client on 127.0.0.1 for the truth.)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, proxy_headers=False)
        Server(config).run(sockets=[sock])
    finally:
        try:
            info.unlink()
        except OSError:
            pass
        service.stop()
    return 0


def clear_socket(path: Path) -> None:
    """Make room for a Unix socket at ``path``: a socket left behind by a
    service that ended goes; anything else (a file, a folder, a symlink, a
    socket something listens on) stays, and the service does not start."""
    import stat

    from segdl.engine.values.errors import UsageError

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UsageError(f"--socket {path}: it exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(2)
        probe.connect(str(path))
    except OSError:
        pass  # nobody listens: a stale socket
    else:
        raise UsageError(f"--socket {path}: a program listens on it (another segdl serve?); stop it first")
    finally:
        probe.close()
    os.unlink(path)


class NotTheService(ConnectionError):
    """What listens where ``serve.json`` says is not the service that holds
    the token (it did not prove it): the token is not sent."""


class Remote:
    """A running ``segdl serve``, as the CLI's commands talk to it: every
    call opens a connection, has the service prove on it that it holds the
    token (:meth:`_prove`), and only then sends the token, on that same
    connection.  Raises :class:`NotTheService` (an OSError) otherwise."""

    def __init__(self, url: str | None, socket_path: str | None, token: str) -> None:
        self.url, self.socket_path, self.token = url, socket_path, token

    @property
    def where(self) -> str:
        return self.url or self.socket_path or ""

    def prove(self) -> None:
        """Raise :class:`NotTheService` unless the service answers; sends
        no token."""
        conn = self._connection()
        try:
            self._prove(conn)
        finally:
            conn.close()

    def _prove(self, conn: http.client.HTTPConnection) -> None:
        import secrets

        from .guard import PROOF_PATH, proof

        nonce = secrets.token_hex(16)
        try:
            conn.request("GET", f"{PROOF_PATH}?nonce={nonce}")
            resp = conn.getresponse()
            raw = resp.read(65537)
        except http.client.HTTPException as e:
            raise NotTheService(f"{self.where} does not answer as segdl serve: {e!r}") from None
        try:
            got = json.loads(raw).get("proof") if resp.status == 200 and len(raw) <= 65536 else None
        except (ValueError, AttributeError):
            got = None
        if not isinstance(got, str) or not hmac.compare_digest(got, proof(self.token, self.where, nonce)):
            raise NotTheService(f"what listens at {self.where} does not prove it is the segdl serve of this "
                                "journal (a stale serve.json?); the token is not sent there")
        conn.auto_open = 0  # the token goes over this very connection, never over a new one

    def _connection(self) -> http.client.HTTPConnection:
        if self.socket_path:
            path = self.socket_path

            class UnixConnection(http.client.HTTPConnection):
                def connect(self) -> None:
                    self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self.sock.settimeout(self.timeout)
                    self.sock.connect(path)

            return UnixConnection("localhost", timeout=10)
        from urllib.parse import urlsplit

        p = urlsplit(self.url)
        return http.client.HTTPConnection(p.hostname, p.port, timeout=10)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = self._connection()
        try:
            self._prove(conn)
            headers = {"Authorization": f"Bearer {self.token}"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except http.client.HTTPException as e:  # (closed after the proof: not sent again elsewhere)
                raise NotTheService(f"{self.where}: {e!r}") from None
            try:
                return resp.status, (json.loads(raw) if raw else {})
            except ValueError:
                return resp.status, {"error": raw.decode("utf-8", "replace")[:500]}
        finally:
            conn.close()


def find_service(journal: Path | None) -> Remote | None:
    """The service running on this journal, if one answers and proves it
    holds the token (no token is sent to find out)."""
    info = state_dir(journal) / "serve.json"
    try:
        where = json.loads(info.read_text())
        token = Path(where["token_file"]).read_text().strip()
        os.kill(int(where["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    remote = Remote(where.get("url"), where.get("socket"), token)
    try:
        remote.prove()
    except OSError:
        return None
    return remote
