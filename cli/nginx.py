"""A private nginx on 127.0.0.1: the local mirror of ``segdl bench
--local`` and the well-behaved server of the test suite and the
benchmarks (one implementation for all three).

:class:`Nginx` writes its own configuration in a temporary folder, runs
nginx in the foreground, and parses its access log.  It can throttle each
request, pace each TCP connection with no burst, delay every answer, serve
TLS with HTTP/2, or front another server.  It is one class because each
option is a few lines of the one configuration it renders; the rest is
starting, stopping and reading the log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from .nginxconf import ECHO_MODULE, LOCALHOST, parse_log_line, render_config

NGINX_BIN = "/usr/sbin/nginx"
SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)  # Linux, bytes/s


def free_port() -> int:
    """Return a port that was free on 127.0.0.1 a moment ago (racy by nature)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0,
                  alive: Callable[[], bool] | None = None) -> bool:
    """Poll until 127.0.0.1:port accepts a connection (bounded by ``timeout``).

    ``alive`` is polled too; returns False early if it reports False.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    for _ in range(10_000):  # hard iteration bound on top of the deadline
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((LOCALHOST, port), timeout=0.5):
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    return False


class NginxError(RuntimeError):
    pass


class Nginx:
    """A private nginx serving ``root`` on ``127.0.0.1:<free port>``.

    Runs in the foreground (``daemon off; master_process off``; see ``pace``)
    with its pid file, temp paths, error output and access log in a private
    temp dir.

    ``limit_rate``   per-request rate (per stream on h2), nginx syntax
                     (``"20m"``, ``"512k"``), with a one-second burst.
    ``pace``         bytes/s per TCP connection, no burst, no CPU: the
                     listening socket is made here with
                     ``SO_MAX_PACING_RATE`` set and handed to nginx through
                     its ``NGINX="fd;"`` variable (the binary-upgrade
                     mechanism); every accepted connection inherits the
                     rate, and the kernel paces it (TCP's own pacing, no
                     ``fq`` qdisc needed).  On h2 it caps all of a
                     connection's streams together.  nginx then runs a
                     master process and one worker (1.22 crashes on an
                     inherited socket without a master).  Checked: one
                     curl at 5 MiB/s took 20 MB in 3.82 s (3.81 ideal),
                     over TLS with h2 and with HTTP/1.1 alike.  Add a
                     small ``sndbuf`` (e.g. ``"128k"``, rate unchanged)
                     when the log's bytes must match what left: by default
                     a cut response counts megabytes that sat unsent in
                     the socket buffer.
    ``echo_sleep_ms`` delay every request by this many ms before serving the
                     file; implemented with the echo module as::

                         location / { echo_sleep 0.05; echo_exec @file; }
                         location @file { }   # root inherited from server

                     Range/HEAD/keep-alive/limit_rate behave as without it.
    ``sndbuf``       ``listen ... sndbuf=<value>`` (e.g. ``"64k"``).
    ``tls``          ``(cert_path, key_path)``: serve HTTPS (``listen ... ssl``
                     with ``ssl_certificate``/``ssl_certificate_key`` and a
                     session cache, so clients can resume sessions);
                     ``url()``/``base_url`` then use ``https://``.
    ``http2``        also negotiate HTTP/2 (``listen ... ssl http2``, nginx
                     1.22 syntax; ALPN h2 + http/1.1).  Needs ``tls``.
    ``proxy``        ``"http://127.0.0.1:PORT"``: pass every request to that
                     server (HTTP/1.1, Host and Location kept) instead of
                     serving ``root``; e.g. a TLS + h2 front for a Python
                     stand-in (``echo_sleep_ms`` does not apply then).
    ``extra_http`` / ``extra_server`` raw config snippets appended verbatim.

    Usable as a context manager; ``start()`` is called by ``__enter__``.

    Observed behaviour worth knowing when writing assertions (nginx 1.22):

    * ``limit_rate`` lets one second's worth of data out immediately (nginx
      computes the allowance as ``rate * (elapsed_s + 1) - sent``), so a
      transfer of S bytes takes about ``max(0, S/rate - 1)`` seconds.
    * ``sndbuf`` combined with ``limit_rate`` makes the pacing inaccurate
      (with ``sndbuf=32k`` a 4m limit delivered ~1.5 MB/s); use one or the
      other when timing matters.
    * An aborted client is still logged, with the normal status (200/206,
      not 499 once headers were sent) and ``completion`` False.  Its
      ``body_bytes_sent`` is what nginx pushed into the socket, which can
      exceed what the client read by megabytes (loopback socket buffers).
    * A client that disconnects during ``echo_sleep`` is not noticed until
      the sleep ends; the request is then logged as 200 with ~64 KiB
      "sent" and ``completion`` False.
    * The log line is written only when the request ends: a stalled client
      produces none until it closes (or ``send_timeout``, 60 s, fires).
    """

    def __init__(self, root: str | os.PathLike, *, limit_rate: str | None = None,
                 echo_sleep_ms: int | None = None, sndbuf: str | None = None,
                 extra_http: str = "", extra_server: str = "",
                 start_timeout: float = 10.0, nginx_bin: str = NGINX_BIN,
                 tls: tuple[str | os.PathLike, str | os.PathLike] | None = None,
                 http2: bool = False, pace: int | None = None, proxy: str | None = None):
        self.root = Path(root).resolve()
        if tls is not None:
            cert, key = tls
            tls = (Path(cert).resolve(), Path(key).resolve())
        elif http2:
            raise ValueError("http2=True needs tls=(cert, key) (no h2c support)")
        self.tls: tuple[Path, Path] | None = tls
        self.http2 = bool(http2)
        self.limit_rate = limit_rate
        self.echo_sleep_ms = echo_sleep_ms
        self.sndbuf = sndbuf
        if pace is not None and int(pace) <= 0:
            raise ValueError("pace must be a positive number of bytes/s")
        self.pace = int(pace) if pace is not None else None
        if proxy is not None and echo_sleep_ms is not None:
            raise ValueError("echo_sleep_ms and proxy cannot be combined")
        self.proxy = proxy
        self.extra_http = extra_http
        self.extra_server = extra_server
        self.start_timeout = min(float(start_timeout), 10.0)
        self.nginx_bin = nginx_bin
        self.port: int | None = None
        self.workdir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr_file = None
        self._final_log: str | None = None
        self._final_stderr: str | None = None
        if echo_sleep_ms is not None:
            if not os.path.exists(ECHO_MODULE):
                raise NginxError(
                    f"echo_sleep_ms needs the nginx echo module, {ECHO_MODULE} is missing "
                    "(Debian: apt-get install libnginx-mod-http-echo)")
            if echo_sleep_ms < 0:
                raise ValueError("echo_sleep_ms must be >= 0")

    # -- paths ------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self._wd / "nginx.conf"

    @property
    def access_log_path(self) -> Path:
        return self._wd / "access.log"

    @property
    def stderr_path(self) -> Path:
        return self._wd / "stderr.log"

    @property
    def _wd(self) -> Path:
        if self.workdir is None:
            raise NginxError("nginx not started")
        return self.workdir

    # -- config -------------------------------------------------------------
    def render_config(self, port: int) -> str:
        return render_config(self, port, self._wd, self._user_directive())

    def _user_directive(self) -> list[str]:
        """A master process started as root hands its worker to ``nobody``,
        who cannot read private temp dirs: keep the worker as this user."""
        if not self.pace or os.geteuid() != 0:
            return []
        import grp
        import pwd

        return [f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"]

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> "Nginx":
        if self._proc is not None:
            raise NginxError("already started")
        if not os.path.isdir(self.root):
            raise NginxError(f"document root {self.root} is not a directory")
        self.workdir = Path(tempfile.mkdtemp(prefix="segdl-nginx-"))
        (self.workdir / "tmp").mkdir()
        if self.pace is not None:
            return self._start_on_paced_socket()
        last_err = ""
        for _attempt in range(5):
            port = free_port()
            self._spawn(port)
            proc = self._proc
            if wait_for_port(port, self.start_timeout, alive=lambda: proc.poll() is None):
                self.port = port
                return self
            # failed: collect the reason, maybe retry on a port race
            self._kill_proc()
            last_err = self.stderr_path.read_text(errors="replace")
            if "Address already in use" not in last_err:
                break
        self._cleanup_dir()
        raise NginxError(f"nginx failed to start:\n{last_err}")

    def _spawn(self, port: int, inherit: socket.socket | None = None) -> None:
        self.conf_path.write_text(self.render_config(port))
        self.access_log_path.touch()
        self._stderr_file = open(self.stderr_path, "wb")
        env, fds = None, ()
        if inherit is not None:  # nginx takes over listening sockets named in NGINX
            env, fds = {**os.environ, "NGINX": f"{inherit.fileno()};"}, (inherit.fileno(),)
        self._proc = subprocess.Popen(
            [self.nginx_bin, "-p", str(self.workdir), "-c", str(self.conf_path),
             "-e", "stderr"],
            stdin=subprocess.DEVNULL, stdout=self._stderr_file,
            stderr=self._stderr_file, start_new_session=True, env=env, pass_fds=fds)

    def _start_on_paced_socket(self) -> "Nginx":
        """Listen here with ``SO_MAX_PACING_RATE`` set, then let nginx inherit
        the socket: accepted connections inherit the rate.  The port is ours
        from the start (no race); nginx is ready once it wrote its pid file,
        which it does after it took over the listening socket."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((LOCALHOST, 0))
            sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, self.pace)
            sock.listen(511)
            sock.set_inheritable(True)
            port = sock.getsockname()[1]
            self._spawn(port, inherit=sock)
        finally:
            sock.close()  # nginx holds its own copy
        proc, pid_file = self._proc, self._wd / "nginx.pid"
        deadline = time.monotonic() + self.start_timeout
        for _ in range(10_000):
            if proc.poll() is not None or time.monotonic() >= deadline:
                break
            if pid_file.exists():
                self.port = port
                return self
            time.sleep(0.01)
        self._kill_proc()
        err = self.stderr_path.read_text(errors="replace")
        self._cleanup_dir()
        raise NginxError(f"nginx failed to start on the paced socket:\n{err}")

    def _kill_proc(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)  # fast shutdown
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: master and worker
                    proc.wait(timeout=5)
                except ProcessLookupError:
                    pass
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    def _cleanup_dir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL after 5 s) and remove its temp dir.

        The access log and stderr are kept in memory, so ``access_log_entries``
        keeps working after ``stop()``.
        """
        if self.workdir is None or self._final_log is not None:
            return
        self._kill_proc()
        try:
            self._final_log = self.access_log_path.read_text(errors="replace")
            self._final_stderr = self.stderr_path.read_text(errors="replace")
        except OSError:
            self._final_log = self._final_log or ""
            self._final_stderr = self._final_stderr or ""
        self._cleanup_dir()

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- urls -----------------------------------------------------------------
    @property
    def base_url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{LOCALHOST}:{self.port}"

    def url(self, path: str = "") -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- logs -----------------------------------------------------------------
    def stderr_text(self) -> str:
        if self._final_stderr is not None:
            return self._final_stderr
        return self.stderr_path.read_text(errors="replace")

    def _raw_log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        return self.access_log_path.read_text(errors="replace")

    def access_log_entries(self, wait_for: int = 0, timeout: float = 5.0) -> list[dict]:
        """Parsed access-log lines, oldest first.

        Keys: msec, method, uri, path (decoded, no query), status, bytes_sent,
        body_bytes_sent, range, connection, connection_requests,
        request_time, completion (True iff nginx finished sending the whole
        response), if_range, protocol (``$server_protocol``: ``HTTP/1.1``,
        ``HTTP/2.0``), ssl_reused (``"r"``: the TLS handshake resumed a
        session; ``"."``: a full one; None without TLS).

        nginx writes a line only when a request *finishes* (also when the
        client went away), slightly after the client saw the last byte, so
        pass ``wait_for=N`` to poll (bounded by ``timeout``) until at least N
        lines exist.
        """
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            lines = [l for l in self._raw_log().splitlines() if l.strip()]
            if len(lines) >= wait_for or time.monotonic() >= deadline:
                return [parse_log_line(l) for l in lines]
            time.sleep(0.02)
        return [parse_log_line(l) for l in lines]

    def reset_access_log(self) -> None:
        """Truncate the access log (nginx appends with O_APPEND, so this is safe)."""
        if self._final_log is not None:
            self._final_log = ""
        else:
            with open(self.access_log_path, "r+b") as f:
                f.truncate(0)

    def body_bytes_sent(self, path_filter: str | Callable[[str], bool] | None = None,
                        wait_for: int = 0, timeout: float = 5.0) -> int:
        """Sum of ``$body_bytes_sent`` over log entries matching ``path_filter``.

        ``path_filter``: None (all), a path string (compared with the decoded
        URI path, leading ``/`` optional), or a predicate on the raw URI.

        Note: this counts what nginx pushed into the socket (with sendfile,
        possibly more than the client ever read before it went away).
        """
        return sum(e["body_bytes_sent"] or 0
                   for e in self._filter(path_filter, wait_for, timeout))

    def _filter(self, path_filter, wait_for, timeout) -> list[dict]:
        entries = self.access_log_entries(wait_for=wait_for, timeout=timeout)
        if path_filter is None:
            return entries
        if callable(path_filter):
            return [e for e in entries if path_filter(e["uri"] or "")]
        want = "/" + str(path_filter).lstrip("/")
        return [e for e in entries if e["path"] == want]
