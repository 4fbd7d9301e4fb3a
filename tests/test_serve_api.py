"""segdl serve's answers and events, for a GUI that trusts them (issue 21,
findings 7-17; issue 19's paging): a real `segdl serve` over HTTP on
127.0.0.1, real mirrors on 127.0.0.1, and what each answer and event must
say.  (The service, its security and its jobs: test_serve.py.)"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter

import pytest

from helpers import SEGDL
from servers import FaultServer, PacedMirror
from segdl.engine.rules.ranges import KiB, MiB

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")

from serving import Serve, read_events  # noqa: E402

SLOW = 256 * KiB  # bytes/s per connection: a file of 8 MiB runs for half a minute


def until(what, timeout: float = 30, step: float = 0.1, why: str = ""):
    """``what()`` once it is truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, why or getattr(what, "__doc__", None) or "timed out"
        time.sleep(step)


def request(serve: Serve, method: str, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, str, dict]:
    """(status, content type, JSON body) of one request, sent as given."""
    conn = http.client.HTTPConnection(serve.host, serve.port, timeout=15)
    try:
        h = {"Authorization": f"Bearer {serve.token()}", **(headers or {})}
        if body is not None:
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, resp.getheader("content-type") or "", json.loads(raw) if raw else {}
    finally:
        conn.close()


def state_of(serve: Serve, fid: int, *states: str):
    def check():
        f = serve.file(fid)
        return f if f["state"] in states else None
    check.__doc__ = f"file {fid} reaches {states}"
    return check


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-slow")
    for i in range(4):
        (root / f"s{i}.bin").write_bytes(os.urandom(8 * MiB))
    with PacedMirror(root, rate=SLOW) as m:
        yield m


@pytest.fixture
def faults():
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path, "-x", "1", "--max-connections", "4", "-j", "1")
    s.start()
    yield s
    s.stop()


def started(serve: Serve, files: list[int]) -> tuple[int, int]:
    """(the file that runs, the one that waits) of a two-file job at -j 1.
    Probes race: either may be the one that starts."""
    def check():
        states = [serve.file(f)["state"] for f in files]
        if "downloading" in states:
            i = states.index("downloading")
            return files[i], files[1 - i]
        return None
    check.__doc__ = f"one of {files} starts"
    return until(check)


# ------------------------------------------------------------ finding 7


def test_bad_input_is_a_400_naming_the_field_and_applies_nothing(serve, slow):
    status, body = serve.call("POST", "/jobs", {"urls": [slow.url("s0.bin"), slow.url("s1.bin")]})
    assert status == 201, body
    running, waiting = started(serve, body["files"])  # -j 1: the other waits
    status, ctype, answer = request(serve, "POST", "/jobs", b"[" * 20000 + b"]" * 20000)
    assert status == 400 and ctype.startswith("application/json") and "nests" in answer["error"], answer
    for path, field in (("/files?job=%C2%B2", "job"), ("/events?since=%C2%B2", "since"),
                        ("/files?job=123456789012345678901234", "job")):
        status, _, answer = request(serve, "GET", path)
        assert (status, answer.get("field")) == (400, field), (path, answer)
    status, _, answer = request(serve, "GET", "/files/" + "9" * 23)
    assert status == 404 and answer["status"] == 404
    for fid in (running, waiting):
        for change, field in (({"priority": 10**23}, "priority"), ({"priority": 7, "paused": "x"}, "paused"),
                              ({"max_speed": -1}, "max_speed"), ({"priority": 7, "colour": 1}, "colour")):
            status, answer = serve.call("PATCH", f"/files/{fid}", change)
            assert (status, answer.get("field")) == (400, field), (change, answer)
        f = serve.file(fid)  # nothing of a refused request was applied
        assert (f["priority"], f["paused"], f["max_speed"]) == (0, False, 0), f
    # A field named like a handler's own argument is unknown too, not a 500.
    for path, change in ((f"/files/{running}", {"fid": 1}), ("/limits", {"self": 1}), ("/retry", {"self": 1})):
        status, answer = serve.call("POST" if path == "/retry" else "PATCH", path, change)
        assert (status, answer.get("field")) == (400, next(iter(change))), (path, answer)
    for huge in ({"max_speed": 10**23}, {"max_speed": 1, "max_file_speed": True}):
        status, answer = serve.call("PATCH", "/limits", huge)
        assert status == 400 and answer["field"] in huge, answer
    assert serve.call("GET", "/service")[1]["limits"] == {"max_speed": 0, "max_file_speed": 0, "slow": False, "slow_before": None}
    # ... and the service goes on taking work.
    status, body = serve.call("POST", "/jobs", {"urls": [slow.url("s2.bin")], "priority": 2**31 - 1})
    assert status == 201, body
    assert serve.file(body["files"][0])["priority"] == 2**31 - 1


