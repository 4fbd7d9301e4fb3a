"""segdl get against real servers on 127.0.0.1: nginx, Python's http.server
(ignores Range), and the project's fault server (length-less stream)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import cut_short, is_probe, json_lines, run_segdl
from servers import blake3_file, free_port, wait_for_port
from segdl.engine.values import errors


@pytest.fixture
def journal(tmp_path):
    return tmp_path / "journal.sqlite"


@pytest.mark.parametrize("name", ["zero.bin", "one.bin", "odd.bin"])
def test_small_and_odd_sizes(nginx, nginx_root, tmp_path, journal, name):
    out = tmp_path / "out"
    p = run_segdl(["get", nginx.url(name), "-d", out, "--json", "-x", "4"], journal)
    assert p.returncode == 0, p.stderr
    [line] = json_lines(p)
    assert line["status"] == "done" and line["error"] is None
    assert line["size"] == (nginx_root / name).stat().st_size
    assert line["blake3"] == blake3_file(nginx_root / name) == blake3_file(out / name)
    assert set(line) >= {"url", "path", "status", "size", "blake3", "error", "seconds"}
    assert not list(out.glob("*.segdl-part"))


def test_big_file_many_segments_and_byte_accounting(nginx, nginx_root, tmp_path, journal):
    nginx.reset_access_log()
    out = tmp_path / "out"
    p = run_segdl(["get", nginx.url("big.bin"), "-d", out, "--json", "-x", "16", "--workers", "2"], journal)
    assert p.returncode == 0, p.stderr
    [line] = json_lines(p)
    assert line["status"] == "done"
    assert blake3_file(out / "big.bin") == blake3_file(nginx_root / "big.bin") == line["blake3"]
    entries = [e for e in nginx.access_log_entries() if e["path"] == "/big.bin"]
    ranged = [e for e in entries if e["status"] == 206]
    assert len(ranged) >= 16  # probe + 8 MiB-or-larger segments + tail splits
    # Bytes fetched twice: the 1-byte probe, plus what was in flight on a
    # connection cut by a tail split (socket buffers, up to ~6 MiB each).
    # Splits land on request boundaries where they can, so this stays small:
    # under 2% on a quiet machine, under 10% on a loaded one.
    sent = sum(e["body_bytes_sent"] for e in entries)
    assert sent - (300 << 20) < 30 << 20


def _by_connection(entries: list[dict]) -> str:
    """An access log's requests by TCP connection, in order (range, bytes
    sent, completed, the request's number on its connection, when it
    ended): what a failed connection count needs to be read."""
    import pprint

    return pprint.pformat({c: [(e["range"], e["body_bytes_sent"], e["completion"], e["connection_requests"], e["msec"])
                               for e in entries if e["connection"] == c]
                           for c in sorted({e["connection"] for e in entries})}, width=160)


def test_a_large_file_of_a_list_is_probed_on_a_connection_its_ranges_take(make_nginx, nginx_root, tmp_path, journal):
    """A file the manifest says is large (100 MiB or more) is probed by the
    worker that fetches it: -x 4 is 4 connections in all, the probe's among
    them.  A small file of the same list is still carried whole by the
    probe feed (its "added" event says verified: no segments).  (Each
    connection is paced, so the file lasts long enough to need all four:
    unthrottled, 300 MiB took 1.5 s, and under load it could end before
    the fourth connection had its first request.)"""
    import json
    import sqlite3

    nginx = make_nginx(limit_rate="25m")
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"files": [{"url": nginx.url("big.bin"), "path": "big.bin", "size": 300 << 20},
                                       {"url": nginx.url("one.bin"), "path": "one.bin"}]}))
    out = tmp_path / "out"
    p = run_segdl(["get", "-i", m, "-d", out, "-x", "4", "--json"], journal)
    assert p.returncode == 0, p.stderr
    assert blake3_file(out / "big.bin") == blake3_file(nginx_root / "big.bin")
    entries = [e for e in nginx.access_log_entries() if e["path"] == "/big.bin"]
    [probe] = [e for e in entries if is_probe(e["range"])]
    assert 4 <= len({e["connection"] for e in entries}) <= 4 + cut_short(entries), _by_connection(entries)
    assert probe["connection"] in {e["connection"] for e in entries if e is not probe}
    con = sqlite3.connect(journal)
    try:
        states = [json.loads(d)["state"] for (d,) in con.execute(
            "SELECT e.data FROM events e JOIN files f ON f.id = e.file_id WHERE f.path LIKE '%one.bin' "
            "AND e.kind IN ('added', 'state', 'finished') ORDER BY e.seq")]
    finally:
        con.close()
    assert states == ["verified", "done"]


def test_files_start_in_their_order_when_probes_answer_out_of_order(fault_server, tmp_path, journal):
    """At -j 1 the second file's probe answers first (the first's server
    waits 0.4 s before its answer): it still waits for the first, which
    starts, and ends, first."""
    import os

    for name in ("first.bin", "second.bin"):
        fault_server.add(name, os.urandom(3 * 1024 * 1024))
    urls = [fault_server.url("/slowfirst/first.bin?delay=0.4"), fault_server.url("second.bin")]
    p = run_segdl(["get", *urls, "-d", tmp_path / "out", "-j", "1", "--json"], journal)
    assert p.returncode == 0, p.stderr
    assert [Path(line["path"]).name for line in json_lines(p)] == ["first.bin", "second.bin"]


def test_several_urls_in_one_job_and_rerun_skips(nginx, nginx_root, tmp_path, journal):
    out = tmp_path / "out"
    urls = [nginx.url(n) for n in ("zero.bin", "one.bin", "odd.bin")]
    p = run_segdl(["get", *urls, "-d", out, "--json"], journal)
    assert p.returncode == 0, p.stderr
    assert [l["status"] for l in json_lines(p)] == ["done"] * 3
    nginx.reset_access_log()
    p = run_segdl(["get", *urls, "-d", out, "--json"], journal)
    assert p.returncode == 0
    assert [l["status"] for l in json_lines(p)] == ["skipped"] * 3
    assert nginx.body_bytes_sent("odd.bin") <= 1  # only the probe: is it unchanged?


def test_file_with_known_digest_is_skipped_without_network(nginx, nginx_root, tmp_path, journal):
    out = tmp_path / "out"
    out.mkdir()
    (out / "copy.bin").write_bytes((nginx_root / "odd.bin").read_bytes())
    nginx.reset_access_log()
    p = run_segdl(["get", nginx.url("odd.bin"), "-o", "copy.bin", "-d", out, "--json",
                   "--blake3", blake3_file(nginx_root / "odd.bin")], journal)
    assert p.returncode == 0, p.stderr
    assert json_lines(p)[0]["status"] == "skipped"
    assert nginx.access_log_entries() == []


def test_404_fails_only_that_file_with_exit_3(nginx, tmp_path, journal):
    out = tmp_path / "out"
    p = run_segdl(["get", nginx.url("missing.bin"), nginx.url("one.bin"), "-d", out, "--json"], journal)
    assert p.returncode == errors.EXIT_DOWNLOAD_FAILED == 3
    missing, one = json_lines(p)
    assert missing["status"] == "failed" and "404" in missing["error"]
    assert one["status"] == "done"
    assert not (out / "missing.bin").exists() and (out / "one.bin").exists()


@pytest.mark.parametrize("name", ["odd.bin", "one.bin"])  # one.bin: its probe carries it whole
def test_hash_mismatch_exit_4_keeps_data_out_of_final_name(nginx, tmp_path, journal, name):
    import sqlite3

    out = tmp_path / "out"
    p = run_segdl(["get", nginx.url(name), "-d", out, "--json", "--blake3", "00" * 32], journal)
    assert p.returncode == errors.EXIT_HASH_MISMATCH == 4
    [line] = json_lines(p)
    assert line["status"] == "hash_mismatch" and "expected blake3" in line["error"]
    assert not (out / name).exists() and (out / f"{name}.segdl-part").exists()
    con = sqlite3.connect(journal)
    try:
        assert con.execute("SELECT state FROM files").fetchall() == [("hash_mismatch",)]
    finally:
        con.close()


def test_correct_hashes_pass(nginx, nginx_root, tmp_path, journal):
    import hashlib
    out = tmp_path / "out"
    sha = hashlib.sha256((nginx_root / "odd.bin").read_bytes()).hexdigest()
    p = run_segdl(["get", nginx.url("odd.bin"), "-d", out, "--json", "--blake3",
                   blake3_file(nginx_root / "odd.bin"), "--sha256", sha.upper()], journal)
    assert p.returncode == 0, p.stderr
    assert json_lines(p)[0]["sha256"] == sha


def test_existing_different_file_is_not_overwritten_without_force(nginx, nginx_root, tmp_path, journal):
    out = tmp_path / "out"
    out.mkdir()
    (out / "odd.bin").write_bytes(b"mine")
    p = run_segdl(["get", nginx.url("odd.bin"), "-d", out, "--json"], journal)
    assert p.returncode == errors.EXIT_EXISTS
    assert (out / "odd.bin").read_bytes() == b"mine"
    p = run_segdl(["get", nginx.url("odd.bin"), "-d", out, "--json", "--force"], journal)
    assert p.returncode == 0
    assert blake3_file(out / "odd.bin") == blake3_file(nginx_root / "odd.bin")


def test_bad_url_is_a_clear_error(tmp_path, journal):
    p = run_segdl(["get", "notaurl://x/y", "-d", tmp_path, "--json"], journal)
    [line] = json_lines(p)
    assert line["status"] == "failed" and line["error"]
    assert p.returncode in (errors.EXIT_USAGE, errors.EXIT_DOWNLOAD_FAILED)
    assert "Traceback" not in p.stderr


@pytest.fixture
def plain_http_server(nginx_root):
    """Python's http.server: no Range support at all."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "-d", str(nginx_root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_port(port, 10)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(5)


