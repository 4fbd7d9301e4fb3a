"""kill -9 of every segdl process at random instants, then the same command
again: the file is correct, re-download is bounded, the journal consistent."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from crashlib import crash_trial, kill_tree
from helpers import SEGDL, is_probe, journal_rows, json_lines, run_segdl
from servers import blake3_file
from segdl.engine.rules.ranges import MiB
from segdl.engine.values.request import Settings
from segdl.engine.values.messages import TransferOptions


def lag_bound(workers: int = 2) -> int:
    """What the journal may fail to claim after a kill -9 at default
    settings: per worker, ``max_unsynced`` bytes written but not yet
    fdatasync'ed (writes pause beyond that), plus one checkpoint's worth
    written while the last sync ran."""
    s = Settings()
    return workers * (s.max_unsynced + s.checkpoint_bytes + 8 * MiB)


def in_flight_bound(connections: int = 16) -> int:
    """Bytes a server counts as sent that no client can have received when
    the connections are cut: per connection, our receive buffer (SO_RCVBUF,
    doubled by Linux) plus the server's send buffer (tcp_wmem's maximum),
    for the connections running and those cut earlier by tail splits."""
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        wmem_max = int(f.read().split()[2])
    return 2 * connections * (2 * TransferOptions().recv_buffer + wmem_max)


def segments_tile(journal, size):
    con = sqlite3.connect(journal)
    rows = con.execute('SELECT start, "end", done FROM segments ORDER BY start').fetchall()
    con.close()
    pos = 0
    for start, end, done in rows:
        assert start == pos and 0 <= done <= end - start
        pos = end
    assert pos == size


@pytest.fixture(scope="module")
def crash_mirror(tmp_path_factory):
    """A 96 MiB file on its own nginx: small enough for 20 trials in CI,
    large enough for 12 segments."""
    from servers import Nginx, write_deterministic_file

    root = tmp_path_factory.mktemp("crash-root")
    src = write_deterministic_file(root / "c.bin", 96 * MiB, 42)
    with Nginx(root=root) as srv:
        yield srv, src, blake3_file(src)


@pytest.mark.parametrize("seed", range(20))
def test_kill9_at_random_instant_then_resume(crash_mirror, tmp_path, seed):
    """20 trials; the instants (0.05-1.2 s after launch) fall in start-up and
    the probe, the download, the verification and the rename."""
    srv, src, expected = crash_mirror
    rng = random.Random(seed)
    kill_after = rng.uniform(0.05, 1.2)
    t = crash_trial(srv, srv.url("c.bin"), expected, src.stat().st_size, tmp_path, kill_after, source=src)
    assert t.final_rc == 0, t.final_stderr
    assert t.ok
    [line] = [json for json in map(__import__("json").loads, t.final_stdout.splitlines())]
    assert line["status"] in ("done", "skipped")
    # What segdl's design controls: bytes correct on disk but unclaimed.
    assert t.lag <= lag_bound(), (t.kill_after, t.lag / MiB)
    # What the server saw, socket buffers included.
    assert t.redownloaded <= lag_bound() + in_flight_bound(), (t.kill_after, t.redownloaded / MiB)
    print(f"kill after {kill_after:.2f}s (running={t.killed}): journal claimed {t.claimed / MiB:.0f} MiB, "
          f"unclaimed on disk {t.lag / MiB:.1f} MiB, re-downloaded {t.redownloaded / MiB:.1f} MiB")


def test_kill9_while_server_is_slow_resumes_from_journal(make_nginx, nginx_root, tmp_path):
    """A throttled server makes the kill land mid-download for sure; the
    second run must continue from the journal, not from zero."""
    srv = make_nginx(limit_rate="2m")
    journal = tmp_path / "j.sqlite"
    out = tmp_path / "out"
    env = dict(os.environ, SEGDL_JOURNAL=str(journal))
    p = subprocess.Popen([*SEGDL, "get", srv.url("big.bin"), "-d", str(out), "-q", "-x", "16"],
                         env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    claimed = 0
    while time.monotonic() < deadline and claimed < 32 * MiB:  # until well under way
        time.sleep(0.3)
        claimed = (journal_rows(journal, "SELECT COALESCE(SUM(done), 0) FROM segments") or [(0,)])[0][0]
    assert p.poll() is None
    kill_tree(p)
    con = sqlite3.connect(journal)
    claimed = con.execute("SELECT SUM(done) FROM segments").fetchone()[0]
    claimed_ranges = [(a, a + d) for a, d in con.execute("SELECT start, done FROM segments WHERE done > 0")]
    con.close()
    part = out / "big.bin.segdl-part"
    assert part.exists() and 32 * MiB <= claimed < 300 * MiB
    # Every byte the journal claims is already the right byte on disk.
    src = (nginx_root / "big.bin").open("rb")
    con = sqlite3.connect(journal)
    with part.open("rb") as f:
        for start, done in con.execute("SELECT start, done FROM segments"):
            if done:
                f.seek(start); src.seek(start)
                assert f.read(done) == src.read(done)
    con.close()
    segments_tile(journal, (nginx_root / "big.bin").stat().st_size)
    srv.reset_access_log()
    r = run_segdl(["get", srv.url("big.bin"), "-d", out, "--json", "-x", "16"], journal, timeout=120)
    assert r.returncode == 0, r.stderr
    assert blake3_file(out / "big.bin") == blake3_file(nginx_root / "big.bin")
    # Resumed: no byte the journal claimed is asked for again (the probe's
    # first byte aside) ...
    entries = [e for e in srv.access_log_entries() if e["path"] == "/big.bin" and not is_probe(e["range"])]
    assert entries
    for e in entries:
        first, _, last = e["range"].removeprefix("bytes=").partition("-")
        lo, hi = int(first), int(last) + 1
        assert not any(lo < b and a < hi for a, b in claimed_ranges), (e["range"], claimed_ranges)
    # ... and what the server sent is what was missing, plus what split
    # cuts threw away (in flight on a connection stopped early).
    second = srv.body_bytes_sent("big.bin")
    assert second <= (300 * MiB - claimed) + 1 + 32 * MiB


def test_ctrl_c_stops_cleanly_and_resume_command_finishes(make_nginx, nginx_root, tmp_path):
    srv = make_nginx(limit_rate="2m")
    journal = tmp_path / "j.sqlite"
    out = tmp_path / "out"
    env = dict(os.environ, SEGDL_JOURNAL=str(journal))
    p = subprocess.Popen([*SEGDL, "get", srv.url("big.bin"), "-d", str(out), "-q"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(2.5)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert b"Traceback" not in err
    r = run_segdl(["resume", "--json"], journal, timeout=120)
    assert r.returncode == 0, r.stderr
    assert [l["status"] for l in json_lines(r)] == ["done"]
    assert blake3_file(out / "big.bin") == blake3_file(nginx_root / "big.bin")


def test_a_worker_killed_from_outside_ends_the_job_and_it_resumes(make_nginx, nginx_root, tmp_path):
    """The OOM killer takes one worker: the coordinator notices (no hang),
    exits non-zero, and the same command then finishes the file."""
    srv = make_nginx(limit_rate="2m")
    journal = tmp_path / "j.sqlite"
    out = tmp_path / "out"
    env = dict(os.environ, SEGDL_JOURNAL=str(journal))
    p = subprocess.Popen([*SEGDL, "get", srv.url("big.bin"), "-d", str(out), "-q", "-x", "8"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(2.5)
        children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
        # One file: one worker (a file's connections share one process).
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)
        _, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            kill_tree(p)
    assert p.returncode not in (0, None) and b"died" in err, err
    r = run_segdl(["get", srv.url("big.bin"), "-d", out, "--json", "-x", "16"], journal, timeout=180)
    assert r.returncode == 0, r.stderr
    assert blake3_file(out / "big.bin") == blake3_file(nginx_root / "big.bin")


def _set_state(journal, state):
    con = sqlite3.connect(journal)
    con.execute("UPDATE files SET state = ?", [state])
    con.commit()
    con.close()


def test_crash_between_rename_and_done_is_recognised(nginx, nginx_root, tmp_path):
    """The row says 'verified' (digest recorded) and the file is already
    renamed: the next run must call it done, not 'exists and differs'."""
    journal, out = tmp_path / "j.sqlite", tmp_path / "out"
    assert run_segdl(["get", nginx.url("odd.bin"), "-d", out, "--json"], journal).returncode == 0
    _set_state(journal, "verified")
    r = run_segdl(["get", nginx.url("odd.bin"), "-d", out, "--json"], journal)
    assert r.returncode == 0, r.stderr
    assert json_lines(r)[0]["status"] == "skipped"


def test_crash_between_verify_and_rename_finishes_without_download(nginx, nginx_root, tmp_path):
    """Digest recorded, the part file complete, the rename never happened:
    the next run verifies the part file again and renames it."""
    journal, out = tmp_path / "j.sqlite", tmp_path / "out"
    assert run_segdl(["get", nginx.url("odd.bin"), "-d", out, "--json"], journal).returncode == 0
    (out / "odd.bin").rename(out / "odd.bin.segdl-part")
    _set_state(journal, "verified")
    nginx.reset_access_log()
    r = run_segdl(["get", nginx.url("odd.bin"), "-d", out, "--json"], journal)
    assert r.returncode == 0, r.stderr
    assert json_lines(r)[0]["status"] == "done"
    assert blake3_file(out / "odd.bin") == blake3_file(nginx_root / "odd.bin")
    assert nginx.body_bytes_sent("odd.bin") <= 1  # only the probe
