"""HTTPS and HTTP/2 against a private nginx with a CA generated at test time.

* ``test_ca`` (session): a throw-away CA and a server certificate for
  ``IP:127.0.0.1`` / ``DNS:localhost`` (see ``tlsca.py``).
* ``https_nginx``: TLS, HTTP/1.1 only; ``h2_nginx``: TLS with ALPN h2.
  Both serve ``tls_root``: a 40 MiB file (several 8 MiB segments with -x 8)
  plus links to ``odd.bin`` and ``big.bin`` of the session ``nginx_root``.
"""

from __future__ import annotations

import collections
import os
import selectors
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from helpers import cut_short, is_probe, json_lines, run_segdl
from servers import ECHO_MODULE, LOCALHOST, MiB, Nginx, NginxError, blake3_file, write_deterministic_file
from tlsca import TLSUnavailable, make_test_ca

MID = "mid.bin"
MID_SIZE = 40 * MiB + 777


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    try:
        return make_test_ca(tmp_path_factory.mktemp("tls-ca"))
    except TLSUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tls_root(tmp_path_factory, nginx_root) -> Path:
    root = tmp_path_factory.mktemp("tls-root")
    write_deterministic_file(root / MID, MID_SIZE, seed=40)
    for name in ("odd.bin", "big.bin"):
        (root / name).symlink_to(nginx_root / name)  # nginx follows symlinks by default
    yield root
    (root / MID).unlink(missing_ok=True)


def _start(root, ca, **kw) -> Nginx:
    try:
        return Nginx(root, tls=ca.server_pair, **kw).start()
    except NginxError as e:  # e.g. an nginx built without ssl / http_v2
        pytest.skip(f"nginx cannot serve TLS here: {e}")


@pytest.fixture(scope="module")
def https_nginx(tls_root, test_ca):
    srv = _start(tls_root, test_ca)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def h2_nginx(tls_root, test_ca):
    srv = _start(tls_root, test_ca, http2=True)
    yield srv
    srv.stop()


@pytest.fixture
def journal(tmp_path):
    return tmp_path / "journal.sqlite"