# ------------------------------------------------------------ findings 8 and 9


def test_a_collection_that_is_not_a_string_is_a_400_not_a_journal_to_move_aside(serve, slow):
    for bad in ({"a": 1}, ["x"], 7, True, ""):
        status, answer = serve.call("POST", "/jobs", {"urls": [slow.url("s0.bin")], "collection": bad})
        assert (status, answer.get("field")) == (400, "collection"), (bad, answer)
        assert "journal" not in answer["error"] and "aside" not in answer["error"]
    assert serve.call("GET", "/jobs")[1]["jobs"] == []  # nothing was added
    status, body = serve.call("POST", "/jobs", {"urls": [slow.url("s0.bin")], "collection": "fine"})
    assert status == 201 and [j["collection"] for j in serve.call("GET", "/jobs")[1]["jobs"]] == ["fine"]


def test_control_characters_in_a_collection_name_are_refused(serve, slow):
    for bad in ("a\x1b[31mred", "a\nb", "\x9b2J", "right\u202eto left", "nul\x00"):
        status, answer = serve.call("POST", "/jobs", {"urls": [slow.url("s0.bin")], "collection": bad})
        assert (status, answer.get("field")) == (400, "collection"), (bad, answer)
    status, answer = serve.call("POST", "/jobs", {"manifest": {"collection": "x\x07y",
                                                               "files": [{"url": slow.url("s0.bin")}]}})
    assert (status, answer.get("field")) == (400, "manifest"), answer
    assert serve.call("GET", "/jobs")[1]["jobs"] == []


# ------------------------------------------------------------ finding 10


def raw_head(serve: Serve, text: str) -> tuple[int, str, dict]:
    with socket.create_connection((serve.host, serve.port), timeout=10) as s:
        s.sendall(text.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    ctype = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")[1:]
             if line.lower().startswith(b"content-type:")]
    return int(head.split()[1]), (ctype or [""])[0], json.loads(body)


def test_every_refusal_is_json_with_the_status_the_readme_gives(serve, faults):
    status, ctype, answer = raw_head(serve, f"GET /jobs HTTP/1.1\r\nHost: evil.example:{serve.port}\r\n"
                                            f"Authorization: Bearer {serve.token()}\r\nConnection: close\r\n\r\n")
    assert (status, answer["status"]) == (400, 400) and ctype == "application/json"
    for method, path, expected in (("GET", "/nope", 404), ("DELETE", "/jobs", 405), ("GET", "/files/x", 404),
                                   ("GET", "/files?state=bogus", 400), ("GET", "/files?colour=red", 400)):
        status, ctype, answer = request(serve, method, path)
        assert (status, answer.get("status")) == (expected, expected), (method, path, answer)
        assert ctype == "application/json", (path, ctype)
    assert request(serve, "GET", "/files?state=bogus")[2]["field"] == "state"
    status, answer = serve.call("POST", "/jobs", {"urls": ["http://127.0.0.1:0/x"]})
    assert (status, answer.get("field")) == (400, "urls"), answer
    # A file that is not running cannot change: the engine refuses (409).
    faults.add("small.bin", os.urandom(100_000))
    status, body = serve.call("POST", "/jobs", {"urls": [faults.url("small.bin")]})
    fid = body["files"][0]
    until(state_of(serve, fid, "done"))
    for change in ({"paused": True}, {"priority": 1}):
        status, answer = serve.call("PATCH", f"/files/{fid}", change)
        assert (status, answer["status"]) == (409, 409) and "not running" in answer["error"], answer
    assert request(serve, "DELETE", f"/files/{fid}")[0] == 409


# ------------------------------------------------------------ finding 11