def test_server_without_range_support_gives_one_stream(plain_http_server, nginx_root, tmp_path, journal):
    out = tmp_path / "out"
    p = run_segdl(["get", f"{plain_http_server}/odd.bin", "-d", out, "--json", "-x", "8"], journal)
    assert p.returncode == 0, p.stderr
    assert blake3_file(out / "odd.bin") == blake3_file(nginx_root / "odd.bin")


def test_length_less_stream(fault_server, tmp_path, journal):
    data = bytes(range(256)) * 4096 + b"tail"
    fault_server.add("blob.bin", data)
    out = tmp_path / "out"
    for fault in ("nolength", "chunked"):
        p = run_segdl(["get", fault_server.url(f"/{fault}/blob.bin"), "-d", out, "-o", f"{fault}.bin", "--json"], journal)
        assert p.returncode == 0, p.stderr
        [line] = json_lines(p)
        assert line["size"] == len(data)
        assert (out / f"{fault}.bin").read_bytes() == data


def test_manifest_like_target_paths_cannot_escape(nginx, tmp_path, journal):
    p = run_segdl(["get", nginx.url("one.bin"), "-d", tmp_path / "out", "-o", "../escape.bin", "--json"], journal)
    [line] = json_lines(p)
    assert line["status"] == "failed" and "escapes" in line["error"]
    assert p.returncode == errors.EXIT_USAGE
    assert not (tmp_path / "escape.bin").exists()


