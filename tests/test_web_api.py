"""The web page's doors, without a browser (issue 20): the one-time login,
what a session cookie may and may not do, the headers on every answer,
and the endpoints the page added (bulk, review, verify), against a real
`segdl serve` and a real paced mirror on 127.0.0.1.  `segdl verify` on the
command line.  (The page itself, in a real browser: test_web.py.)"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from helpers import SEGDL
from servers import PacedMirror
from segdl.engine.rules.ranges import KiB, MiB

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")

from serving import Serve, read_events  # noqa: E402
from test_serve_api import until  # noqa: E402

LOGIN = re.compile(r"(http://\S+/login\?code=[A-Za-z0-9_-]+)")


def login_urls(serve: Serve) -> list[str]:
    """The login URLs segdl serve printed so far (rich may wrap a line)."""
    return LOGIN.findall(serve.log())


def send(serve: Serve, method: str, path: str, headers: dict | None = None, body: bytes | None = None):
    """(status, headers, body) of one request, with exactly these headers (no token unless given)."""
    conn = http.client.HTTPConnection(serve.host, serve.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def log_in(serve: Serve) -> str:
    """A session cookie ("name=value"), from the newest printed URL."""
    url = login_urls(serve)[-1]
    status, headers, body = send(serve, "GET", url.split(str(serve.port), 1)[1])
    assert status == 200 and "location" not in headers, (status, headers)
    # A page of this origin whose own navigation goes to / (no script: the CSP allows none).
    assert b'<meta http-equiv="refresh" content="0; url=/">' in body and b"<script" not in body
    assert headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"]
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in cookie
    return cookie.split(";")[0]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-api-mirror")
    for i in range(3):
        (root / f"w{i}.bin").write_bytes(os.urandom(4 * MiB))
    (root / "small.bin").write_bytes(os.urandom(96 * KiB))
    with PacedMirror(root, rate=256 * KiB) as m:
        m.root = root
        yield m


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path, "-x", "1", "--max-connections", "8", "-j", "4")
    s.start()
    yield s
    s.stop()


def test_a_login_code_works_once_and_its_cookie_reads_only_from_this_origin(serve):
    until(lambda: login_urls(serve), 10, why="segdl serve prints a login URL")
    first = login_urls(serve)[-1]
    assert serve.token() not in serve.log().replace(first, "")  # the token itself is never printed
    cookie = log_in(serve)
    path = first.split(str(serve.port), 1)[1]
    status, _, body = send(serve, "GET", path)  # used up
    assert status == 403 and "used up" in json.loads(body)["error"]
    until(lambda: len(login_urls(serve)) == 2, 10, why="a fresh code follows a login")
    assert login_urls(serve)[-1] != first

    own = {"Cookie": cookie, "Sec-Fetch-Site": "same-origin"}
    status, headers, body = send(serve, "GET", "/service", own)
    assert status == 200 and json.loads(body)["roots"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = send(serve, "GET", "/", own)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="/web/app.js">' in body and b"<script>" not in body  # no inline script
    assert serve.token().encode() not in body

    # Another port of this machine is the same *site*: the browser sends the
    # cookie, and says where the request comes from.
    for site in ("same-site", "cross-site", None):
        h = {"Cookie": cookie, **({"Sec-Fetch-Site": site} if site else {})}
        assert send(serve, "GET", "/service", h)[0] == 401, site
        assert send(serve, "GET", "/", h)[0] == 401, site
    assert send(serve, "GET", "/service", {"Cookie": cookie.replace("=", "=x"), "Sec-Fetch-Site": "same-origin"})[0] == 401
    assert send(serve, "GET", "/", {})[0] == 401  # no session, no token: not even the page


def test_segdl_login_prints_a_fresh_code_and_only_the_token_makes_one(serve):
    """An expired code, or a second browser: `segdl login` asks the service
    (with its token) for a new one.  A page's session cannot mint codes."""
    until(lambda: login_urls(serve), 10)
    printed = login_urls(serve)[-1]
    out = subprocess.run([*SEGDL, "login", "--journal", str(serve.journal)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    fresh = LOGIN.findall(out.stdout + out.stderr)
    assert len(fresh) == 1 and fresh[0] != printed
    assert serve.token() not in out.stdout + out.stderr
    status, headers, _ = send(serve, "GET", fresh[0].split(str(serve.port), 1)[1])
    assert status == 200 and "HttpOnly" in headers["set-cookie"]
    cookie = headers["set-cookie"].split(";")[0]
    origin = f"http://{serve.host}:{serve.port}"
    with_session = {"Cookie": cookie, "Sec-Fetch-Site": "same-origin", "Origin": origin, "X-Segdl-Request": "1"}
    assert send(serve, "POST", "/login-codes", with_session)[0] == 403
    assert send(serve, "POST", "/login-codes", {})[0] == 401
    assert send(serve, "GET", fresh[0].split(str(serve.port), 1)[1])[0] == 403  # used up
    assert printed not in fresh  # the printed one still works, once
    assert send(serve, "GET", printed.split(str(serve.port), 1)[1])[0] == 200


def test_the_pages_event_stream_ends_with_its_session(serve):
    until(lambda: login_urls(serve), 10)
    cookie = log_in(serve)
    origin = f"http://{serve.host}:{serve.port}"
    conn = http.client.HTTPConnection(serve.host, serve.port, timeout=15)
    try:
        conn.request("GET", "/events?since=0", headers={"Cookie": cookie, "Sec-Fetch-Site": "same-origin"})
        resp = conn.getresponse()
        assert resp.status == 200  # the stream is open
        status, _, _ = send(serve, "POST", "/logout", {"Cookie": cookie, "Sec-Fetch-Site": "same-origin",
                                                       "Origin": origin, "X-Segdl-Request": "1"})
        assert status == 200
        deadline = time.monotonic() + 10
        while resp.fp.readline():  # bounded: the socket times out after 15 s
            assert time.monotonic() < deadline, "the stream outlived the session"
    finally:
        conn.close()


def test_segdl_login_without_a_service_says_so(tmp_path):
    out = subprocess.run([*SEGDL, "login", "--journal", str(tmp_path / "j.sqlite")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "no segdl serve runs" in out.stdout + out.stderr


def test_a_change_with_the_cookie_needs_the_header_and_the_own_origin(serve):
    until(lambda: login_urls(serve), 10)
    cookie = log_in(serve)
    origin = f"http://{serve.host}:{serve.port}"
    body = json.dumps({"max_speed": 1234}).encode()
    base = {"Cookie": cookie, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    refused = [
        {**base, "Origin": origin},  # no X-Segdl-Request: what a form sends
        {**base, "X-Segdl-Request": "1"},  # no Origin
        {**base, "X-Segdl-Request": "1", "Origin": f"http://127.0.0.1:{serve.port + 1}"},
        {**base, "X-Segdl-Request": "1", "Origin": origin, "Sec-Fetch-Site": "same-site"},
    ]
    for h in refused:
        status, _, _ = send(serve, "PATCH", "/limits", h, body)
        assert status in (401, 403), h
    assert serve.call("GET", "/service")[1]["limits"]["max_speed"] == 0  # nothing changed
    status, _, answer = send(serve, "PATCH", "/limits", {**base, "X-Segdl-Request": "1", "Origin": origin}, body)
    assert status == 200 and json.loads(answer)["max_speed"] == 1234
    # Log out: the cookie opens nothing any more; the token still does.
    status, headers, _ = send(serve, "POST", "/logout", {**base, "X-Segdl-Request": "1", "Origin": origin})
    assert status == 200 and "Max-Age=0" in headers["set-cookie"]
    assert send(serve, "GET", "/service", base)[0] == 401
    assert serve.call("GET", "/service")[0] == 200


def test_bulk_checks_the_whole_request_then_changes_every_running_file_in_one_go(serve, mirror):
    status, job = serve.call("POST", "/jobs", {"urls": [mirror.url(f"w{i}.bin") for i in range(3)]})
    assert status == 201, job
    ids = job["files"]
    for bad, field in (({"ids": ids}, None), ({"ids": [], "paused": True}, "ids"),
                       ({"ids": ids, "paused": "yes"}, "paused"), ({"ids": [0], "paused": True}, "ids[0]"),
                       ({"ids": ids, "paused": True, "cancel": True}, None),
                       ({"ids": ids, "keep_partial": True, "paused": True}, None),
                       ({"ids": ids, "what": 1}, "what")):
        status, answer = serve.call("POST", "/files/bulk", bad)
        assert status == 400, (bad, answer)
        if field:
            assert answer["field"] == field
    assert not any(serve.file(i)["paused"] for i in ids)  # a refused request applied nothing

    status, answer = serve.call("POST", "/files/bulk", {"ids": ids, "paused": True, "priority": 7, "max_speed": 65536})
    assert status == 200 and sorted(answer["done"]) == sorted(ids) and answer["refused"] == []
    for i in ids:
        f = serve.file(i)
        assert f["paused"] and f["priority"] == 7 and f["max_speed"] == 65536
    status, answer = serve.call("POST", "/files/bulk", {"ids": [*ids, 999999], "paused": False})
    assert sorted(answer["done"]) == sorted(ids)
    assert [r["id"] for r in answer["refused"]] == [999999] and "999999" in answer["refused"][0]["error"]
    status, answer = serve.call("POST", "/files/bulk", {"ids": ids[:2], "cancel": True})
    assert status == 200 and sorted(answer["done"]) == sorted(ids[:2])
    for i in ids[:2]:
        assert serve.file(i)["state"] == "removed"
    status, answer = serve.call("POST", "/files/bulk", {"ids": ids[:2], "paused": True})
    assert answer["done"] == [] and len(answer["refused"]) == 2  # removed files do not change


def test_review_lists_what_is_here_missing_and_corrupt_and_the_free_space(serve, mirror, tmp_path):
    manifest = {"collection": "rev", "files": [{"url": mirror.url("small.bin"), "path": "a/small.bin"},
                                               {"url": mirror.url("w0.bin"), "path": "w0.bin", "size": 4 * MiB}]}
    status, r = serve.call("POST", "/review", {"manifest": manifest})
    assert status == 200, r
    # (small.bin's size is not in the manifest: its server says it.)
    assert [(f["path"], f["state"], f["size"]) for f in r["files"]] == [("a/small.bin", "missing", 96 * KiB),
                                                                        ("w0.bin", "missing", 4 * MiB)]
    assert r["collection"] == "rev" and r["total"] == 4 * MiB + 96 * KiB and r["unknown_sizes"] == 0
    assert r["free"] > 0 and r["dest"] == str(serve.out.resolve())
    assert serve.call("GET", "/jobs")[1]["jobs"] == []  # nothing started, nothing fetched
    assert serve.call("POST", "/review", {"manifest": manifest, "select": [0]})[0] == 400
    assert serve.call("POST", "/review", {"manifest": manifest, "dest": "/etc"})[0] == 400

    status, job = serve.call("POST", "/jobs", {"manifest": manifest, "select": ["a/small.bin"]})
    assert status == 201
    serve.wait_files(job["job"])
    r = serve.call("POST", "/review", {"manifest": manifest})[1]
    assert [f["state"] for f in r["files"]] == ["here", "missing"]

    fid = job["files"][0]
    assert (serve.file(fid)["on_disk"], serve.file(fid)["checked"]) == (True, None)
    status, v = serve.call("POST", "/verify", {"ids": job["files"]})
    assert status == 200 and v["files"][0]["result"] == "ok"
    checked = serve.file(fid)["checked"]
    assert checked["result"] == "ok" and abs(checked["at"] - time.time()) < 60  # kept in the journal
    told = lambda evs: [e for e in evs if e["event"] == "checked" and e["file"] == fid]  # noqa: E731
    event = told(read_events(serve, told, timeout=10))[-1]["checked"]  # (so a page shows it at once)
    assert event["result"] == "ok" and abs(event["at"] - checked["at"]) < 1e-3

    # Damaged on disk: before any verify the review says corrupt (not as
    # segdl left it), not "changed upstream" (the manifest is the same).
    target = serve.out / "a" / "small.bin"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    r = serve.call("POST", "/review", {"manifest": manifest})[1]
    assert [f["state"] for f in r["files"]] == ["corrupt", "missing"]
    # Verify finds it, records it; the review still says corrupt.
    status, v = serve.call("POST", "/verify", {"ids": job["files"]})
    assert status == 200 and v["summary"]["corrupt"] == 1 and v["files"][0]["result"] == "corrupt"
    assert serve.file(fid)["state"] == "hash_mismatch" and serve.file(fid)["checked"]["result"] == "corrupt"
    r = serve.call("POST", "/review", {"manifest": manifest})[1]
    assert [f["state"] for f in r["files"]] == ["corrupt", "missing"]
    # ... and a retry of that one file fetches it again, whole.
    status, again = serve.call("POST", "/retry", {"ids": job["files"]})
    assert status == 200 and len(again["jobs"]) == 1
    serve.wait_files(again["jobs"][0]["job"])
    assert target.read_bytes() == (mirror.root / "small.bin").read_bytes()
    assert Path(f"{target}.corrupt").read_bytes() == bytes(data)  # the damaged copy: moved aside, not lost
    assert serve.file(fid)["checked"] is None  # (downloaded again: the old check no longer applies)
    # Gone from disk: the journal still says done, the file says it is not here.
    target.unlink()
    assert (serve.file(fid)["state"], serve.file(fid)["on_disk"]) == ("done", False)
    assert [f["on_disk"] for f in serve.call("GET", "/files")[1]["files"] if f["id"] == fid] == [False]


def test_review_asks_each_server_the_size_and_name_of_a_plain_url(serve, fault_server):
    """As a link grabber: a list of URLs is reviewed with each file's size
    and the name its server gives (Content-Disposition), from one small
    ranged request each; a URL that cannot be fetched (404) is
    ``unavailable``, with why.  Nothing is downloaded."""
    fault_server.add("plain.bin", os.urandom(300 * KiB))
    fault_server.add("cd.bin", os.urandom(200 * KiB))
    urls = [fault_server.url("plain.bin"), fault_server.url("disposition/cd.bin?fn=named%20by%20server.bin"),
            fault_server.url("gone.bin")]
    status, r = serve.call("POST", "/review", {"urls": urls})
    assert status == 200, r
    got = [(f["path"], f["state"], f["size"]) for f in r["files"]]
    assert got == [("plain.bin", "missing", 300 * KiB), ("named by server.bin", "missing", 200 * KiB),
                   ("gone.bin", "unavailable", None)], got
    assert "404" in r["files"][2]["error"] and r["files"][0]["error"] is None
    assert r["total"] == 500 * KiB and r["unknown_sizes"] == 1
    sent = fault_server.bytes_sent("plain.bin") + fault_server.bytes_sent("cd.bin")
    assert sent <= 2 * 64 * KiB, sent  # probes, not downloads
    assert serve.call("GET", "/jobs")[1]["jobs"] == []

    # Fetched, then changed on its server (same size, other bytes: another
    # ETag): the job reviewed again says so, as the Library's tab asks.
    status, job = serve.call("POST", "/jobs", {"urls": urls[:1]})
    assert status == 201, job
    serve.wait_files(job["job"])
    def again():
        status, r = serve.call("POST", "/review", {"job": job["job"]})
        assert status == 200, r
        return {f["path"]: f["state"] for f in r["files"]}
    assert again() == {"plain.bin": "here"}
    fault_server.add("plain.bin", os.urandom(300 * KiB))
    assert again() == {"plain.bin": "changed"}
    fault_server.add("plain.bin", os.urandom(100 * KiB))  # (another size: not what the journal has either)
    assert again() == {"plain.bin": "changed"}


def test_segdl_verify_reports_ok_corrupt_and_missing_with_its_exit_code(serve, mirror):
    status, job = serve.call("POST", "/jobs", {"manifest": {"collection": "cli", "files": [
        {"url": mirror.url("small.bin"), "path": "x.bin"}, {"url": mirror.url("small.bin"), "path": "y.bin"},
        {"url": mirror.url("small.bin"), "path": "z.bin"}]}})
    serve.wait_files(job["job"])
    serve.stop()  # (the CLI reads and writes the journal itself)
    run = lambda *a: subprocess.run([*SEGDL, "verify", *a, "--journal", str(serve.journal)], capture_output=True,
                                    text=True, timeout=120)
    r = run("cli")
    assert r.returncode == 0 and r.stdout.count("ok ") == 3, r.stdout + r.stderr
    with open(serve.out / "y.bin", "r+b") as f:
        f.seek(5)
        b = f.read(1)
        f.seek(5)
        f.write(bytes([b[0] ^ 1]))
    (serve.out / "z.bin").unlink()
    r = run("--json", "cli")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.returncode == 4, r.stderr
    assert {Path(x["path"]).name: x["result"] for x in lines if "result" in x} == {
        "x.bin": "ok", "y.bin": "corrupt", "z.bin": "missing"}
    assert lines[-1] == {"summary": {"ok": 1, "corrupt": 1, "missing": 1, "unchecked": 0}}
    r = run(str(serve.out / "x.bin"))  # a path: only that file (the others are no longer finished)
    assert r.returncode == 0 and "x.bin" in r.stdout and "y.bin" not in r.stdout
    r = run("no-such-collection")
    assert r.returncode == 2 and "no-such-collection" in r.stderr
    from segdl.engine.journal.writer import Journal

    j = Journal(serve.journal, readonly=True)
    try:
        states = {Path(f["path"]).name: (f["state"], f["error"] or "") for f in j.files(job["job"])}
    finally:
        j.close()
    assert states["x.bin"][0] == "done"
    assert states["y.bin"][0] == "hash_mismatch" and "corrupt" in states["y.bin"][1]
    assert not (serve.out / "y.bin").exists() and (serve.out / "y.bin.corrupt").exists()
    assert states["z.bin"][0] == "hash_mismatch" and "missing" in states["z.bin"][1]


def test_a_finished_file_downloads_through_the_service_and_nothing_else_does(serve, mirror):
    status, job = serve.call("POST", "/jobs", {"urls": [mirror.url("small.bin"), mirror.url("w1.bin")]})
    small, big = job["files"]
    serve.call("PATCH", f"/files/{big}", {"paused": True})
    until(lambda: serve.file(small)["state"] == "done", 30)
    token = {"Authorization": f"Bearer {serve.token()}"}
    status, headers, body = send(serve, "GET", f"/files/{small}/content", token)
    assert status == 200 and body == (mirror.root / "small.bin").read_bytes()
    assert headers["content-type"] == "application/octet-stream"
    assert headers["content-disposition"].startswith("attachment") and "small.bin" in headers["content-disposition"]
    assert headers["x-content-type-options"] == "nosniff"
    assert send(serve, "GET", f"/files/{small}/content")[0] == 401  # no token, no session
    assert send(serve, "GET", f"/files/{big}/content", token)[0] == 404  # not finished
    assert send(serve, "GET", "/files/999999/content", token)[0] == 404
    # A link put in place of the finished file leads nowhere outside the roots.
    target = Path(serve.file(small)["path"])
    outside = serve.tmp / "secret.txt"
    outside.write_text("not for the browser")
    target.unlink()
    target.symlink_to(outside)
    status, _, body = send(serve, "GET", f"/files/{small}/content", token)
    assert status == 404 and b"not for the browser" not in body


def test_allowed_names_and_the_public_url_pass_the_origin_check_and_only_https_gets_a_secure_cookie(tmp_path):
    """`--allow-host box.test` (the service reached by another name) and
    `--public-url https://segdl.test` (a proxy in front that terminates TLS
    and passes the Host on), with requests sent as such a browser or proxy
    sends them: a change from the page under either name passes the Origin
    check, one from any other origin does not; the cookie is Secure only
    over the public https URL, whatever X-Forwarded-Proto says."""
    s = Serve(tmp_path, "--allow-host", "box.test", "--public-url", "https://segdl.test").start()
    try:
        public = re.compile(r"(https://segdl\.test/login\?code=[A-Za-z0-9_-]+)")
        until(lambda: public.findall(s.log()), 10, why="the login URL names the public address")
        token = {"Authorization": f"Bearer {s.token()}", "Content-Type": "application/json"}
        box, other = f"box.test:{s.port}", f"box.test:{s.port + 1}"

        def patch(host: str, headers: dict, speed: int) -> int:
            body = json.dumps({"max_speed": speed}).encode()
            return send(s, "PATCH", "/limits", {"Host": host, **headers}, body)[0]

        assert patch(box, {**token, "Origin": f"http://{box}"}, 1000) == 200
        assert patch("segdl.test", {**token, "Origin": "https://segdl.test"}, 2000) == 200
        for origin in (f"http://evil.test:{s.port}", f"http://{other}", f"https://{box}", "http://segdl.test",
                       f"http://box.test.evil.test:{s.port}", "https://segdl.test:8443", "null"):
            assert patch(box, {**token, "Origin": origin}, 3) == 403, origin
        assert patch("evil.test", token, 4) == 400  # (a name not allowed: the Host rule, first)
        assert s.call("GET", "/service")[1]["limits"]["max_speed"] == 2000

        def login(host: str, extra: dict | None = None) -> str:
            until(lambda: len(public.findall(s.log())) > len(used), 10, why="a fresh code follows each login")
            code = public.findall(s.log())[-1].rsplit("=", 1)[1]
            used.append(code)
            status, headers, _ = send(s, "GET", f"/login?code={code}", {"Host": host, **(extra or {})})
            assert status == 200, status
            return headers["set-cookie"]

        used: list[str] = []
        cookie = login("segdl.test")
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        page = {"Cookie": cookie.split(";")[0], "Sec-Fetch-Site": "same-origin", "X-Segdl-Request": "1",
                "Content-Type": "application/json"}
        assert patch("segdl.test", {**page, "Origin": "https://segdl.test"}, 5000) == 200
        assert patch("segdl.test", {**page, "Origin": "http://segdl.test"}, 6) == 403
        status, headers, _ = send(s, "POST", "/logout", {"Host": "segdl.test", **page, "Origin": "https://segdl.test"})
        assert status == 200 and "Max-Age=0" in headers["set-cookie"] and "; Secure" in headers["set-cookie"]
        # Under the other name, plain http: no Secure, whatever a header claims.
        cookie = login(box, {"X-Forwarded-Proto": "https", "Forwarded": "proto=https"})
        assert "Secure" not in cookie and "HttpOnly" in cookie
        page["Cookie"] = cookie.split(";")[0]
        assert patch(box, {**page, "Origin": f"http://{box}"}, 7000) == 200
        assert patch(box, {**page, "Origin": f"http://{other}"}, 9) == 403
        assert s.call("GET", "/service")[1]["limits"]["max_speed"] == 7000
    finally:
        s.stop()


def test_a_public_url_with_a_path_or_beside_a_socket_is_refused(tmp_path):
    for args, said in ((["--public-url", "https://box.test/segdl"], "--public-url wants"),
                       (["--public-url", "ftp://box.test"], "--public-url wants"),
                       (["--public-url", "https://box.test", "--socket", str(tmp_path / "s")], "use --listen")):
        out = subprocess.run([*SEGDL, "serve", "-d", str(tmp_path / "d"), "--journal", str(tmp_path / "j.sqlite"),
                              *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and said in " ".join((out.stdout + out.stderr).split()), out.stderr