def job_events(serve: Serve, job: int, since: int = 0, timeout: float = 60) -> list[dict]:
    """The job's events, from ``since`` to its ``job_ended``."""
    events = read_events(serve, lambda evs: any(e["event"] == "job_ended" and e["job"] == job for e in evs),
                         last_id=since, timeout=timeout)
    return [e for e in events if e["job"] == job]


def test_job_ended_comes_after_every_files_end_with_the_counts_of_get_files(serve, faults):
    faults.add("ok.bin", os.urandom(200_000))
    urls = [faults.url("ok.bin")] + [faults.url(f"/status/m{i}.bin?code=404") for i in range(40)]
    status, body = serve.call("POST", "/jobs", {"urls": urls})
    job = body["job"]
    events = job_events(serve, job)
    assert events[-1]["event"] == "job_ended" and [e["event"] for e in events].count("job_ended") == 1
    ended = {e["file"] for e in events if e["event"] in ("finished", "failed")}
    assert ended == set(body["files"])  # every file's end came before the job's
    files = serve.call("GET", f"/files?job={job}")[1]["files"]
    assert events[-1]["counts"] == dict(Counter(f["state"] for f in files)) == {"done": 1, "failed": 40}
    assert events[-1]["files"] == 41
    status, view = serve.call("GET", f"/jobs/{job}")
    assert view["counts"] == events[-1]["counts"] and view["state"] == "finished"


def test_a_retry_is_a_job_that_starts_and_ends_like_any_other(serve, faults):
    faults.add("r.bin", os.urandom(300_000))
    status, body = serve.call("POST", "/jobs", {"urls": [faults.url("/status/r.bin?code=404&times=1")]})
    first, fid = body["job"], body["files"][0]
    ended = job_events(serve, first)[-1]
    assert ended["counts"] == {"failed": 1}, ended
    status, answer = serve.call("POST", "/retry", {})
    assert status == 200 and [j["files"] for j in answer["jobs"]] == [[fid]], answer
    again = answer["jobs"][0]["job"]
    events = job_events(serve, again, since=ended["id"])
    kinds = [e["event"] for e in events]
    assert kinds[0] == "job_added" and kinds[-1] == "job_ended", kinds
    joined = next(e for e in events if e["event"] == "added")
    assert (joined["file"], joined["previous_job"]) == (fid, first)
    queued = next(e for e in events if e["event"] == "state")
    assert (queued["state"], queued["previous"]) == ("queued", "failed")  # at once, before it runs
    assert kinds.index("finished") < len(kinds) - 1
    assert events[-1]["counts"] == {"done": 1}
    f = serve.file(fid)
    assert (f["job"], f["state"], f["error"]) == (again, "done", None)


# ------------------------------------------------------------ finding 12


def test_every_change_a_client_can_see_has_its_event(serve, slow):
    status, body = serve.call("POST", "/jobs", {"urls": [slow.url("s0.bin"), slow.url("s1.bin")]})
    running, waiting = started(serve, body["files"])
    assert serve.call("PATCH", f"/files/{running}", {"priority": 3, "max_speed": 100_000})[0] == 200
    assert serve.call("PATCH", f"/files/{waiting}", {"paused": True})[0] == 200
    assert serve.call("PATCH", "/limits", {"max_file_speed": 500_000})[0] == 200

    def seen(evs):
        changed = {(e["file"], e["priority"], e["max_speed"], e["paused"]) for e in evs if e["event"] == "changed"}
        limits = [e for e in evs if e["event"] == "limits"]
        return ((running, 3, 100_000, False) in changed and (waiting, 0, 0, True) in changed
                and limits and limits[-1]["max_file_speed"] == 500_000)

    events = read_events(serve, seen, last_id=0, timeout=20)
    limits = [e for e in events if e["event"] == "limits"][-1]
    assert (limits["max_speed"], limits["job"], limits["file"], limits["slow"]) == (0, None, None, False)
    assert serve.call("GET", "/service")[1]["limits"] == {"max_speed": 0, "max_file_speed": 500_000, "slow": False,
                                                          "slow_before": None}
    for fid in (running, waiting):
        last = [e for e in events if e["event"] == "changed" and e["file"] == fid][-1]
        now = serve.file(fid)
        assert {k: now[k] for k in ("paused", "priority", "max_speed")} == \
               {k: last[k] for k in ("paused", "priority", "max_speed")}


# ------------------------------------------------------------ finding 13


