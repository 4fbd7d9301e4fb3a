"""An embedded local mirror for ``segdl bench --local`` and ``segdl demo``.

Generates a file of deterministic bytes in a private temp dir and serves it
on 127.0.0.1 only: with nginx when it is installed (``/usr/sbin/nginx`` or
``nginx`` on PATH), otherwise with a small threaded stdlib HTTP/1.1 server
that supports single ``Range`` requests and keep-alive.  Everything (server
process or threads, temp dir) goes away on :meth:`LocalMirror.stop`, which
the context manager calls also when the block is left by Ctrl-C.

:class:`~segdl.cli.fileserver.FileServer` is that stdlib server.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import tempfile
from pathlib import Path

from .fileserver import HOST, FileServer

FILE_NAME = "bench.bin"
_BLOCK = 1 << 20


class LocalMirrorError(RuntimeError):
    pass


def find_nginx() -> str | None:
    if os.access("/usr/sbin/nginx", os.X_OK):
        return "/usr/sbin/nginx"
    return shutil.which("nginx")


def write_file(path: Path, size: int, seed: int = 5) -> None:
    """``size`` deterministic bytes: one pseudo-random 1 MiB block, each
    copy stamped with its index so no two blocks are equal."""
    base = bytearray(random.Random(seed).randbytes(_BLOCK))
    with open(path, "wb") as f:
        for i in range(size // _BLOCK + 1):
            n = min(_BLOCK, size - i * _BLOCK)
            if n <= 0:
                break
            base[:8] = i.to_bytes(8, "little")
            f.write(memoryview(base)[:n])


class LocalMirror:
    """``LocalMirror(size, server="auto"|"nginx"|"python")``; ``url`` once
    started.  Use as a context manager."""

    def __init__(self, size: int, server: str = "auto") -> None:
        if server not in ("auto", "nginx", "python"):
            raise ValueError(f"unknown server {server!r}")
        if size <= 0:
            raise ValueError("the local file must not be empty")
        self.size = size
        self.want = server
        self.kind: str | None = None  # "nginx" | "python" once started
        self.workdir: Path | None = None
        self.port: int | None = None
        self._nginx = None  # a .nginx.Nginx once started
        self._httpd: FileServer | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/{FILE_NAME}"

    @property
    def path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "root" / FILE_NAME

    def start(self) -> "LocalMirror":
        self.workdir = Path(tempfile.mkdtemp(prefix="segdl-bench-"))
        try:
            (self.workdir / "root").mkdir()
            write_file(self.path, self.size)
            nginx = find_nginx() if self.want in ("auto", "nginx") else None
            if self.want == "nginx" and nginx is None:
                raise LocalMirrorError("nginx is not installed (looked for /usr/sbin/nginx and nginx on PATH)")
            if nginx is not None:
                try:
                    self._start_nginx(nginx)
                    self.kind = "nginx"
                    return self
                except LocalMirrorError:
                    if self.want == "nginx":
                        raise
            self._start_python()
            self.kind = "python"
            return self
        except BaseException:
            self.stop()
            raise

    # ------------------------------------------------------------- nginx

    def _start_nginx(self, binary: str) -> None:
        from .nginx import Nginx, NginxError

        try:
            self._nginx = Nginx(self.workdir / "root", nginx_bin=binary).start()
        except (NginxError, OSError) as e:
            raise LocalMirrorError(f"nginx failed to start: {str(e).strip()[-500:]}") from None
        self.port = self._nginx.port

    def _stop_nginx(self) -> None:
        nginx, self._nginx = self._nginx, None
        if nginx is not None:
            nginx.stop()

    # ------------------------------------------------------------ python

    def _start_python(self) -> None:
        self._httpd = FileServer(self.workdir / "root").start()
        self.port = self._httpd.port

    def _stop_python(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.stop()

    # ---------------------------------------------------------- lifecycle

    def stop(self) -> None:
        # Ctrl-C during cleanup must not leave nginx or the file behind.
        old = None
        try:
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass
        try:
            self._stop_nginx()
            self._stop_python()
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def __enter__(self) -> "LocalMirror":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
