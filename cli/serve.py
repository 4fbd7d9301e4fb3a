"""``segdl serve``: run the engine as a service behind the HTTP API, and
``find_service``/:class:`Remote` for the commands that talk to it
(``pause``, ``resume``, ``limit``, ``status``).

The service writes two files next to its journal, both 0600: the token
(``serve.token``, made once, kept across restarts) and where it listens
(``serve.json``: URL or socket, pid, token file), removed when it stops.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
from pathlib import Path

# (Starlette compares the Host header's host part: "[::1]" for IPv6.)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def state_dir(journal: Path | None) -> Path:
    from segdl.engine.journal import default_path

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


def run_service(settings, roots: list[Path], *, listen: str | None, socket_path: Path | None,
                allow_hosts: list[str], say) -> int:
    """Serve until SIGINT/SIGTERM.  ``say`` prints a line for the user."""
    import uvicorn

    from segdl.engine.service import Service

    from .guard import load_or_create_token
    from .server import build_app

    state = state_dir(settings.journal)
    token_file = state / "serve.token"
    token = load_or_create_token(token_file)
    service = Service(settings, roots, on_message=lambda m: say(m))
    if socket_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if socket_path.exists():
            socket_path.unlink()
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
        hosts = [*LOOPBACK_NAMES, *([shown_host(host)] if host not in ("0.0.0.0", "::") else [])]
        origins = {f"http://{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}
    hosts = list(dict.fromkeys([*hosts, *allow_hosts]))
    sock.listen(64)
    service.start()
    app = build_app(service, token=token, hosts=hosts, origins=origins)
    info = state / "serve.json"
    fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({**where, "pid": os.getpid(), "token_file": str(token_file)}, f)
    say(f"serving on {where.get('url') or where['socket']}; token in {token_file} "
        "(send it as 'Authorization: Bearer TOKEN')")
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Shut down on SIGINT/SIGTERM, then stop the engine (below) and
            # exit 0, instead of uvicorn re-raising the signal at its end,
            # which would kill the process before the engine has stopped.
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    try:
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        Server(config).run(sockets=[sock])
    finally:
        try:
            info.unlink()
        except OSError:
            pass
        service.stop()
    return 0


class Remote:
    """A running ``segdl serve``, as the CLI's commands talk to it."""

    def __init__(self, url: str | None, socket_path: str | None, token: str) -> None:
        self.url, self.socket_path, self.token = url, socket_path, token

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
            headers = {"Authorization": f"Bearer {self.token}"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                return resp.status, (json.loads(raw) if raw else {})
            except ValueError:
                return resp.status, {"error": raw.decode("utf-8", "replace")[:500]}
        finally:
            conn.close()


def find_service(journal: Path | None) -> Remote | None:
    """The service running on this journal, if one answers."""
    info = state_dir(journal) / "serve.json"
    try:
        where = json.loads(info.read_text())
        token = Path(where["token_file"]).read_text().strip()
        os.kill(int(where["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    remote = Remote(where.get("url"), where.get("socket"), token)
    try:
        status, _ = remote.call("GET", "/jobs")
    except OSError:
        return None
    return remote if status == 200 else None