def fold(events: list[dict], upto: int, files: dict[int, dict]) -> dict[int, dict]:
    """What the events up to ``upto`` say of each file (absolute values)."""
    for e in events:
        if e["id"] > upto or e["file"] is None:
            continue
        f = files.setdefault(e["file"], {})
        if e["event"] in ("added", "state", "finished", "failed", "removed"):
            f.update(state=e["state"], job=e["job"])
        if e["event"] in ("added", "changed"):
            f.update(paused=e["paused"], priority=e["priority"], max_speed=e["max_speed"])
    return files


def test_a_list_holds_exactly_the_events_up_to_its_seq(serve, faults):
    """A client reads a list, then subscribes from its seq: nothing missed,
    nothing counted twice."""
    for i in range(6):
        faults.add(f"a{i}.bin", os.urandom(2 * MiB))
    urls = [faults.url(f"/slowfirst/a{i}.bin?delay=0.3") for i in range(6)] + \
           [faults.url(f"/status/x{i}.bin?code=404") for i in range(4)]
    snapshots = []
    status, body = serve.call("POST", "/jobs", {"urls": urls})
    job = body["job"]
    for i in range(40):
        status, page = serve.call("GET", f"/files?job={job}")
        snapshots.append(page)
        if i == 3:
            serve.call("PATCH", f"/files/{body['files'][-1]}", {"priority": 9})
        if page["files"] and all(f["state"] in ("done", "failed") for f in page["files"]):
            break
        time.sleep(0.1)
    events = job_events(serve, job)
    assert len({p["seq"] for p in snapshots}) > 3  # lists taken while things changed
    for page in snapshots:
        told = fold(events, page["seq"], {})
        listed = {f["id"]: {k: f[k] for k in ("state", "job", "paused", "priority", "max_speed")}
                  for f in page["files"]}
        assert listed == {fid: f for fid, f in told.items() if f.get("job") == job}, page["seq"]


def test_files_come_in_pages_filtered_by_job_and_state_and_jobs_count_them(serve, faults):
    for i in range(2):
        faults.add(f"ok{i}.bin", os.urandom(50_000))
    a = serve.call("POST", "/jobs", {"urls": [faults.url(f"/status/f{i}.bin?code=404") for i in range(5)]
                                     + [faults.url(f"ok{i}.bin") for i in range(2)]})[1]
    b = serve.call("POST", "/jobs", {"manifest": {"collection": "b", "files": [
        {"url": faults.url("ok0.bin"), "path": f"b/{i}.bin"} for i in range(3)]}})[1]
    job_events(serve, a["job"])
    job_events(serve, b["job"])
    seen, after, pages = [], 0, 0
    while True:
        status, page = serve.call("GET", f"/files?limit=3&after={after}")
        assert status == 200 and len(page["files"]) <= 3 and isinstance(page["seq"], int)
        seen += [f["id"] for f in page["files"]]
        pages += 1
        assert pages < 10
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == sorted(set(seen)) == sorted(a["files"] + b["files"]) and pages == 4
    failed = serve.call("GET", f"/files?job={a['job']}&state=failed")[1]["files"]
    assert sorted(f["id"] for f in failed) == a["files"][:5]
    mixed = serve.call("GET", f"/files?state=done,skipped&job={b['job']}")[1]["files"]
    assert sorted(f["id"] for f in mixed) == b["files"]
    jobs = {j["id"]: j for j in serve.call("GET", "/jobs")[1]["jobs"]}
    assert jobs[a["job"]]["counts"] == {"failed": 5, "done": 2} and jobs[a["job"]]["files"] == 7
    assert serve.call("GET", f"/jobs/{b['job']}")[1]["counts"] == {"done": 3}
    for bad in ("limit=0", "limit=10001", "after=-1", "job=0"):
        assert request(serve, "GET", f"/files?{bad}")[0] == 400, bad
    assert request(serve, "GET", "/jobs/999999")[0] == 404


# ------------------------------------------------------------ finding 14