def test_python_api_takes_a_manifest_path_and_returns_records(nginx, nginx_root, tmp_path):
    import json as _json
    from segdl.engine import Settings, download

    m = tmp_path / "m.json"
    m.write_text(_json.dumps({"collection": "api", "files": [
        {"url": nginx.url("one.bin"), "path": "a/one.bin"},
        {"url": nginx.url("nope.bin"), "path": "a/nope.bin"}]}))
    results = download(str(m), Settings(dest=tmp_path / "out", journal=tmp_path / "j.sqlite"))
    assert [r.status for r in results] == ["done", "failed"]
    assert [r.path for r in results.errors] == [str(tmp_path / "out" / "a" / "nope.bin")]
    assert "404" in results.errors[0].error and results.exit_code == errors.EXIT_DOWNLOAD_FAILED
    assert (tmp_path / "out" / "a" / "one.bin").read_bytes() == (nginx_root / "one.bin").read_bytes()


def test_progress_snapshots_cover_the_whole_job(nginx, nginx_root, tmp_path):
    from segdl.engine import Request, Settings, download

    snaps = []
    names = ("odd.bin", "one.bin", "zero.bin")
    results = download([Request(nginx.url(n)) for n in names],
                       Settings(dest=tmp_path / "out", journal=tmp_path / "j.sqlite"), on_progress=snaps.append)
    assert [r.status for r in results] == ["done"] * 3
    total = sum((nginx_root / n).stat().st_size for n in names)
    last = snaps[-1]
    assert (last.finished, last.total_files, last.done, last.size) == (3, 3, total, total)
    assert all(a.done <= b.done for a, b in zip(snaps, snaps[1:]))  # never goes back


def test_every_connection_starts_at_once_on_an_http11_mirror(make_nginx, tmp_path, journal):
    """libcurl's PIPEWAIT holds a transfer until another *finishes*: on
    HTTP/1.1 it must be off, or most connections idle through the first
    request (seen: 9 of 16 for 4 s on a 2 MiB/s-per-connection mirror)."""
    import os
    import signal

    from helpers import SEGDL

    srv = make_nginx(limit_rate="2m")
    env = dict(os.environ, SEGDL_JOURNAL=str(journal))
    p = subprocess.Popen([*SEGDL, "get", srv.url("big.bin"), "-d", str(tmp_path / "out"), "-q", "-x", "16"],
                         env=env, start_new_session=True)
    try:
        time.sleep(3.5)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    # nginx logs a request when it ends (the kill ends them all).
    entries = srv.access_log_entries(wait_for=17, timeout=10)
    starts = sorted(float(e["msec"]) - float(e["request_time"]) for e in entries
                    if e["path"] == "/big.bin" and not is_probe(e["range"]))
    assert len(starts) >= 16, len(starts)
    # With PIPEWAIT, the rest would start only as first requests end (7 s).
    assert starts[15] - starts[0] < 2.5, [round(s - starts[0], 2) for s in starts]