def _alpn(port: int, cafile: Path | None, host: str = LOCALHOST) -> str | None:
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((LOCALHOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:  # verifies chain + SAN
            return s.selected_alpn_protocol()


def _segment_requests(srv: Nginx, name: str, wait_for: int = 0) -> list[dict]:
    """The file's ranged requests, without the 1-byte probe."""
    return [e for e in srv.access_log_entries(wait_for=wait_for)
            if e["path"] == "/" + name and e["status"] == 206 and not is_probe(e["range"])]


def _concurrent_streams(entries: list[dict]) -> int:
    """Pairs of requests that were in progress at the same time on one
    connection (impossible with HTTP/1.1 keep-alive)."""
    by_conn = collections.defaultdict(list)
    for e in entries:
        by_conn[e["connection"]].append((e["msec"] - e["request_time"], e["msec"]))
    n = 0
    for spans in by_conn.values():
        spans.sort()
        for i, (_, end) in enumerate(spans):
            n += sum(1 for start, _ in spans[i + 1:] if start < end - 0.001)
    return n


# ------------------------------------------------------------------ servers


def test_nginx_tls_config_and_certificates(test_ca, https_nginx, h2_nginx, nginx_root):
    for srv, h2 in ((https_nginx, False), (h2_nginx, True)):
        assert srv.url("a b").startswith(f"https://{LOCALHOST}:{srv.port}/")
        conf = srv.render_config(srv.port)
        assert f"listen {LOCALHOST}:{srv.port} ssl{' http2' if h2 else ''};" in conf
        assert f"ssl_certificate {test_ca.server_cert};" in conf
        assert f"ssl_certificate_key {test_ca.server_key};" in conf
    # The chain verifies for both SANs, and ALPN picks what the server offers.
    assert _alpn(h2_nginx.port, test_ca.ca_cert) == "h2"
    assert _alpn(h2_nginx.port, test_ca.ca_cert, host="localhost") == "h2"
    assert _alpn(https_nginx.port, test_ca.ca_cert) in ("http/1.1", None)
    with pytest.raises(ssl.SSLCertVerificationError):
        _alpn(https_nginx.port, None)  # system trust store: our CA is unknown there
    # Plain nginx is untouched by the new options.
    plain = Nginx(nginx_root)
    plain.workdir = Path("/nonexistent")  # render only, never started
    assert " ssl" not in plain.render_config(1234) and "ssl_certificate" not in plain.render_config(1234)
    plain.port = 1234
    assert plain.url("x") == "http://127.0.0.1:1234/x"
    with pytest.raises(ValueError):
        Nginx(nginx_root, http2=True)


# -------------------------------------------------------------------- HTTPS


@pytest.mark.parametrize("host", [LOCALHOST, "localhost"])
def test_https_with_ca_cert(https_nginx, test_ca, nginx_root, tmp_path, journal, host):
    https_nginx.reset_access_log()
    out = tmp_path / "out"
    url = f"https://{host}:{https_nginx.port}/odd.bin"
    p = run_segdl(["get", url, "-d", out, "--json", "-x", "4", "--ca-cert", test_ca.ca_cert], journal)
    assert p.returncode == 0, p.stderr
    [line] = json_lines(p)
    assert line["status"] == "done" and line["error"] is None
    assert line["blake3"] == blake3_file(out / "odd.bin") == blake3_file(nginx_root / "odd.bin")
    entries = https_nginx.access_log_entries(wait_for=1)
    assert entries and {e["protocol"] for e in entries} == {"HTTP/1.1"}


def test_tls_verification_is_on_by_default(https_nginx, tmp_path, journal):
    https_nginx.reset_access_log()
    out = tmp_path / "out"
    started = time.monotonic()
    p = run_segdl(["get", https_nginx.url("odd.bin"), "-d", out, "--json"], journal)
    assert p.returncode == 3, (p.stdout, p.stderr)
    [line] = json_lines(p)
    assert line["status"] == "failed" and line["exit_code"] == 3
    assert "certificate" in line["error"].lower(), line["error"]
    assert not (out / "odd.bin").exists()
    # Refused at the handshake: no HTTP request ever reached the server, and
    # a verification failure is final (not retried with back-off).
    assert https_nginx.access_log_entries() == []
    assert time.monotonic() - started < 15


def test_insecure_skips_verification(https_nginx, nginx_root, tmp_path, journal):
    out = tmp_path / "out"
    p = run_segdl(["get", https_nginx.url("odd.bin"), "-d", out, "--json", "--insecure"], journal)
    assert p.returncode == 0, p.stderr
    [line] = json_lines(p)
    assert line["status"] == "done"
    assert blake3_file(out / "odd.bin") == blake3_file(nginx_root / "odd.bin") == line["blake3"]


# ------------------------------------------------------------------- HTTP/2


def _peak_connections(entries: list[dict]) -> int:
    """Most distinct connections serving a request at one instant."""
    marks = []
    for e in entries:
        marks += [(e["msec"] - e["request_time"], 1, e["connection"]), (e["msec"], -1, e["connection"])]
    busy: collections.Counter = collections.Counter()
    peak = 0
    for _, step, conn in sorted(marks, key=lambda m: (m[0], m[1])):
        busy[conn] += step
        peak = max(peak, sum(1 for n in busy.values() if n > 0))
    return peak


def _h2_get(tls_root, test_ca, tmp_path, journal, *args) -> tuple[list[dict], dict]:
    # Every request waits 100 ms in nginx (echo module) before its body, so
    # requests in flight at once overlap by far more than the log's 1 ms
    # resolution; without it a 4 MiB chunk is over in a few ms on loopback.
    sleep_ms = 100 if os.path.exists(ECHO_MODULE) else None
    srv = _start(tls_root, test_ca, http2=True, echo_sleep_ms=sleep_ms)
    try:
        out = tmp_path / "out"
        p = run_segdl(["get", srv.url(MID), "-d", out, "--json", *args,
                       "--ca-cert", test_ca.ca_cert], journal)
        assert p.returncode == 0, p.stderr
        [line] = json_lines(p)
        assert blake3_file(out / MID) == blake3_file(tls_root / MID) == line["blake3"]
        entries = srv.access_log_entries(wait_for=6)
    finally:
        srv.stop()
    # A range, alone on its connection, goes over HTTP/1.1 (h2's framing
    # would cost CPU and buy nothing); so does the probe of a one-file job,
    # made by the worker on the connection its first range then takes.
    assert {e["protocol"] for e in entries} == {"HTTP/1.1"}, entries
    return entries, line


def test_http2_ranges_get_a_connection_each(test_ca, tls_root, tmp_path, journal):
    """-x N means N TCP connections over HTTP/2 too: libcurl would put all
    of a file's ranges on one connection per worker as streams, sharing
    one window and one per-connection cap."""
    entries, line = _h2_get(tls_root, test_ca, tmp_path, journal, "-x", "4")
    ranged = [e for e in entries if e["path"] == "/" + MID and e["status"] == 206
              and not is_probe(e["range"])]
    assert len(ranged) >= 4, ranged
    # Exactly 4 in all: the probe's connection carries a range next.
    [probe] = [e for e in entries if is_probe(e["range"])]
    assert 4 <= len({e["connection"] for e in entries}) <= 4 + cut_short(entries), entries
    assert probe["connection"] in {e["connection"] for e in ranged}, entries
    assert _concurrent_streams(ranged) == 0, ranged  # no two ranges on one connection at once
    # 4 segments on 2 workers: 4 connections at once (multiplexed: 2, one a worker).
    assert _peak_connections(ranged) == 4, ranged
    # --json says how its ranges travelled, as the server saw it.
    assert line["protocol"] == "HTTP/1.1"
    assert line["connections"] == len({e["connection"] for e in ranged})
    assert line["tls_ms"] > 0 and line["connect_ms"] >= 0


def test_per_host_cap_counts_tcp_connections_over_http2(test_ca, tls_root, tmp_path, journal):
    entries, _ = _h2_get(tls_root, test_ca, tmp_path, journal, "-x", "4", "--max-connections-per-host", "3")
    assert _concurrent_streams(entries) == 0, entries
    assert 2 <= _peak_connections(entries) <= 3, entries


class HandshakeDelayProxy:
    """TCP relay to 127.0.0.1:``upstream`` that holds every new connection
    for ``delay`` seconds before relaying anything, so the TLS handshake (and
    ALPN) of each connection ends ``delay`` seconds after it was opened."""

    def __init__(self, upstream: int, delay: float):
        self.upstream, self.delay = upstream, delay
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server((LOCALHOST, 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._relay, client)

    def _relay(self, client: socket.socket) -> None:
        with client:
            if self._stop.wait(self.delay):
                return
            with socket.create_connection((LOCALHOST, self.upstream), timeout=5) as up, \
                    selectors.DefaultSelector() as sel:
                sel.register(client, selectors.EVENT_READ, up)
                sel.register(up, selectors.EVENT_READ, client)
                client.settimeout(5)
                up.settimeout(5)
                while not self._stop.is_set():
                    for key, _ in sel.select(0.05):
                        try:
                            data = key.fileobj.recv(1 << 20)
                            if not data:
                                return
                            key.data.sendall(data)
                        except OSError:
                            return

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for t in self._threads:
            t.join(2)


def test_http2_simultaneous_segments_do_not_wait_for_one_connection(h2_nginx, test_ca, tls_root, tmp_path, journal):
    # A slow handshake makes the race deterministic: every segment starts
    # while the worker's first connection is still negotiating, and still
    # opens a connection of its own instead of waiting to share that one.
    proxy = HandshakeDelayProxy(h2_nginx.port, delay=0.5)
    try:
        h2_nginx.reset_access_log()
        out = tmp_path / "out"
        p = run_segdl(["get", f"https://{LOCALHOST}:{proxy.port}/{MID}", "-d", out, "--json",
                       "-x", "8", "--workers", "1", "--ca-cert", test_ca.ca_cert], journal, timeout=60)
    finally:
        proxy.close()
    assert p.returncode == 0, p.stderr
    assert blake3_file(out / MID) == blake3_file(tls_root / MID)
    ranged = _segment_requests(h2_nginx, MID, wait_for=5)
    assert {e["protocol"] for e in ranged} == {"HTTP/1.1"}
    conns = collections.Counter(e["connection"] for e in ranged)
    assert _concurrent_streams(ranged) == 0, ranged
    assert len(conns) >= 4, conns  # one worker, yet a connection per segment


def test_http2_big_file_default_settings(h2_nginx, test_ca, nginx_root, tmp_path, journal):
    h2_nginx.reset_access_log()
    out = tmp_path / "out"
    p = run_segdl(["get", h2_nginx.url("big.bin"), "-d", out, "--json", "--ca-cert", test_ca.ca_cert], journal)
    assert p.returncode == 0, p.stderr
    [line] = json_lines(p)
    assert line["status"] == "done" and line["size"] == 300 * MiB
    assert blake3_file(out / "big.bin") == blake3_file(nginx_root / "big.bin") == line["blake3"]
    entries = [e for e in h2_nginx.access_log_entries(wait_for=2) if e["path"] == "/big.bin"]
    assert entries and {e["protocol"] for e in entries} == {"HTTP/1.1"}  # the probe, the ranges
    assert {e["status"] for e in entries} == {206}
    # -x16, the probe's connection among them (and, after a request cut
    # short, which closes its connection, perhaps one more)
    assert 16 <= len({e["connection"] for e in entries}) <= 16 + cut_short(entries)


def test_new_connections_resume_the_tls_session(test_ca, tls_root, tmp_path, journal):
    """TLS is done once per worker: a connection opened after the first
    one to a host resumes its session (shared through CURLSH), so it costs
    no full handshake.  nginx closes each connection after one request
    here, so every request after a worker's first is a new connection."""
    srv = _start(tls_root, test_ca, extra_server="keepalive_requests 1;")
    try:
        out = tmp_path / "out"
        p = run_segdl(["get", srv.url(MID), "-d", out, "--json", "-x", "1", "--workers", "1",
                       "--ca-cert", test_ca.ca_cert], journal)
        assert p.returncode == 0, p.stderr
        assert blake3_file(out / MID) == blake3_file(tls_root / MID)
        entries = srv.access_log_entries(wait_for=3)
    finally:
        srv.stop()
    ranged = [e for e in entries if e["path"] == "/" + MID and e["status"] == 206 and not is_probe(e["range"])]
    assert len(ranged) >= 3, ranged  # several requests, so several connections
    assert len({e["connection"] for e in ranged}) == len(ranged)
    first, *later = sorted(ranged, key=lambda e: e["msec"] - e["request_time"])
    assert first["ssl_reused"] in (".", "r"), first  # the log records it
    assert [e["ssl_reused"] for e in later] == ["r"] * len(later), later


def test_small_files_share_h2_connections_two_streams_each(test_ca, tmp_path, journal):
    """Many small files over h2: their probes (each the whole download of
    its file) go two at a time on a connection, so one's wait for its
    answer overlaps the other's body, on at most PROBE_AHEAD / 2
    connections; each still arrives whole and verified."""
    from segdl.engine.run.intake import PROBE_AHEAD, PROBE_STREAMS

    root = tmp_path / "small"
    root.mkdir()
    names = [f"s{i:03d}.bin" for i in range(48)]
    for i, name in enumerate(names):
        write_deterministic_file(root / name, 200 * 1024 + i, seed=100 + i)
    sleep_ms = 100 if os.path.exists(ECHO_MODULE) else None
    srv = _start(root, test_ca, http2=True, echo_sleep_ms=sleep_ms)
    try:
        listing = tmp_path / "in.txt"
        listing.write_text("".join(srv.url(n) + "\n" for n in names))
        out = tmp_path / "out"
        p = run_segdl(["get", "-i", listing, "-d", out, "--json", "-j", "16", "--ca-cert", test_ca.ca_cert], journal)
        assert p.returncode == 0, p.stderr
        entries = srv.access_log_entries(wait_for=len(names))
    finally:
        srv.stop()
    for name in names:
        assert blake3_file(out / name) == blake3_file(root / name)
    assert len(entries) == len(names)  # one request per file: the probe was the download
    assert {e["protocol"] for e in entries} == {"HTTP/2.0"}
    assert len({e["connection"] for e in entries}) <= PROBE_AHEAD // PROBE_STREAMS
    if sleep_ms:
        assert _concurrent_streams(entries) > 0  # streams did share connections
        assert max(_peak_per_connection(entries).values()) <= PROBE_STREAMS


def _peak_per_connection(entries: list[dict]) -> dict[int, int]:
    """Most requests in progress at one instant, per connection."""
    peak: dict[int, int] = {}
    for conn in {e["connection"] for e in entries}:
        marks = sorted((t, step) for e in entries if e["connection"] == conn
                       for t, step in ((e["msec"] - e["request_time"] + 0.001, 1), (e["msec"], -1)))
        busy = top = 0
        for _, step in marks:
            busy += step
            top = max(top, busy)
        peak[conn] = top
    return peak