def test_a_restart_keeps_paused_files_limits_and_each_files_speed(tmp_path, slow):
    s = Serve(tmp_path, "-x", "2", "--max-connections", "8", "-j", "2").start()
    try:
        status, body = s.call("POST", "/jobs", {"urls": [slow.url("s2.bin"), slow.url("s3.bin")]})
        paused, capped = body["files"]
        for fid in (paused, capped):
            until(state_of(s, fid, "downloading"))
        assert s.call("PATCH", f"/files/{paused}", {"paused": True})[0] == 200
        assert s.call("PATCH", f"/files/{capped}", {"max_speed": 64 * KiB, "priority": 5})[0] == 200
        limits = {"max_speed": 50 * MiB, "max_file_speed": 40 * MiB}
        assert s.call("PATCH", "/limits", limits)[0] == 200
        # Slow mode, kept by the service (every client sees it), and across a restart.
        status, slow = s.call("PATCH", "/limits", {"slow": True, "max_speed": 8 * MiB})
        assert status == 200 and slow == {**limits, "max_speed": 8 * MiB, "slow": True, "slow_before": 50 * MiB}
        s.stop()
        assert s.proc.returncode == 0, s.log()
        s.start()
        assert s.call("GET", "/service")[1]["limits"] == slow
        status, back = s.call("PATCH", "/limits", {"slow": False})
        assert status == 200 and back == {**limits, "slow": False, "slow_before": None}
        assert s.call("GET", "/service")[1]["limits"] == back
        # A limit set meanwhile ends slow mode, and is the one kept.
        assert s.call("PATCH", "/limits", {"slow": True, "max_speed": 8 * MiB})[0] == 200
        status, now = s.call("PATCH", "/limits", {"max_speed": 5 * MiB})
        assert status == 200 and (now["max_speed"], now["slow"], now["slow_before"]) == (5 * MiB, False, None)
        assert s.call("PATCH", "/limits", {"slow": False})[1]["max_speed"] == 5 * MiB
        status, answer = s.call("PATCH", "/limits", {"slow": True})
        assert status == 400 and answer["field"] == "max_speed", answer
        # Its row says downloading from before: wait for the new run's figures.
        r0 = s.file(capped)["received"]
        until(lambda: s.file(capped)["received"] != r0, why="the limited file runs again")
        time.sleep(1.0)  # its connections settle
        a0, b0 = s.file(paused), s.file(capped)
        time.sleep(4.0)
        a1, b1 = s.file(paused), s.file(capped)
        assert (a1["state"], a1["paused"], a1["received"]) == ("paused", True, a0["received"]), a1
        assert (b1["max_speed"], b1["priority"]) == (64 * KiB, 5)
        rate = (b1["received"] - b0["received"]) / 4.0
        assert rate <= 1.5 * 64 * KiB, rate / KiB  # unlimited: 2 x 256 KiB/s
    finally:
        s.stop()


# ------------------------------------------------------------ finding 15


def test_one_vocabulary_in_get_patch_answers_and_events(serve, slow):
    status, body = serve.call("POST", "/jobs", {"urls": [slow.url("s0.bin"), slow.url("s1.bin")]})
    running, waiting = started(serve, body["files"])
    moving = {"bytes_done", "received", "speed", "updated", "mirrors"}
    for change in ({"max_speed": 0}, {"max_speed": 200_000}, {"priority": -3}):
        status, answer = serve.call("PATCH", f"/files/{running}", change)
        now = serve.file(running)
        assert status == 200 and set(answer) == set(now), answer
        assert {k: v for k, v in answer.items() if k not in moving} == {k: v for k, v in now.items() if k not in moving}
    assert (now["max_speed"], now["priority"]) == (200_000, -3)
    page = serve.call("GET", "/files")[1]
    assert {f["id"]: f["max_speed"] for f in page["files"]} == {running: 200_000, waiting: 0}
    events = read_events(serve, lambda evs: any(e["event"] == "progress" and e["file"] == running for e in evs),
                         last_id=0)
    view = set(now) | {"seq", "time", "kind", "job", "file", "previous", "previous_job", "deleted"}
    for e in (e for e in events if e["file"] is not None):
        extra = set(e) - {"id", "event"} - view
        assert not extra, (e["event"], extra)
    progress = next(e for e in events if e["event"] == "progress")
    assert {"received", "bytes_done", "size", "speed"} <= set(progress)
    status, gone = serve.call("DELETE", f"/files/{running}")
    assert status == 200 and gone["state"] == "removed" and gone["speed"] == 0
    assert set(gone) - {"kept_partial"} == set(now)
    assert serve.file(running)["speed"] == 0