def test_a_second_job_on_a_file_being_downloaded_is_refused(make_nginx, tmp_path):
    """Two segdl processes never write one part file (two terminals, a
    nightly sync overlapping the last one): the second gets exit 5 for that
    file and leaves the first one's journal row alone."""
    import os
    import signal
    import sqlite3

    from helpers import SEGDL, journal_rows

    srv = make_nginx(limit_rate="1m")
    out = tmp_path / "out"
    j1, j2 = tmp_path / "j1.sqlite", tmp_path / "j2.sqlite"
    first = subprocess.Popen([*SEGDL, "get", srv.url("big.bin"), "-d", str(out), "-q", "-x", "2"],
                             env=dict(os.environ, SEGDL_JOURNAL=str(j1)), start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if (out / "big.bin.segdl-part").exists() and journal_rows(j1, "SELECT state FROM files") == [("downloading",)]:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the first job did not start")
        for journal in (j2, j1):  # another journal, and the same one
            p = run_segdl(["get", srv.url("big.bin"), "-d", out, "--json"], journal, timeout=60)
            [line] = json_lines(p)
            assert p.returncode == errors.EXIT_EXISTS, p.stderr
            assert line["status"] == "failed" and "another segdl process" in line["error"]
        assert first.poll() is None  # untouched, still running
        con = sqlite3.connect(j1)
        assert con.execute("SELECT state FROM files").fetchall() == [("downloading",)]
        con.close()
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    # Its lock died with it: the file can be taken up again (from an
    # unthrottled mirror of the same files, to be quick).
    fast = make_nginx()
    p = run_segdl(["get", fast.url("big.bin"), "-d", out, "--json", "-x", "16"], j1, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json_lines(p)[0]["status"] == "done"


def test_rerun_over_a_verified_row_that_disagrees_ends(nginx, nginx_root, tmp_path, journal):
    """A journal row left 'verified' (crash before 'done') whose digest does
    not match the file on disk: the file is hashed once and judged by the
    request's digest; the run ends (it once livelocked re-hashing)."""
    import json
    import sqlite3

    out = tmp_path / "out"
    want = blake3_file(nginx_root / "odd.bin")
    m = tmp_path / "m.json"
    m.write_text(json.dumps({"files": [{"url": nginx.url("odd.bin"), "path": "odd.bin", "blake3": want}]}))
    assert run_segdl(["get", "-i", m, "-d", out, "--json"], journal).returncode == 0
    con = sqlite3.connect(journal)
    con.execute("UPDATE files SET state = 'verified', blake3 = ?", ["00" * 32])
    con.commit()
    con.close()
    p = run_segdl(["get", "-i", m, "-d", out, "--json"], journal, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json_lines(p)[0]["status"] == "skipped"


def test_a_file_its_probe_carried_whole_has_no_segments_and_is_added_verified(nginx, nginx_root, tmp_path, journal):
    """one.bin arrives whole with its probe: no segment plan, no worker, no
    'downloading', its row written verified (with its digest) at its start;
    odd.bin (over 1 MiB) downloads on its own connections.  Both end done,
    the same bytes as the mirror's (the first state of each comes with its
    "added" event)."""
    import json
    import sqlite3

    out = tmp_path / "out"
    p = run_segdl(["get", nginx.url("one.bin"), nginx.url("odd.bin"), "-d", out, "--json"], journal)
    assert p.returncode == 0, p.stderr
    for name in ("one.bin", "odd.bin"):
        assert blake3_file(out / name) == blake3_file(nginx_root / name)
    con = sqlite3.connect(journal)
    try:
        ids = dict(con.execute("SELECT path, id FROM files").fetchall())
        one, odd = ids[str(out / "one.bin")], ids[str(out / "odd.bin")]
        segs = dict(con.execute("SELECT file_id, COUNT(*) FROM segments GROUP BY file_id").fetchall())
        states = {fid: [json.loads(d)["state"] for (d,) in con.execute(
            "SELECT data FROM events WHERE file_id = ? AND kind IN ('added', 'state', 'finished') ORDER BY seq", [fid])]
            for fid in (one, odd)}
    finally:
        con.close()
    assert one not in segs and segs[odd] >= 1
    assert states[one] == ["verified", "done"]
    assert states[odd] == ["downloading", "verifying", "verified", "done"]
