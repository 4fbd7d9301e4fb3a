"""Self-tests for tests/support/servers.py: nginx wrapper and FaultServer faults."""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import urllib.parse

import pytest

from servers import MiB, FaultServer, Nginx, NginxError, blake3_bytes, blake3_file, write_deterministic_file

DATA = bytes((i * 7 + i // 251) & 0xFF for i in range(100_000))


def request(port, path, headers=None, method="GET", timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, resp.headers, body
    finally:
        conn.close()


def raw_exchange(port, path, headers=None, timeout=5.0):
    """Send a GET on a raw socket and read until EOF/reset/timeout.

    Returns (header_block: str, body: bytes, error: str|None).
    """
    hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    req = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    buf = b""
    err = None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req.encode())
        for _ in range(100_000):
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, TimeoutError) as e:
                err = type(e).__name__
                break
            if not chunk:
                err = "EOF"
                break
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body, err


# --------------------------------------------------------------------------
# nginx
# --------------------------------------------------------------------------

def test_nginx_range_206_and_log(nginx, nginx_root):
    nginx.reset_access_log()
    odd = (nginx_root / "odd.bin").read_bytes()
    status, headers, body = request(nginx.port, "/odd.bin", {"Range": "bytes=100-199"})
    assert status == 206
    assert headers["Content-Range"] == f"bytes 100-199/{len(odd)}"
    assert body == odd[100:200]
    assert headers["ETag"]
    entries = nginx.access_log_entries(wait_for=1)
    assert len(entries) == 1
    e = entries[0]
    assert (e["path"], e["status"], e["body_bytes_sent"], e["range"], e["completion"]) == \
        ("/odd.bin", 206, 100, "bytes=100-199", True)
    assert e["bytes_sent"] > 100
    assert nginx.body_bytes_sent("odd.bin") == 100
    assert nginx.body_bytes_sent("/nope") == 0


def test_nginx_full_head_416_and_tiny_files(nginx, nginx_root):
    status, headers, body = request(nginx.port, "/one.bin")
    assert status == 200 and body == (nginx_root / "one.bin").read_bytes()
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = request(nginx.port, "/zero.bin")
    assert status == 200 and body == b"" and headers["Content-Length"] == "0"
    status, headers, _ = request(nginx.port, "/odd.bin", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == 5 * 2**20 + 12345
    status, headers, _ = request(nginx.port, "/odd.bin", {"Range": "bytes=999999999-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{5 * 2**20 + 12345}"
    assert os.path.getsize(nginx_root / "big.bin") == 300 * 2**20
    assert blake3_file(nginx_root / "one.bin") == blake3_bytes(
        (nginx_root / "one.bin").read_bytes())


def test_nginx_echo_sleep_delays_and_keeps_ranges(make_nginx, nginx_root):
    srv = make_nginx(echo_sleep_ms=50, sndbuf="64k")
    odd = (nginx_root / "odd.bin").read_bytes()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        for rng, (a, b) in (("bytes=10-19", (10, 19)), ("bytes=-5", (len(odd) - 5, len(odd) - 1))):
            t0 = time.monotonic()
            conn.request("GET", "/odd.bin", headers={"Range": rng})
            resp = conn.getresponse()
            body = resp.read()
            assert time.monotonic() - t0 >= 0.05
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes {a}-{b}/{len(odd)}"
            assert body == odd[a:b + 1]
    finally:
        conn.close()
    entries = srv.access_log_entries(wait_for=2)
    assert [e["status"] for e in entries] == [206, 206]
    assert entries[0]["connection"] == entries[1]["connection"]  # keep-alive survived
    assert entries[1]["connection_requests"] == 2
    assert all(e["request_time"] >= 0.05 for e in entries)


def test_nginx_limit_rate_and_aborted_request_is_logged(make_nginx, nginx_root):
    srv = make_nginx(limit_rate="1m")
    t0 = time.monotonic()
    status, _, body = request(srv.port, "/odd.bin", {"Range": "bytes=0-1572863"})
    assert status == 206 and len(body) == 1536 * 1024
    # nginx lets one second's worth (1 MiB) out as an initial burst, the
    # remaining 0.5 MiB is paced: ~0.5 s
    assert 0.4 <= time.monotonic() - t0 < 3
    # Start a big download and kill the client mid-way.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        got = 0
        deadline = time.monotonic() + 3
        while got < 200_000 and time.monotonic() < deadline:
            got += len(s.recv(65536))
    entries = srv.access_log_entries(wait_for=2, timeout=5)
    assert len(entries) == 2
    aborted = entries[1]
    assert aborted["path"] == "/big.bin" and aborted["status"] == 200
    assert aborted["completion"] is False
    assert got <= aborted["bytes_sent"]  # got includes the header block
    assert aborted["body_bytes_sent"] < 300 * 2**20


def test_nginx_start_failure_reports_stderr(nginx_root):
    with pytest.raises(NginxError, match="unknown directive"):
        Nginx(root=nginx_root, extra_http="    no_such_directive on;").start()


# --------------------------------------------------------------------------
# FaultServer: normal behaviour
# --------------------------------------------------------------------------

def test_fault_server_normal_ranges(fault_server: FaultServer):
    srv = fault_server
    url = srv.add("a.bin", DATA)
    assert url == srv.url("a.bin")
    n = len(DATA)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        cases = [
            ({}, 200, None, DATA),
            ({"Range": "bytes=10-19"}, 206, f"bytes 10-19/{n}", DATA[10:20]),
            ({"Range": "bytes=99990-"}, 206, f"bytes 99990-{n - 1}/{n}", DATA[99990:]),
            ({"Range": "bytes=-7"}, 206, f"bytes {n - 7}-{n - 1}/{n}", DATA[-7:]),
            ({"Range": "bytes=5-999999"}, 206, f"bytes 5-{n - 1}/{n}", DATA[5:]),
            ({"Range": f"bytes={n}-"}, 416, f"bytes */{n}", None),
            ({"Range": "bytes=0-1,5-6"}, 200, None, DATA),
        ]
        sock_ids = set()
        for hdrs, status, crange, body in cases:
            conn.request("GET", "/a.bin", headers=hdrs)
            resp = conn.getresponse()
            got = resp.read()
            sock_ids.add(id(conn.sock))
            assert resp.status == status, hdrs
            assert resp.headers.get("Content-Range") == crange
            assert resp.headers["Accept-Ranges"] == "bytes"
            if body is not None:
                assert got == body
                assert int(resp.headers["Content-Length"]) == len(body)
        assert len(sock_ids) == 1  # keep-alive all along
        conn.request("HEAD", "/a.bin")
        resp = conn.getresponse()
        assert resp.read() == b"" and resp.headers["Content-Length"] == str(n)
        etag, lm = resp.headers["ETag"], resp.headers["Last-Modified"]
        assert etag.startswith('"') and lm.endswith("GMT")
    finally:
        conn.close()
    # If-Range: matching validator honours Range, stale one gets the full body
    assert request(srv.port, "/a.bin", {"Range": "bytes=0-0", "If-Range": etag})[0] == 206
    assert request(srv.port, "/a.bin", {"Range": "bytes=0-0", "If-Range": lm})[0] == 206
    assert request(srv.port, "/a.bin", {"Range": "bytes=0-0", "If-Range": '"x"'})[0] == 200
    assert request(srv.port, "/missing")[0] == 404
    sent = n + 10 + 10 + 7 + (n - 5) + n + 1 + 1 + n
    assert srv.bytes_sent("a.bin") == sent
    recs = srv.requests("a.bin")
    assert [r["status"] for r in recs][:7] == [200, 206, 206, 206, 206, 416, 200]
    assert recs[1]["range"] == "bytes=10-19" and recs[1]["headers"]["Range"] == "bytes=10-19"


def test_fault_server_explicit_validators_and_empty_blob(fault_server):
    srv = fault_server
    srv.add("e.bin", b"", etag=None, last_modified=None)
    status, headers, body = request(srv.port, "/e.bin")
    assert status == 200 and body == b"" and "ETag" not in headers
    assert "Last-Modified" not in headers
    assert request(srv.port, "/e.bin", {"Range": "bytes=0-"})[0] == 416
    srv.add("dir/x y.bin", b"abc", etag='"fixed"')
    status, headers, body = request(srv.port, "/dir/x%20y.bin")
    assert (status, headers["ETag"], body) == (200, '"fixed"', b"abc")


# --------------------------------------------------------------------------
# FaultServer: faults
# --------------------------------------------------------------------------

def test_drop_rst_and_times_healing(fault_server):
    srv = fault_server
    srv.add("d.bin", DATA)
    head, body, err = raw_exchange(srv.port, "/drop/d.bin?after=1000&times=1")
    assert " 200 " in head.splitlines()[0] and f"Content-Length: {len(DATA)}" in head
    assert body == DATA[:1000] and err == "ConnectionResetError"
    # healed after one firing
    status, _, body = request(srv.port, "/drop/d.bin?after=1000&times=1")
    assert status == 200 and body == DATA
    # default `after` is half the requested range; mode=fin gives a clean EOF
    head, body, err = raw_exchange(srv.port, "/drop/d.bin?mode=fin", {"Range": "bytes=0-99"})
    assert " 206 " in head and body == DATA[:50] and err == "EOF"
    assert srv.bytes_sent("d.bin") == 1000 + len(DATA) + 50


def test_status_fault(fault_server):
    srv = fault_server
    srv.add("s.bin", DATA)
    for code in (503, 429, 500, 408):
        status, headers, body = request(srv.port, f"/status/s.bin?code={code}&retry_after=3")
        assert status == code and headers["Retry-After"] == "3" and body
    status, headers, _ = request(srv.port, "/status/s.bin")
    assert status == 503 and "Retry-After" not in headers
    assert request(srv.port, "/status/s.bin?code=500&times=2")[0] == 500
    assert request(srv.port, "/status/s.bin?code=500&times=2")[0] == 500
    assert request(srv.port, "/status/s.bin?code=500&times=2")[0] == 200
    # The server counts a body once its write returns, which may be just
    # after the client has read it: wait for the count (bounded).
    deadline = time.monotonic() + 5
    while srv.bytes_sent("s.bin") < len(DATA) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.bytes_sent("s.bin") == len(DATA)


def test_norange_fault(fault_server):
    srv = fault_server
    srv.add("n.bin", DATA)
    status, headers, body = request(srv.port, "/norange/n.bin?times=1", {"Range": "bytes=5-9"})
    assert status == 200 and body == DATA and "Accept-Ranges" not in headers
    status, headers, body = request(srv.port, "/norange/n.bin?times=1", {"Range": "bytes=5-9"})
    assert status == 206 and body == DATA[5:10]


def test_badrange_fault(fault_server):
    srv = fault_server
    srv.add("b.bin", DATA)
    n = len(DATA)
    status, headers, body = request(srv.port, "/badrange/b.bin", {"Range": "bytes=100-199"})
    assert status == 206 and headers["Content-Range"] == f"bytes 101-200/{n}"
    assert body == DATA[101:201]
    status, headers, body = request(srv.port, "/badrange/b.bin?shift=-50&times=1",
                                    {"Range": "bytes=100-199"})
    assert headers["Content-Range"] == f"bytes 50-149/{n}" and body == DATA[50:150]
    status, headers, body = request(srv.port, "/badrange/b.bin?shift=-50&times=1",
                                    {"Range": "bytes=100-199"})
    assert headers["Content-Range"] == f"bytes 100-199/{n}" and body == DATA[100:200]


def test_stall_fault_then_completes(fault_server):
    srv = fault_server
    srv.add("st.bin", DATA)
    t0 = time.monotonic()
    status, _, body = request(srv.port, "/stall/st.bin?after=10&seconds=0.3")
    assert status == 200 and body == DATA and time.monotonic() - t0 >= 0.3
    # a client with a short timeout sees exactly `after` bytes, then nothing
    head, body, err = raw_exchange(srv.port, "/stall/st.bin?after=10&seconds=5", timeout=0.3)
    assert " 200 " in head and body == DATA[:10] and err == "TimeoutError"


def test_stop_is_prompt_with_stalled_connections():
    srv = FaultServer()
    srv.add("x", DATA)
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"GET /stall/x?seconds=30 HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(100)
            socks.append(s)
        idle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)  # idle keep-alive
        socks.append(idle)
        time.sleep(0.1)
        t0 = time.monotonic()
        srv.stop()
        assert time.monotonic() - t0 < 2.0
        assert not srv._threads
    finally:
        for s in socks:
            s.close()


def test_short_fault(fault_server):
    srv = fault_server
    srv.add("sh.bin", DATA)
    head, body, err = raw_exchange(srv.port, "/short/sh.bin?after=123")
    assert f"Content-Length: {len(DATA)}" in head and body == DATA[:123] and err == "EOF"
    with pytest.raises(http.client.IncompleteRead):
        request(srv.port, "/short/sh.bin?after=123")


def test_changing_fault(fault_server):
    srv = fault_server
    srv.add("c.bin", DATA)
    seen = []
    for _ in range(4):
        status, headers, body = request(srv.port, "/changing/c.bin?times=2")
        seen.append((headers["ETag"], headers["Last-Modified"], blake3_bytes(body)))
    assert seen[0] == seen[1]
    assert seen[0][2] == blake3_bytes(DATA)
    assert len({s[0] for s in seen[1:]}) == 3
    assert len({s[1] for s in seen[1:]}) == 3
    assert len({s[2] for s in seen[1:]}) == 3
    # stale If-Range -> the new version in full
    status, headers, body = request(srv.port, "/changing/c.bin?times=2",
                                    {"Range": "bytes=0-9", "If-Range": seen[0][0]})
    assert status == 200 and len(body) == len(DATA) and body != DATA


def test_signed_fault(fault_server):
    srv = fault_server
    srv.add("sg.bin", DATA)
    status, headers, _ = request(srv.port, "/signed/sg.bin?ttl=0.4&expired_code=410")
    assert status == 302
    loc = urllib.parse.urlsplit(headers["Location"])
    assert loc.netloc == f"127.0.0.1:{srv.port}" and loc.path.startswith("/s/")
    status, headers, body = request(srv.port, loc.path, {"Range": "bytes=0-9"})
    assert status == 206 and body == DATA[:10]
    time.sleep(0.45)
    assert request(srv.port, loc.path)[0] == 410
    # a fresh token works again; the default expiry code is 403
    status, headers, _ = request(srv.port, "/signed/sg.bin?ttl=0")
    assert request(srv.port, urllib.parse.urlsplit(headers["Location"]).path)[0] == 403
    assert request(srv.port, "/s/deadbeef/sg.bin")[0] == 403


def test_disposition_fault(fault_server):
    srv = fault_server
    srv.add("dp.bin", b"xyz")

    def cd(query):
        head, body, _ = raw_exchange(srv.port, "/disposition/dp.bin?" + query + "&close=1")
        assert body == b"xyz"
        for line in head.encode("latin-1").split(b"\r\n"):
            if line.lower().startswith(b"content-disposition:"):
                return line.split(b":", 1)[1].strip()
        raise AssertionError(head)

    q = urllib.parse.quote
    assert cd("fn=" + q("../../x")) == b'attachment; filename="../../x"'
    assert cd("fn=" + q("/etc/passwd")) == b'attachment; filename="/etc/passwd"'
    assert cd("fn=" + q("a\x01b\x1b\tc")) == b'attachment; filename="a\x01b\x1b\tc"'
    assert cd("fn=" + q('q"\\')) == b'attachment; filename="q\\"\\\\"'
    assert cd("fn=" + q("x\r\nSet-Cookie: a")) == b'attachment; filename="xSet-Cookie: a"'
    assert cd("fn=" + q("ünï.bin")) == 'attachment; filename="ünï.bin"'.encode()
    assert cd("star=1&fn=" + q("ünï.bin")) == \
        b"attachment; filename*=UTF-8''%C3%BCn%C3%AF.bin"
    assert cd("enc=latin-1&fn=" + q("ü")) == b'attachment; filename="\xfc"'
    assert cd("star=1&fallback=u.bin&fn=" + q("ü")) == \
        b"attachment; filename=\"u.bin\"; filename*=UTF-8''%C3%BC"


def test_nolength_fault(fault_server):
    srv = fault_server
    srv.add("nl.bin", DATA)
    head, body, err = raw_exchange(srv.port, "/nolength/nl.bin", {"Range": "bytes=0-9"})
    assert " 200 " in head and "Content-Length" not in head and "Connection: close" in head
    assert body == DATA and err == "EOF"
    status, _, body = request(srv.port, "/nolength/nl.bin")
    assert status == 200 and body == DATA


def test_chunked_fault(fault_server):
    srv = fault_server
    srv.add("ch.bin", DATA)
    status, headers, body = request(srv.port, "/chunked/ch.bin?chunk=1000", {"Range": "bytes=0-9"})
    assert status == 200 and body == DATA
    assert headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in headers
    assert srv.bytes_sent("ch.bin") == len(DATA)


def test_slowfirst_fault(fault_server):
    srv = fault_server
    srv.add("sf.bin", DATA)
    t0 = time.monotonic()
    assert request(srv.port, "/slowfirst/sf.bin?delay=0.3&times=1")[0] == 200
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    assert request(srv.port, "/slowfirst/sf.bin?delay=0.3&times=1")[0] == 200
    assert time.monotonic() - t0 < 0.25


def test_redirect_fault(fault_server):
    srv = fault_server
    srv.add("r.bin", DATA)
    path = "/redirect/r.bin?n=2"
    hops = 0
    for _ in range(5):
        status, headers, body = request(srv.port, path, {"Authorization": "Bearer t"})
        if status != 302:
            break
        hops += 1
        path = urllib.parse.urlsplit(headers["Location"])._replace(scheme="", netloc="").geturl()
    assert hops == 2 and status == 200 and body == DATA
    assert all(r["headers"].get("Authorization") == "Bearer t" for r in srv.requests("r.bin"))
    status, headers, _ = request(srv.port, "/redirect/r.bin?n=1&relative=1&code=307")
    assert status == 307 and headers["Location"].startswith("/redirect/r.bin?")

    with FaultServer() as other:
        other.add("r.bin", DATA)
        status, headers, _ = request(srv.port, f"/redirect/r.bin?to_port={other.port}")
        assert status == 302
        assert headers["Location"] == f"http://localhost:{other.port}/r.bin"
        status, _, body = request(other.port, "/r.bin")  # test client goes to 127.0.0.1
        assert status == 200 and body == DATA
        assert "Authorization" not in other.requests("r.bin")[0]["headers"]


def test_te_range_fault(fault_server):
    srv = fault_server
    srv.add("t.bin", DATA)
    status, headers, body = request(srv.port, "/te_range/t.bin", {"Range": "bytes=100-199"})
    assert status == 206 and headers["Transfer-Encoding"] == "chunked"
    assert headers["Content-Range"] == f"bytes 101-200/{len(DATA)}"
    assert "Content-Length" not in headers and body == DATA[100:200]


def test_rate_param_and_concurrency(fault_server):
    srv = fault_server
    srv.add("big", DATA * 4)
    t0 = time.monotonic()
    status, _, body = request(srv.port, "/big?rate=1000000", {"Range": "bytes=0-299999"})
    assert status == 206 and len(body) == 300_000 and time.monotonic() - t0 >= 0.2
    results = []

    def worker(i):
        results.append(request(srv.port, "/big", {"Range": f"bytes={i * 1000}-{i * 1000 + 999}"}))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 16 and all(r[0] == 206 and len(r[2]) == 1000 for r in results)
    assert len(srv.requests("big")) == 17


def test_paced_mirror_paces_each_connection_without_a_burst(tmp_path):
    """Kernel pacing (SO_MAX_PACING_RATE): one connection's 3 MiB at
    2 MiB/s take about 1.5 s; nginx's limit_rate would hand the first
    2 MiB over at once (its one-second burst), and all of it in about
    0.5 s.  (Timed from the request: a client slow to read its first
    bytes, under load, finds more of them waiting in its socket.)"""
    from servers import PacedMirror

    write_deterministic_file(tmp_path / "p.bin", 3 * MiB, 9)
    with PacedMirror(tmp_path, rate=2 * MiB) as m:
        import urllib.request

        t0 = time.monotonic()
        with urllib.request.urlopen(m.url("p.bin"), timeout=30) as r:
            first = r.read(64 * 1024)
            t_first = time.monotonic()
            body = first + r.read()
        elapsed = time.monotonic() - t0
        assert body == (tmp_path / "p.bin").read_bytes()
        assert elapsed >= 0.85 * (3 * MiB) / (2 * MiB), elapsed
        log = m.access_log_entries()
        assert len(log) == 1 and log[0]["body_bytes_sent"] == 3 * MiB and log[0]["status"] == 200
        assert t_first - t0 < 1.0


def test_paced_mirror_counts_requests_served_at_once(tmp_path):
    """The mirror's concurrency log: three requests at once, each held
    open by pacing, count as three; after they end nothing is in flight,
    and an idle keep-alive connection counts as a connection only."""
    import threading
    import urllib.request

    from servers import PacedMirror

    write_deterministic_file(tmp_path / "c.bin", 512 * 1024, 4)
    with PacedMirror(tmp_path, rate=512 * 1024) as m:
        barrier = threading.Barrier(3, timeout=10)

        def fetch() -> None:
            barrier.wait()
            with urllib.request.urlopen(m.url("c.bin"), timeout=30) as r:
                r.read()

        ts = [threading.Thread(target=fetch) for _ in range(3)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        deadline = time.monotonic() + 5
        while m.concurrency()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)  # the server notices the last byte acknowledged
        c = m.concurrency()
        assert c["requests"] == 3 and c["connections"] >= 3 and c["in_flight"] == 0, c
        m.reset_access_log()
        assert m.concurrency()["requests"] == 0


def test_nginx_pace_caps_each_tls_h2_connection_without_a_burst(tmp_path):
    """``pace=``: nginx inherits a listening socket with SO_MAX_PACING_RATE,
    so every connection it accepts (TLS, h2 here) is paced by the kernel
    from its first byte.  Counted in bytes over a bounded time: 2 s at
    1 MiB/s give about 2 MiB of a 16 MiB file (unpaced, all of it arrives
    in milliseconds on loopback)."""
    import subprocess

    from tlsca import TLSUnavailable, make_test_ca

    try:
        ca = make_test_ca(tmp_path / "ca")
    except TLSUnavailable as e:
        pytest.skip(str(e))
    root = tmp_path / "root"
    root.mkdir()
    write_deterministic_file(root / "p.bin", 16 * MiB, 17)
    rate, window = 1 * MiB, 2.0
    with Nginx(root, tls=ca.server_pair, http2=True, pace=rate) as srv:
        p = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(ca.ca_cert), "-o", os.devnull,
                            "--max-time", str(window), "-w", "%{size_download} %{http_version}",
                            srv.url("p.bin")], capture_output=True, text=True, timeout=30)
        assert p.returncode == 28, p.stderr  # cut by --max-time: the file is far from done
        got, version = p.stdout.split()
        assert version == "2"
        # At most the rate over the whole window plus the ~100 KB the kernel
        # lets out before pacing bites; at least a generous share of the
        # rate on a loaded machine.
        assert 0.4 * rate * window <= int(got) <= rate * window + 256 * 1024, got
        entries = srv.access_log_entries(wait_for=1, timeout=10)
    assert [(e["protocol"], e["path"]) for e in entries] == [("HTTP/2.0", "/p.bin")]
    assert "using inherited sockets" in srv.stderr_text()


def test_nginx_proxy_passes_requests_through(fault_server, tmp_path):
    """``proxy=``: every request goes to the server behind (here a
    FaultServer), ranges, redirects (Location unchanged) and the log alike."""
    fault_server.add("blob", DATA)
    with Nginx(tmp_path, proxy=fault_server.base_url) as srv:
        status, headers, body = request(srv.port, "/blob", {"Range": "bytes=10-19"})
        assert status == 206 and body == DATA[10:20]
        status, headers, _ = request(srv.port, "/redirect/blob?to_port=1")
        assert status == 302 and headers["Location"] == "http://localhost:1/blob"
        entries = srv.access_log_entries(wait_for=2)
    assert [e["status"] for e in entries] == [206, 302]
    assert [r["range"] for r in fault_server.requests("blob")][:1] == ["bytes=10-19"]


def test_peak_overlap_counts_requests_at_one_moment_not_a_hand_over():
    from segdl.cli.fileserver import peak_overlap

    three = [(0.0, 1.0), (0.5, 1.5), (0.9, 2.0)]
    assert peak_overlap(three, 0.0, 0.0) == 3
    # A fourth that begins as one ends: the client had the last byte and
    # went on; the server saw the acknowledgement a poll later.
    assert peak_overlap([*three, (0.995, 1.8)], 0.0, 0.02) == 3
    assert peak_overlap([*three, (0.995, 1.8)], 0.0, 0.0) == 4
    # Beside one another for longer than that: counted.
    assert peak_overlap([*three, (0.95, 1.8)], 0.0, 0.02) == 4
    # Only what is open after `since`; a span shorter than the grace is none.
    assert peak_overlap(three, 1.6, 0.0) == 1
    assert peak_overlap([(0.0, 0.01)], 0.0, 0.02) == 0