# ------------------------------------------------------------ finding 16


def test_a_second_service_on_the_same_journal_is_refused_and_the_first_goes_on(serve):
    from segdl.cli.serve import find_service

    second = subprocess.Popen([*SEGDL, "serve", "-d", str(serve.out), "--journal", str(serve.journal)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = second.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
        pytest.fail("a second segdl serve runs on the same journal")
    assert second.returncode == 7, err
    said = " ".join(err.split())
    assert "another segdl service" in said and f"pid {serve.proc.pid}" in said, said
    remote = find_service(serve.journal)
    assert remote is not None and remote.url == serve.info["url"]
    assert serve.call("GET", "/service")[1]["pid"] == serve.proc.pid


# ------------------------------------------------------------ finding 17


def test_allow_origin_is_refused_with_a_clear_message(tmp_path):
    proc = subprocess.Popen([*SEGDL, "serve", "-d", str(tmp_path / "out"), "--journal", str(tmp_path / "j.sqlite"),
                             "--allow-origin", "http://localhost:3000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        pytest.fail("segdl serve started with --allow-origin")
    said = " ".join(err.split())
    assert proc.returncode == 2 and "--allow-origin is gone" in said, said
    assert not (tmp_path / "serve.json").exists()


# ------------------------------------------------------------ any input


KEYS = ["urls", "manifest", "aria2", "ref", "dest", "collection", "connections", "priority", "select", "paused",
        "max_speed", "max_file_speed", "files", "url", "path", "size", "blake3", "sha256", "mirrors", "headers"]
STATES = ["queued", "downloading", "paused", "verifying", "verified", "done", "skipped", "failed", "hash_mismatch",
          "removed"]
QUERY_KEYS = ["state", "job", "after", "limit", "since", "kinds", "keep_partial"]


def operations(good_url: str):
    """Requests to every endpoint: random JSON, and bodies shaped like the
    real ones with random values in them."""
    from urllib.parse import urlencode

    from hypothesis import strategies as st

    urls = st.sampled_from([good_url, "http://127.0.0.1:9/x.bin", "http://127.0.0.1:0/x", "ftp://127.0.0.1/y",
                            "http://[::1]:9/z.bin", "http://127.0.0.1:9/a/../b"])
    scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
               | st.text(max_size=12) | urls)
    values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                          | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), c, max_size=4),
                          max_leaves=10)
    some = lambda keys: st.dictionaries(st.sampled_from(keys or [""]) | st.text(max_size=6), values,  # noqa: E731
                                        max_size=4)
    entry = some(["url", "path", "size", "blake3", "sha256", "mirrors", "headers"]) | st.fixed_dictionaries(
        {"url": urls}, optional={"path": values | st.sampled_from(["a/b.bin", "../x", "/etc/x"])})
    job = st.fixed_dictionaries({}, optional={
        "urls": st.lists(urls | values, max_size=3) | values,
        "manifest": st.fixed_dictionaries({"files": st.lists(entry, max_size=3)}, optional={"collection": values})
                    | values,
        "aria2": st.text(max_size=60) | urls.map(lambda u: f"{u}\n  out=x{u[-3:]}\n") | values,
        "dest": values | st.sampled_from(["a", "../x", "/etc", "a/b"]), "collection": values,
        "connections": values, "priority": values, "select": values})
    raw = st.binary(max_size=40) | st.sampled_from([b"[" * 5000, b'{"a": NaN}', b'{"a": 1e999}', b'"\\ud800"',
                                                     b'{"priority": 1' + b"0" * 5000 + b"}"])
    body = lambda shaped: (shaped | values).map(lambda v: json.dumps(v).encode()) | raw  # noqa: E731
    ids = st.integers(0, 40) | st.integers(0, 2**70)
    query = st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(max_size=5),
                            st.text(max_size=8) | st.integers(-5, 2**70).map(str)
                            | st.sampled_from(["failed", "done,queued", "true", "state,limits"]),
                            max_size=3).map(urlencode)
    # ... and requests that are mostly right, so the paths past the checks run too.
    small = st.integers(-3, 40)
    fine = st.sampled_from([good_url, "http://127.0.0.1:9/x.bin", "http://[::1]:9/z.bin"])
    likely_job = st.fixed_dictionaries({"urls": st.lists(fine, min_size=1, max_size=3, unique=True)}, optional={
        "dest": st.sampled_from(["a", "a/b", "../x"]), "priority": small, "connections": st.integers(1, 4),
        "collection": st.text(min_size=1, max_size=8), "select": st.lists(st.integers(0, 2) | fine, max_size=2)})
    likely_change = st.fixed_dictionaries({}, optional={"paused": st.booleans(), "priority": small,
                                                        "max_speed": st.integers(0, 10**7)})
    likely_query = st.fixed_dictionaries({}, optional={
        "state": st.lists(st.sampled_from(STATES), min_size=1, max_size=2).map(",".join),
        "job": small.map(str), "after": small.map(str), "limit": small.map(str),
        "keep_partial": st.sampled_from(["true", "false"]), "since": small.map(str),
        "kinds": st.sampled_from(["state", "progress,changed"])}).map(urlencode)
    dumped = lambda shaped: shaped.map(lambda v: json.dumps(v).encode())  # noqa: E731
    return st.one_of(
        st.tuples(st.just("POST"), st.just("/jobs"), body(job)),
        st.tuples(st.just("POST"), st.just("/jobs"), dumped(likely_job)),
        st.tuples(st.just("PATCH"), ids.map("/files/{}".format), body(some(["paused", "priority", "max_speed"]))),
        st.tuples(st.just("PATCH"), st.integers(1, 30).map("/files/{}".format), dumped(likely_change)),
        st.tuples(st.just("DELETE"), st.tuples(ids, query | likely_query).map(lambda t: f"/files/{t[0]}?{t[1]}"),
                  st.none()),
        st.tuples(st.just("PATCH"), st.just("/limits"),
                  body(some(["max_speed", "max_file_speed"]))
                  | dumped(st.fixed_dictionaries({"max_speed": st.integers(0, 10**9)}))),
        st.tuples(st.just("POST"), st.just("/retry"), body(some([])) | st.sampled_from([b"", b"{}"])),
        st.tuples(st.just("GET"), st.tuples(st.sampled_from(["/files", "/jobs", "/service", "/events"]),
                                            query | likely_query).map("{0[0]}?{0[1]}".format), st.none()),
        st.tuples(st.just("GET"), st.tuples(st.sampled_from(["/files/{}", "/jobs/{}"]), ids)
                  .map(lambda t: t[0].format(t[1])), st.none()),
    )


