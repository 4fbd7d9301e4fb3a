"""The engine as a service, in-process (engine/service.py), against real
local servers: the cases a long-running engine meets that one batch never
does (found in review): a file cancelled while it is probed, the same
target added again by a later job or by two jobs at once, a restart that
continues only the service's own jobs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from servers import FaultServer, PacedMirror
from segdl.engine.rules.ranges import MiB
from segdl.engine.values.request import Settings
from segdl.engine.doors.service import Service


def wait(pred, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    root.mkdir()
    for i in range(3):
        (root / f"f{i}.bin").write_bytes(os.urandom(2 * MiB))
    with PacedMirror(root, rate=4 * MiB) as m:
        m.root = root
        yield m


def service(tmp_path, **kw) -> Service:
    s = Service(Settings(dest=tmp_path / "out", journal=tmp_path / "j.sqlite", connections=2, **kw),
                [tmp_path / "out"])
    s.start()
    return s


def _jobs_in(journal: Path) -> int:
    """How many jobs ``journal`` holds, read without writing to it (0 before
    the journal exists or while its schema is being made)."""
    import sqlite3

    if not journal.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT count(*) FROM jobs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


def states(svc: Service, job: int) -> dict[str, str]:
    return {Path(f["path"]).name: f["state"] for f in svc.files(job=job)}


def test_a_file_cancelled_while_it_is_probed_leaves_the_engine_working(tmp_path, mirror):
    with FaultServer() as slow:
        slow.add("a.bin", os.urandom(MiB))
        svc = service(tmp_path)
        try:
            job = svc.add_job({"urls": [slow.url("slowfirst/a.bin?delay=2")]})
            fid = job["files"][0]
            time.sleep(0.4)  # its probe is waiting for the first byte
            assert svc.cancel(fid)["state"] == "removed"
            time.sleep(2.5)  # the probe comes back for a file that is gone
            other = svc.add_job({"urls": [mirror.url("f0.bin")]})
            wait(lambda: states(svc, other["job"]) == {"f0.bin": "done"}, what="the next job")
            assert svc.file(fid)["state"] == "removed"
            assert not (tmp_path / "out" / "a.bin").exists()
        finally:
            svc.stop()


def test_the_same_target_again_after_its_job_ended_is_skipped_not_failed(tmp_path, mirror):
    svc = service(tmp_path)
    try:
        first = svc.add_job({"urls": [mirror.url("f0.bin")]})
        wait(lambda: states(svc, first["job"]) == {"f0.bin": "done"}, what="the first job")
        again = svc.add_job({"urls": [mirror.url("f0.bin")]})
        assert again["files"] == first["files"]  # the same file, the same row
        wait(lambda: svc.jobs()[-1]["state"] == "finished", what="the second job")
        assert svc.file(first["files"][0])["state"] in ("done", "skipped")
        assert (tmp_path / "out" / "f0.bin").read_bytes() == (mirror.root / "f0.bin").read_bytes()
    finally:
        svc.stop()


def test_two_jobs_on_one_target_at_once_fail_the_second_and_leave_the_first_alone(tmp_path):
    root = tmp_path / "slow"
    root.mkdir()
    (root / "big.bin").write_bytes(os.urandom(8 * MiB))
    with PacedMirror(root, rate=1 * MiB) as slow:
        svc = service(tmp_path)
        try:
            first = svc.add_job({"urls": [slow.url("big.bin")]})
            fid = first["files"][0]
            wait(lambda: svc.file(fid)["state"] == "downloading", what="the first download")
            second = svc.add_job({"urls": [slow.url("big.bin")]})
            assert second["files"] == []  # not registered: the row is the first job's
            wait(lambda: any(j["id"] == second["job"] and j["state"] == "finished" for j in svc.jobs()),
                 what="the second job to end")
            assert svc.file(fid)["state"] == "downloading"  # untouched by the second job's failure
            wait(lambda: svc.file(fid)["state"] == "done", timeout=60, what="the first job")
            assert (tmp_path / "out" / "big.bin").read_bytes() == (root / "big.bin").read_bytes()
        finally:
            svc.stop()


def test_a_restart_continues_the_services_jobs_not_an_interrupted_get(tmp_path, mirror):
    from helpers import SEGDL
    import subprocess
    import signal

    # An interrupted `segdl get` in the same journal: for `segdl resume`, not the service.
    env = dict(os.environ, SEGDL_JOURNAL=str(tmp_path / "j.sqlite"))
    p = subprocess.Popen([*SEGDL, "get", mirror.url("f2.bin"), "-d", str(tmp_path / "elsewhere"), "-q",
                          "--max-speed", "100K"], env=env, start_new_session=True)
    # Killed once its job is in the journal: a fixed sleep lost the race under load (CI).
    wait(lambda: _jobs_in(tmp_path / "j.sqlite") > 0, what="the get's job in the journal")
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(10)
    svc = service(tmp_path)
    try:
        job = svc.add_job({"urls": [mirror.url("f0.bin"), mirror.url("f1.bin")]})
        ids = job["files"]
        svc.set_file(ids[1], paused=True)
        wait(lambda: svc.file(ids[0])["state"] == "done", what="the first file")
    finally:
        svc.stop()
    svc = service(tmp_path)
    try:
        mine = [j for j in svc.jobs() if j["id"] == job["job"]][0]
        assert mine["state"] == "running"
        svc.set_file(ids[1], paused=False)
        wait(lambda: svc.file(ids[1])["state"] == "done", what="the paused file after the restart")
        others = [j for j in svc.jobs() if j["id"] != job["job"]]
        assert others and all(j["state"] == "running" for j in others)  # the get's job: not taken over
        assert not (tmp_path / "elsewhere" / "f2.bin").exists()
    finally:
        svc.stop()
