"""The Library's doors, without a browser (issue 20), against a real `segdl
serve` and a real paced mirror: a job reviewed again by its id (its rows
named), one click for what of a job is not here (``POST /retry {"job"}``),
and deleting a file with its entry (``DELETE /files/{id}?erase=true``),
which never deletes outside the roots nor through a folder that links out.
(The page itself: test_web_library.py.)"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from servers import PacedMirror
from segdl.engine.rules.ranges import KiB, MiB

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")

from serving import Serve, read_events  # noqa: E402
from test_serve_api import until  # noqa: E402


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "small.bin").write_bytes(os.urandom(96 * KiB))
    (root / "mid.bin").write_bytes(os.urandom(1 * MiB))
    (root / "slow.bin").write_bytes(os.urandom(1 * MiB))
    with PacedMirror(root, rate=256 * KiB) as m:
        m.root = root
        yield m


@pytest.fixture
def serve(tmp_path):
    s = Serve(tmp_path / "serve", "-x", "1", "--max-connections", "8", "-j", "4")
    s.start()
    yield s
    s.stop()


def by_path(serve: Serve, job: int) -> dict[str, dict]:
    status, page = serve.call("GET", f"/files?job={job}")
    assert status == 200
    return {Path(f["path"]).name: f for f in page["files"]}


def job_state(serve: Serve, job: int) -> str:
    return serve.call("GET", f"/jobs/{job}")[1]["state"]


def test_a_job_again_names_its_rows_and_one_retry_fetches_what_of_it_is_not_here(serve, mirror):
    manifest = {"collection": "again", "files": [
        {"url": mirror.url("small.bin"), "path": "a.bin"}, {"url": mirror.url("small.bin"), "path": "b.bin"},
        {"url": mirror.url("mid.bin"), "path": "c.bin"}, {"url": mirror.url("late.bin"), "path": "d.bin"}]}
    status, job = serve.call("POST", "/jobs", {"manifest": manifest})
    assert status == 201, job
    jid = job["job"]
    c = by_path(serve, jid)["c.bin"]["id"]
    assert serve.call("DELETE", f"/files/{c}")[0] == 200  # cancelled: not here
    until(lambda: job_state(serve, jid) == "finished", 30, why="the job ends (d.bin: 404)")
    files = by_path(serve, jid)
    assert {n: f["state"] for n, f in files.items()} == {"a.bin": "done", "b.bin": "done", "c.bin": "removed",
                                                          "d.bin": "failed"}
    (serve.out / "b.bin").unlink()  # gone from disk since

    # The job reviewed again by its id: every entry names its row.
    status, r = serve.call("POST", "/review", {"job": jid})
    assert status == 200, r
    assert r["collection"] == "again" and r["dest"] == str(serve.out.resolve())
    assert {f["path"]: (f["state"], f["id"]) for f in r["files"]} == {
        "a.bin": ("here", files["a.bin"]["id"]), "b.bin": ("missing", files["b.bin"]["id"]),
        "c.bin": ("missing", c), "d.bin": ("unavailable", files["d.bin"]["id"])}  # (still a 404)
    for bad, status_, field in (({"job": 999999}, 404, None), ({"job": 0}, 400, "job"), ({"job": "1"}, 400, "job"),
                                ({"job": jid, "dest": "x"}, 400, "dest"),
                                ({"job": jid, "urls": ["http://x/"]}, 400, "urls")):
        got, answer = serve.call("POST", "/review", bad)
        assert got == status_, (bad, answer)
        assert answer.get("field") == field, (bad, answer)

    # Bad retries apply nothing.
    for bad, status_ in (({"job": 999999}, 404), ({"job": -1}, 400), ({"job": True}, 400),
                         ({"job": jid, "what": 1}, 400)):
        got, answer = serve.call("POST", "/retry", bad)
        assert got == status_, (bad, answer)
    assert serve.call("GET", "/jobs")[1]["jobs"][-1]["id"] == jid  # no job added

    # One retry of the job: the removed, the failed and the one gone from disk.
    (mirror.root / "late.bin").write_bytes(b"late" * 1000)
    mtime = (serve.out / "a.bin").stat().st_mtime_ns
    status, again = serve.call("POST", "/retry", {"job": jid})
    assert status == 200 and len(again["jobs"]) == 1, again
    assert sorted(again["jobs"][0]["files"]) == sorted(files[n]["id"] for n in ("b.bin", "c.bin", "d.bin"))
    serve.wait_files(again["jobs"][0]["job"], timeout=60)
    for n, src in (("a.bin", "small.bin"), ("b.bin", "small.bin"), ("c.bin", "mid.bin"), ("d.bin", "late.bin")):
        assert (serve.out / n).read_bytes() == (mirror.root / src).read_bytes(), n
    assert (serve.out / "a.bin").stat().st_mtime_ns == mtime  # here: left alone
    until(lambda: job_state(serve, again["jobs"][0]["job"]) == "finished", 30)
    assert serve.call("POST", "/retry", {"job": again["jobs"][0]["job"]}) == (200, {"jobs": []})  # all here now


def test_erase_deletes_a_file_and_its_entry_and_cancels_a_running_one_first(serve, mirror):
    status, job = serve.call("POST", "/jobs", {"urls": [mirror.url(n) for n in ("small.bin", "mid.bin", "slow.bin")]})
    files = by_path(serve, job["job"])
    small, mid, slow = files["small.bin"]["id"], files["mid.bin"]["id"], files["slow.bin"]["id"]
    assert serve.call("PATCH", f"/files/{slow}", {"paused": True})[0] == 200  # (the job stays running)
    assert serve.call("PATCH", f"/files/{mid}", {"max_speed": 32 * KiB})[0] == 200
    until(lambda: serve.file(small)["state"] == "done", 30)
    until(lambda: serve.file(mid)["received"] > 0, 30, why="mid.bin is under way")
    assert serve.file(mid)["state"] == "downloading"
    seq = serve.call("GET", "/service")[1]["seq"]

    for bad, field in (("?erase=yes", "erase"), ("?erase=true&keep_partial=true", "keep_partial"),
                       ("?erase=true&erase=true", "erase"), ("?wipe=true", "wipe")):
        status, answer = serve.call("DELETE", f"/files/{small}{bad}")
        assert status == 400 and answer["field"] == field, (bad, answer)
    assert serve.call("DELETE", "/files/999999?erase=true")[0] == 404
    assert (serve.out / "small.bin").exists()

    status, answer = serve.call("DELETE", f"/files/{small}?erase=true")
    assert status == 200 and answer == {"id": small, "deleted": ["small.bin"]}
    assert not (serve.out / "small.bin").exists()
    assert serve.call("GET", f"/files/{small}")[0] == 404  # its entry is gone too
    status, answer = serve.call("DELETE", f"/files/{mid}?erase=true")  # running: cancelled first
    assert status == 200 and answer["deleted"] == ["mid.bin.segdl-part"], answer
    assert not list(serve.out.glob("mid.bin*")) and serve.call("GET", f"/files/{mid}")[0] == 404
    events = read_events(serve, lambda evs: sum(1 for e in evs if e.get("deleted")) == 2, timeout=20, last_id=seq)
    assert [(e["file"], e["event"]) for e in events if e.get("deleted")] == [(small, "removed"), (mid, "removed")]
    assert any(e["file"] == mid and e["event"] == "removed" and not e.get("deleted") for e in events)  # the cancel
    time.sleep(1)  # (a cancelled file's transfers end: nothing writes it again)
    assert not list(serve.out.glob("mid.bin*"))

    # The job, still running, no longer asks for them: a restarted service
    # continues it without fetching them again.
    assert serve.call("GET", f"/jobs/{job['job']}")[1]["requested"] == 1
    serve.stop()
    serve.start()
    until(lambda: serve.file(slow)["paused"], 10, why="the job continues, its paused file still paused")
    time.sleep(2)
    assert set(by_path(serve, job["job"])) == {"slow.bin"}
    assert not list(serve.out.glob("mid.bin*")) and not (serve.out / "small.bin").exists()


def test_erase_never_deletes_outside_the_roots_nor_through_a_folder_that_links_out(tmp_path):
    """Rows the journal has (another `segdl get` wrote them): one outside
    the service's root, one whose folder is now a link out of it."""
    from segdl.engine.journal.writer import Journal

    serve = Serve(tmp_path / "serve", "-x", "1")
    out = serve.out
    out.mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "models").mkdir(parents=True)
    outside = elsewhere / "outside.bin"
    secret = elsewhere / "models" / "secret.bin"
    outside.write_bytes(b"outside")
    secret.write_bytes(b"secret")
    (out / "linked").symlink_to(elsewhere / "models")  # the folder a file was written in, swapped for a link
    (out / "mine.bin").write_bytes(b"mine")
    j = Journal(serve.journal)
    try:
        far = j.create_job(elsewhere, {"requests": []}, collection="far")
        near = j.create_job(out.resolve(), {"requests": []}, collection="near")
        rows = (("outside", far, outside), ("secret", near, out.resolve() / "linked" / "secret.bin"),
                ("mine", near, out.resolve() / "mine.bin"))
        ids = {name: j.put_file(job, f"http://127.0.0.1:9/{name}", path, state="done") for name, job, path in rows}
        j.finish_job(far)
        j.finish_job(near)
    finally:
        j.close()
    serve.start()
    try:
        for name in ("outside", "secret"):
            status, answer = serve.call("DELETE", f"/files/{ids[name]}?erase=true")
            assert status == 409 and "nothing deleted" in answer["error"], (name, answer)
            assert serve.file(ids[name])["state"] == "done"  # its entry stays
        assert outside.read_bytes() == b"outside" and secret.read_bytes() == b"secret"
        assert (out / "linked").is_symlink()
        status, answer = serve.call("DELETE", f"/files/{ids['mine']}?erase=true")
        assert status == 200 and answer["deleted"] == ["mine.bin"] and not (out / "mine.bin").exists()
    finally:
        serve.stop()
    con = sqlite3.connect(serve.journal)
    try:
        left = {r[0] for r in con.execute("SELECT id FROM files")}
    finally:
        con.close()
    assert left == {ids["outside"], ids["secret"]}
