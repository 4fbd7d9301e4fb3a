"""Running a job again from the journal (``segdl resume``, ``segdl retry``):
what the journal keeps of a job, and what it does not (header values)."""

from __future__ import annotations

import json
import sqlite3

from helpers import json_lines, run_segdl
from segdl.engine.values.messages import TransferOptions
from segdl.engine.values.request import (
    Request, Settings, job_spec, missing_headers, request_from_spec, settings_from_spec,
)
from segdl.engine.rules.retry import RetryPolicy


def _settings(**kw) -> Settings:
    return Settings(
        connections=4, max_connections=12, workers=3, concurrent_files=2, max_per_host=6,
        max_speed=1000, max_file_speed=500, retry=RetryPolicy(max_attempts=2),
        transfer=TransferOptions(headers=("Authorization: Bearer s3cret", "Accept: */*"), stall_timeout=7.0,
                                 insecure=True, ca_cert="/ca.pem"),
        **kw,
    )


def test_spec_round_trip_keeps_what_shapes_the_download():
    reqs = [Request("http://h/a", "x/a.bin", "ab" * 32, mirrors=("http://m/a",), headers=("X-Key: k1",))]
    spec = json.loads(json.dumps(job_spec(reqs, _settings(keep_headers=True))))  # as the journal stores it
    s = settings_from_spec(spec)
    assert (s.connections, s.max_connections, s.workers, s.concurrent_files, s.max_per_host) == (4, 12, 3, 2, 6)
    assert (s.max_speed, s.max_file_speed, s.retry.max_attempts) == (1000, 500, 2)
    t = s.transfer
    assert (t.stall_timeout, t.insecure, t.ca_cert) == (7.0, True, "/ca.pem")
    assert t.headers == ("Authorization: Bearer s3cret", "Accept: */*")
    assert s.keep_headers  # so the re-run's own job keeps them too
    r = request_from_spec(spec["requests"][0])
    assert r == reqs[0]
    assert missing_headers(spec) == []


def test_header_values_stay_out_of_the_spec_unless_asked():
    reqs = [Request("http://h/a", headers=("X-Key: k1",))]
    spec = job_spec(reqs, _settings())
    text = json.dumps(spec)
    assert "s3cret" not in text and "k1" not in text and "*/*" not in text
    assert settings_from_spec(spec).transfer.headers == ()
    assert request_from_spec(spec["requests"][0]).headers == ()
    assert missing_headers(spec) == ["Authorization", "Accept", "X-Key"]
    # Given again on the command line (any case): no longer missing.
    assert missing_headers(spec, ("authorization: Bearer new", "X-KEY: k2")) == ["Accept"]
    assert settings_from_spec(spec, headers=("authorization: Bearer new",)).transfer.headers == (
        "authorization: Bearer new",)


def test_a_spec_from_an_older_journal_gets_defaults():
    old = {"requests": [{"url": "http://h/a", "path": None, "blake3": None, "sha256": None, "mirrors": []}],
           "settings": {"connections": 8, "workers": 2, "concurrent_files": 5, "max_connections": 64}}
    s = settings_from_spec(old, workers=1)
    d = Settings()
    assert s.connections == 8 and s.workers == 1
    assert (s.max_speed, s.retry, s.transfer) == (d.max_speed, d.retry, d.transfer)
    assert missing_headers(old) == []


def test_retry_sends_headers_given_again_and_the_journal_never_held_them(fault_server, tmp_path):
    fault_server.add("h.bin", b"x" * 100_000)
    journal = tmp_path / "j.sqlite"
    url = fault_server.url("/status/h.bin?code=503&times=1")
    p = run_segdl(["get", url, "-d", tmp_path / "out", "--json", "--retries", "0", "-o", "h.bin",
                   "-H", "X-Token: s3cret-1", "--stall-timeout", "9"], journal, timeout=60)
    [line] = json_lines(p)
    assert line["status"] == "failed"
    assert b"s3cret" not in journal.read_bytes()
    con = sqlite3.connect(journal)
    [(spec,)] = con.execute("SELECT spec FROM job_specs").fetchall()
    con.close()
    assert json.loads(spec)["settings"]["stall_timeout"] == 9  # the job's settings are kept
    n = len(fault_server.requests("h.bin"))
    p = run_segdl(["retry", "--json", "-H", "X-Token: s3cret-2"], journal, timeout=60)
    assert p.returncode == 0, p.stderr
    [line] = json_lines(p)
    assert line["status"] == "done"
    assert (tmp_path / "out" / "h.bin").read_bytes() == b"x" * 100_000
    later = fault_server.requests("h.bin")[n:]
    assert later and all(r["headers"].get("X-Token") == "s3cret-2" for r in later)
    assert b"s3cret" not in journal.read_bytes()


def test_resume_says_which_headers_it_lacks(fault_server, tmp_path):
    fault_server.add("k.bin", b"y" * 50_000)
    journal = tmp_path / "j.sqlite"
    url = fault_server.url("/status/k.bin?code=503&times=1")
    p = run_segdl(["get", url, "-d", tmp_path / "out", "--json", "--retries", "0", "-o", "k.bin",
                   "-H", "Authorization: Bearer t0ken"], journal, timeout=60)
    assert json_lines(p)[0]["status"] == "failed"
    p = run_segdl(["retry"], journal, timeout=60)
    assert "Authorization" in p.stderr and "-H" in p.stderr
    assert "t0ken" not in p.stderr