def test_any_request_to_any_endpoint_is_answered_2xx_or_4xx_and_the_service_stays_up(tmp_path, faults, monkeypatch):
    from hypothesis import HealthCheck, given, settings

    # A random URL never leaves this machine: whatever is not loopback goes
    # to a proxy nobody listens on.
    for var in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
        monkeypatch.setenv(var.upper(), "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost,::1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    faults.add("p.bin", os.urandom(100_000))
    s = Serve(tmp_path, "-x", "1", "-j", "2").start()
    answered = Counter()
    try:
        @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(op=operations(faults.url("p.bin")))
        def check(op):
            method, path, body = op
            conn = http.client.HTTPConnection(s.host, s.port, timeout=15)
            try:
                headers = {"Authorization": f"Bearer {s.token()}", "Content-Type": "application/json"}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                answered[resp.status // 100] += 1
                assert 200 <= resp.status < 500, (op, resp.status, resp.read()[:300])
                if resp.getheader("content-type", "").startswith("text/event-stream"):
                    return  # a stream of events: it answered
                assert resp.getheader("content-type") == "application/json", op
                answer = json.loads(resp.read())
                assert resp.status < 300 or answer["status"] == resp.status, (op, answer)
            finally:
                conn.close()

        check()
        assert s.proc.poll() is None, s.log()
        assert "Traceback" not in s.log(), s.log()[-3000:]
        assert answered[2] and answered[4], answered  # both kinds were tried
        # ... and it still does its work (at full speed: the requests may
        # have left a limit of a few bytes a second).
        assert s.call("PATCH", "/limits", {"max_speed": 0, "max_file_speed": 0})[0] == 200
        status, body = s.call("POST", "/jobs", {"urls": [faults.url("p.bin")], "dest": "after"})
        assert status == 201, body
        until(state_of(s, body["files"][0], "done", "skipped"), timeout=60)
    finally:
        s.stop()
