"""Issue 4, "the matrix": every FaultServer fault against the real segdl.

Each test runs segdl in a subprocess (the CLI, or for settings the CLI does
not expose, a tiny script around the Python API) with a timeout, and checks
one of exactly two acceptable outcomes:

* ``status == "done"``: the final file exists and its blake3 equals the
  source's (and the JSON line reports that digest), or
* a clean failure: ``status`` "failed"/"hash_mismatch", a human message, the
  documented exit code (engine/errors.py), no traceback, and *nothing* under
  the final name.

A corrupt file reported "done" is never acceptable.  Retries must be
bounded: the server's request log is checked.

Faults fire on the first N requests for a URL (``times=N``).  segdl's first
request for a URL is its probe (``Range: bytes=0-1048575`` for a new file:
its first MiB, kept as the start of the first segment; ``bytes=0-0`` for a
file partly here), so ``times=1`` hits only the probe and ``times=3`` the
probe plus two segment requests.  A probe whose body breaks off keeps what
arrived; segment transfers are hurt as before.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import unicodedata
import urllib.parse
from pathlib import Path

import pytest

from helpers import is_probe
from servers import MiB, FaultServer, blake3_bytes, blake3_file

# 8 segments of 4 MiB (engine/ranges.py DEFAULT_MIN_SEGMENT: the planning
# unit), 4 at a time with -x 4, and an odd tail so the segments are not all
# the same length.
BIG_SIZE = 32 * MiB + 12345
SMALL_SIZE = 1 * MiB + 7
API_SIZE = 6 * MiB + 4321  # with min_segment=512 KiB: many small segments

EXIT_DOWNLOAD_FAILED = 3
EXIT_HASH_MISMATCH = 4
EXIT_EXISTS = 5

_SEGDL = shutil.which("segdl")
SEGDL = [_SEGDL] if _SEGDL else [sys.executable, "-m", "segdl.cli.main"]
SUBPROCESS_TIMEOUT = 60


# --------------------------------------------------------------------------
# data and servers
# --------------------------------------------------------------------------

def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(scope="module")
def big() -> tuple[bytes, str]:
    d = _data(BIG_SIZE, 41)
    return d, blake3_bytes(d)


@pytest.fixture(scope="module")
def small() -> tuple[bytes, str]:
    d = _data(SMALL_SIZE, 42)
    return d, blake3_bytes(d)


@pytest.fixture(scope="module")
def api_blob() -> tuple[bytes, str]:
    d = _data(API_SIZE, 43)
    return d, blake3_bytes(d)


@pytest.fixture
def srv(fault_server: FaultServer, big, small, api_blob) -> FaultServer:
    fault_server.add("a.bin", big[0])
    fault_server.add("s.bin", small[0])
    fault_server.add("m.bin", api_blob[0])
    return fault_server


# --------------------------------------------------------------------------
# running segdl
# --------------------------------------------------------------------------

class Run:
    def __init__(self, proc: subprocess.CompletedProcess, elapsed: float, dest: Path):
        self.proc = proc
        self.code = proc.returncode
        self.elapsed = elapsed
        self.dest = dest
        self.stderr = proc.stderr
        assert "Traceback" not in proc.stderr, f"segdl crashed:\n{proc.stderr}"
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        try:
            self.results = [json.loads(ln) for ln in lines]
        except json.JSONDecodeError:  # pragma: no cover - reported below
            pytest.fail(f"stdout is not JSON lines:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        assert len(self.results) == 1, f"expected one JSON line, got:\n{proc.stdout}\n{proc.stderr}"
        self.r = self.results[0]

    def __repr__(self) -> str:
        return (f"<Run exit={self.code} {self.elapsed:.2f}s result={self.r} "
                f"stderr={self.stderr[-800:]!r}>")


def segdl_get(url: str, tmp: Path, *extra: str, timeout: float = SUBPROCESS_TIMEOUT,
              dest: Path | None = None, connections: int = 4) -> Run:
    dest = dest or tmp / "dl"
    args = [*SEGDL, "get", url, "-d", str(dest), "--json", "--journal", str(tmp / "j.sqlite"),
            "-x", str(connections), "--stall-timeout", "2", *extra]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"segdl hung for more than {timeout} s: {args}\nstderr: {e.stderr!r}")
    return Run(proc, time.monotonic() - t0, dest)


_API_SCRIPT = r"""
import json, sys, time
from pathlib import Path
from segdl.engine import download, Request, Settings
from segdl.engine.values.messages import TransferOptions
from segdl.engine.rules.retry import RetryPolicy

cfg = json.loads(sys.argv[1])
paused = []

def on_progress(snap):
    # Block the coordinator once, at its first progress snapshot, which
    # comes before the probe result has been collected.
    if cfg.get("pause_first") and not paused:
        paused.append(True)
        time.sleep(cfg["pause_first"])

settings = Settings(
    dest=Path(cfg["dest"]), journal=Path(cfg["journal"]),
    connections=cfg["connections"], max_connections=cfg["max_connections"],
    workers=cfg["workers"], min_segment=cfg["min_segment"], min_split=cfg["min_split"],
    retry=RetryPolicy(max_attempts=cfg["retries"], backoff=cfg["backoff"]),
    transfer=TransferOptions(stall_timeout=cfg["stall_timeout"], headers=tuple(cfg["headers"])),
)
res = download([Request(cfg["url"], cfg.get("path"), cfg.get("blake3"))], settings,
               on_progress=on_progress)
for r in res:
    print(json.dumps(r.as_dict(), sort_keys=True))
sys.exit(res.exit_code)
"""


def segdl_api(url: str, tmp: Path, *, timeout: float = SUBPROCESS_TIMEOUT, **cfg) -> Run:
    """Run the Python API in a subprocess (so a hang is bounded too)."""
    dest = tmp / "dl"
    conf = dict(url=url, dest=str(dest), journal=str(tmp / "j.sqlite"), connections=8,
                max_connections=8, workers=2, min_segment=512 * 1024, min_split=256 * 1024,
                retries=4, backoff=0.1, stall_timeout=2.0, headers=[])
    conf.update(cfg)
    args = [sys.executable, "-c", _API_SCRIPT, json.dumps(conf)]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"segdl (API) hung for more than {timeout} s: {conf}\nstderr: {e.stderr!r}")
    return Run(proc, time.monotonic() - t0, dest)


# --------------------------------------------------------------------------
# the two acceptable outcomes
# --------------------------------------------------------------------------

def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def assert_done(run: Run, digest: str, name: str = "a.bin") -> Path:
    r = run.r
    assert r["status"] == "done", run
    assert run.code == 0, run
    assert r["exit_code"] == 0 and r["error"] is None, run
    final = Path(r["path"])
    assert final == run.dest / name, run
    assert final.is_file(), run
    assert r["blake3"] == digest, f"reported blake3 differs from the source: {run}"
    assert blake3_file(final) == digest, f"CORRUPT FILE REPORTED DONE: {run}"
    assert r["size"] == final.stat().st_size, run
    return final


def assert_clean_failure(run: Run, code: int = EXIT_DOWNLOAD_FAILED, name: str = "a.bin",
                         status: str = "failed", words: tuple[str, ...] = ()) -> None:
    r = run.r
    assert r["status"] == status, run
    assert run.code == code, run
    assert r["exit_code"] == code, run
    msg = r["error"]
    assert isinstance(msg, str) and len(msg) >= 8 and any(c.isalpha() for c in msg), run
    assert "Traceback" not in msg and "pycurl" not in msg.lower(), run
    for w in words:
        assert w.lower() in msg.lower(), f"message lacks {w!r}: {run}"
    final = run.dest / name
    assert not final.exists(), f"a failed download left {final}: {run}"
    assert not os.path.lexists(final), run
    assert r["blake3"] is None or status == "hash_mismatch", run


def fault_url(srv: FaultServer, fault: str, name: str = "a.bin", **params) -> str:
    q = urllib.parse.urlencode(params)
    return srv.url(f"{fault}/{name}" + (f"?{q}" if q else ""))


def reqs(srv: FaultServer, name: str = "a.bin", fault: str | None = "any") -> list[dict]:
    out = srv.requests(name)
    if fault != "any":
        out = [r for r in out if r["fault"] == fault]
    return out


def cut_short(records: list[dict], size: int) -> list[dict]:
    """Ranged requests that got less than they asked for: cut by the client
    (stall timeout, split) or by the server."""
    out = []
    for r in records:
        if r["status"] != 206 or not (r["range"] or "").startswith("bytes="):
            continue
        a, _, b = r["range"][6:].partition("-")
        want = (min(int(b), size - 1) if b else size - 1) - int(a) + 1
        if r["sent"] < want:
            out.append(r)
    return out


def probes(records: list[dict]) -> list[dict]:
    return [r for r in records if is_probe(r["range"])]


# --------------------------------------------------------------------------
# baseline
# --------------------------------------------------------------------------

def test_baseline_segmented(srv, tmp_path, big):
    run = segdl_get(srv.url("a.bin"), tmp_path)
    assert_done(run, big[1])
    rs = reqs(srv)
    ranged = [r for r in rs if r["range"] and not is_probe(r["range"])]
    assert len(ranged) >= 4, rs  # the file really was fetched in segments
    assert len(rs) <= 12, rs
    assert run.r["downloaded"] == BIG_SIZE


# --------------------------------------------------------------------------
# drop: RST (or FIN) mid-body
# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["rst", "fin"])
def test_drop_heals(srv, tmp_path, big, mode):
    url = fault_url(srv, "drop", after=65536, times=3, mode=mode)
    run = segdl_get(url, tmp_path)
    assert_done(run, big[1])
    rs = reqs(srv)
    assert len(rs) >= 5, rs
    assert len(rs) <= 16, f"too many requests for 2 dropped segments: {len(rs)}"
    # resumed, not restarted: the client took little more than the file off
    # the wire (the server's own count includes what split-off heads had
    # already pushed into socket buffers, so it is only loosely bounded)
    assert run.r["downloaded"] < BIG_SIZE + 1 * MiB, run
    assert srv.bytes_sent("a.bin") < 1.5 * BIG_SIZE


def test_drop_always_fails_bounded(srv, tmp_path):
    url = fault_url(srv, "drop", after=65536)
    run = segdl_get(url, tmp_path, "--retries", "2")
    assert_clean_failure(run)
    rs = reqs(srv)
    # probe + 8 segments x (1 try + 2 retries) at the very most (a segment
    # waiting out its backoff lets the next one start; the file fails when
    # the first runs out of retries)
    assert len(rs) <= 1 + 8 * 3, len(rs)
    assert run.elapsed < 15


def test_drop_many_small_segments_api(srv, tmp_path, api_blob):
    url = fault_url(srv, "drop", "m.bin", after=100_000, times=7)
    run = segdl_api(url, tmp_path)
    assert_done(run, api_blob[1], "m.bin")
    rs = reqs(srv, "m.bin")
    assert len([r for r in rs if not is_probe(r["range"])]) >= 8, rs
    assert len(rs) <= 40, len(rs)


# --------------------------------------------------------------------------
# status: transient statuses, then healthy
# --------------------------------------------------------------------------



@pytest.mark.parametrize("code,retry_after", [(503, 1), (429, 1), (500, None), (408, None)])
def test_status_transient_heals(srv, tmp_path, big, code, retry_after):
    params = dict(code=code, times=2)
    if retry_after is not None:
        params["retry_after"] = retry_after
    run = segdl_get(fault_url(srv, "status", **params), tmp_path)
    assert_done(run, big[1])
    rs = reqs(srv)
    assert [r["status"] for r in rs[:2]] == [code, code], rs
    assert len(rs) <= 12, len(rs)
    if retry_after is not None:
        gaps = [b["time"] - a["time"] for a, b in zip(rs[:2], rs[1:3])]
        assert min(gaps) >= retry_after - 0.1, f"Retry-After not honoured: {gaps}"


def test_drop_on_first_request_heals(srv, tmp_path, big):
    # the very first request (the probe) is reset before its body
    run = segdl_get(fault_url(srv, "drop", times=1), tmp_path)
    assert_done(run, big[1])
    assert len(reqs(srv)) <= 12


@pytest.mark.parametrize("code", [503, 500])
def test_status_always_fails_bounded(srv, tmp_path, code):
    run = segdl_get(fault_url(srv, "status", code=code), tmp_path, "--retries", "2")
    assert_clean_failure(run, words=(str(code),))
    assert 1 <= len(reqs(srv)) <= 3, reqs(srv)
    assert run.elapsed < 15


def test_404_exit_3(srv, tmp_path):
    run = segdl_get(srv.url("missing.bin"), tmp_path)
    assert_clean_failure(run, name="missing.bin", words=("404",))
    assert len(reqs(srv, "missing.bin")) == 1


# --------------------------------------------------------------------------
# Range trouble
# --------------------------------------------------------------------------

def test_norange_single_stream(srv, tmp_path, big):
    run = segdl_get(fault_url(srv, "norange"), tmp_path)
    assert_done(run, big[1])
    rs = reqs(srv)
    full = [r for r in rs if not is_probe(r["range"])]
    assert len(full) == 1, rs  # one plain GET after the probe, no retries
    assert full[0]["range"] is None, full


def test_badrange_heals(srv, tmp_path, big):
    run = segdl_get(fault_url(srv, "badrange", times=3), tmp_path)
    assert_done(run, big[1])
    assert len(reqs(srv)) <= 14, reqs(srv)


@pytest.mark.parametrize("shift", [1, -1])
def test_badrange_always_fails(srv, tmp_path, shift):
    run = segdl_get(fault_url(srv, "badrange", shift=shift), tmp_path, "--retries", "2")
    assert_clean_failure(run)
    assert len(reqs(srv)) <= 1 + 8 * 3, len(reqs(srv))  # 8 units x 3 tries at the most


def test_badrange_many_small_segments_api(srv, tmp_path, api_blob):
    run = segdl_api(fault_url(srv, "badrange", "m.bin", times=6), tmp_path)
    assert_done(run, api_blob[1], "m.bin")
    assert len(reqs(srv, "m.bin")) <= 40


def test_te_range_heals(srv, tmp_path, big):
    run = segdl_get(fault_url(srv, "te_range", times=3), tmp_path)
    assert_done(run, big[1])
    assert len(reqs(srv)) <= 14, reqs(srv)


def test_te_range_always_fails(srv, tmp_path):
    run = segdl_get(fault_url(srv, "te_range"), tmp_path, "--retries", "2")
    assert_clean_failure(run)
    assert len(reqs(srv)) <= 1 + 8 * 3, len(reqs(srv))  # 8 units x 3 tries at the most


def test_te_range_honest_chunked_206(srv, tmp_path, big):
    # shift=0: a correct 206, just chunked instead of Content-Length
    run = segdl_get(fault_url(srv, "te_range", shift=0), tmp_path)
    assert_done(run, big[1])
    assert len(reqs(srv)) <= 12


def test_overlong_206_body_is_never_written(srv, tmp_path, big):
    """A correct 206 header, then more bytes than the range (chunked, so no
    Content-Length stops libcurl): the extra must not land in the file.  A
    first run that met it on every request never ends 'done' with junk."""
    run = segdl_get(fault_url(srv, "overlong", times=4, extra=3 << 20), tmp_path)
    assert_done(run, big[1])


def test_overlong_206_always_still_gives_the_right_bytes(srv, tmp_path, big):
    # Every response carries the announced range correctly and then junk:
    # segdl keeps exactly the announced bytes of each, and continues.
    run = segdl_get(fault_url(srv, "overlong", extra=1 << 20), tmp_path, "--retries", "2")
    assert_done(run, big[1])


# --------------------------------------------------------------------------
# stall / short bodies
# --------------------------------------------------------------------------

def test_stall_heals(srv, tmp_path, big):
    # the probe gets its 1 byte; two segment requests get 1 byte, then silence
    run = segdl_get(fault_url(srv, "stall", after=1, seconds=30, times=3), tmp_path)
    assert_done(run, big[1])
    assert run.elapsed < 8, run
    assert len(reqs(srv)) <= 14, reqs(srv)




def test_stall_after_data_cut_within_stall_timeout(srv, tmp_path, big):
    run = segdl_get(fault_url(srv, "stall", after=65536, seconds=30, times=3), tmp_path)
    assert_done(run, big[1])
    assert len(reqs(srv)) <= 14, reqs(srv)
    # 2 s of silence + a retry; not 2 s + libcurl's 5 s speed window
    assert run.elapsed < 6, run


def test_stall_always_fails_bounded(srv, tmp_path):
    run = segdl_get(fault_url(srv, "stall", after=1, seconds=30), tmp_path, "--retries", "1")
    assert_clean_failure(run)
    assert run.elapsed < 12, run
    assert len(reqs(srv)) <= 1 + 8 * 2, len(reqs(srv))  # 8 units x 2 tries at the most


def test_stall_error_is_specific():
    import pycurl

    from segdl.engine.values.errors import StalledError
    from segdl.engine.net import curl_error

    msg = "Operation too slow. Less than 1 bytes/sec transferred the last 2 seconds"
    err = curl_error(pycurl.E_OPERATION_TIMEDOUT, msg, stall_timeout=2)
    assert isinstance(err, StalledError), type(err)
    assert "stall" in err.message


def test_short_heals(srv, tmp_path, big):
    run = segdl_get(fault_url(srv, "short", after=65536, times=3), tmp_path)
    assert_done(run, big[1])
    assert len(reqs(srv)) <= 14, reqs(srv)


def test_short_always_fails_bounded(srv, tmp_path):
    run = segdl_get(fault_url(srv, "short", after=65536), tmp_path, "--retries", "2")
    assert_clean_failure(run)
    assert len(reqs(srv)) <= 1 + 8 * 3, len(reqs(srv))  # 8 units x 3 tries at the most


# --------------------------------------------------------------------------
# changing remote
# --------------------------------------------------------------------------

def test_changing_fails_cleanly_bounded(srv, tmp_path):
    # probe sees version 0, every later request a new version: segdl must
    # restart a bounded number of times and give up, never mix versions.
    run = segdl_get(fault_url(srv, "changing", times=1), tmp_path)
    assert_clean_failure(run, words=("chang",))
    rs = reqs(srv)
    assert len(probes(rs)) <= 5, rs  # restart_limit (3) + 1
    assert len(rs) <= 5 * 6, len(rs)


def test_changing_mid_download_fails_cleanly(srv, tmp_path):
    # probe and first two segments agree, the rest is a new version
    run = segdl_get(fault_url(srv, "changing", times=3), tmp_path)
    assert_clean_failure(run, words=("chang",))
    assert len(reqs(srv)) <= 5 * 6, len(reqs(srv))


def test_changing_without_validators_never_done_with_wrong_bytes(srv, tmp_path, big):
    # No ETag / Last-Modified: segdl cannot see that segments 3 and 4 come
    # from other versions; the expected --blake3 must catch the mix.
    srv.add("nv.bin", big[0], etag=None, last_modified=None)
    url = fault_url(srv, "changing", "nv.bin", times=3)
    run = segdl_get(url, tmp_path, "--blake3", big[1], "--retries", "1")
    if run.r["status"] == "done":
        assert_done(run, big[1], "nv.bin")
    elif run.r["status"] == "hash_mismatch":
        assert_clean_failure(run, EXIT_HASH_MISMATCH, "nv.bin", status="hash_mismatch")
    else:
        assert_clean_failure(run, name="nv.bin")
    assert len(reqs(srv, "nv.bin")) <= 5 * 6


# --------------------------------------------------------------------------
# signed (expiring) redirects
# --------------------------------------------------------------------------

def test_signed_within_ttl(srv, tmp_path, big):
    run = segdl_get(fault_url(srv, "signed", ttl=10), tmp_path)
    assert_done(run, big[1])
    rs = reqs(srv)
    assert all(r["status"] in (206, 302) for r in rs), rs
    assert len([r for r in rs if r["fault"] == "signed"]) == 1, rs  # resolved once


def test_signed_expired_at_once_fails_cleanly(srv, tmp_path):
    run = segdl_get(fault_url(srv, "signed", ttl=0), tmp_path, "--retries", "2")
    assert_clean_failure(run, words=("403",))
    assert len(reqs(srv)) <= 2 * 6, reqs(srv)  # bounded re-resolution, if any


def test_signed_expires_before_segments_are_fetched(srv, tmp_path, api_blob):
    # The coordinator is paused (in its first progress callback) for longer
    # than the token lives, so every segment request meets an expired token.
    # segdl should resolve /signed/... again and finish.
    url = fault_url(srv, "signed", "m.bin", ttl=0.5)
    run = segdl_api(url, tmp_path, pause_first=1.2, connections=4, max_connections=4,
                    retries=2, backoff=0.05)
    assert_done(run, api_blob[1], "m.bin")
    rs = reqs(srv, "m.bin")
    resolutions = [r for r in rs if r["fault"] == "signed"]
    assert any(r["fault"] == "s" and r["status"] == 403 for r in rs), rs  # it did expire
    assert 2 <= len(resolutions) <= 5, rs  # resolved again, a bounded number of times
    assert len(rs) <= 40, len(rs)


# --------------------------------------------------------------------------
# Content-Disposition: hostile names stay inside the target folder
# --------------------------------------------------------------------------


HOSTILE = [
    ("dotdot", dict(fn="../../x")),
    ("dotdot-backslash", dict(fn="..\\..\\y.bin")),
    ("only-dots", dict(fn="..")),
    ("hidden", dict(fn=".bashrc")),
    ("control-chars", dict(fn="a\x01b\x1b[31mc\x7fd\te.bin")),
    ("unicode-latin1", dict(fn="caf\u00e9.bin", enc="latin-1")),
    ("star-dotdot", dict(fn="../../star.bin", star="1")),
    ("star-abs-with-fallback", dict(fn="/tmp/segdl-star-abs.bin", star="1",
                                    fallback="../fallback.bin")),
    ("star-control", dict(fn="s\x00t\x1b.bin", star="1")),
    ("long", dict(fn="L" * 400 + ".bin")),
    ("empty", dict(fn="")),
    ("c1-control-latin1", dict(fn="a\x9b31mb\x85c.bin", enc="latin-1")),
]


def _check_inside(run: Run, tmp_path: Path, digest: str) -> Path:
    dest = run.dest.resolve()
    r = run.r
    assert r["status"] == "done", run
    final = Path(r["path"]).resolve()
    assert final.parent == dest, f"escaped the target folder: {final}"
    assert final.is_file(), run
    name = final.name
    assert name not in ("", ".", "..") and not name.startswith("."), name
    assert not any(unicodedata.category(c) == "Cc" for c in name), repr(name)
    assert "/" not in name and "\\" not in name, name
    assert len(name.encode()) <= 255, len(name.encode())
    assert blake3_file(final) == digest == r["blake3"], run
    # exactly one file in the folder, nothing anywhere else in tmp_path
    assert files_under(dest) == [final], files_under(dest)
    others = [p for p in files_under(tmp_path)
              if dest not in p.resolve().parents and not p.name.startswith("j.sqlite")]
    assert others == [], others
    return final


@pytest.mark.parametrize("params", [p for _, p in HOSTILE], ids=[i for i, _ in HOSTILE])
def test_disposition_hostile_names(srv, tmp_path, small, params):
    dest = tmp_path / "jail" / "cell" / "dl"
    run = segdl_get(fault_url(srv, "disposition", "s.bin", **params), tmp_path, dest=dest)
    _check_inside(run, tmp_path, small[1])
    assert not Path("/tmp/segdl-star-abs.bin").exists()


@pytest.mark.parametrize("star", [
    "0",
    "1",
], ids=["raw-utf8", "filename-star"])
def test_disposition_utf8_name(srv, tmp_path, small, star):
    name = "na\u00efve \u2603.bin"
    run = segdl_get(fault_url(srv, "disposition", "s.bin", fn=name, star=star), tmp_path)
    final = _check_inside(run, tmp_path, small[1])
    assert final.name == name


def test_disposition_absolute_path(srv, tmp_path, small):
    # "/etc/passwd"-style absolute name, aimed at a file we own (tests run as
    # root: a regression must not be able to clobber the real /etc/passwd).
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "passwd"
    victim.write_bytes(b"root:x:0:0::/root:/bin/sh\n")
    before = victim.read_bytes()
    run = segdl_get(fault_url(srv, "disposition", "s.bin", fn=str(victim)), tmp_path)
    final = _check_inside_allow(run, tmp_path, small[1], allowed=[victim])
    assert victim.read_bytes() == before
    assert final.name == "passwd"


def test_two_downloads_the_server_names_alike_the_second_fails_alone(srv, tmp_path, small, api_blob):
    """Two URLs of one job that the server names the same file: the first
    to start writes it (the first in the job's order, unless its probe is
    late), the other fails with a clear error (exit 2) and does not touch
    it; the job's other result stands."""
    dest = tmp_path / "dl"
    urls = [fault_url(srv, "disposition", "s.bin", fn="same.bin"),
            fault_url(srv, "disposition", "m.bin", fn="same.bin")]
    proc = subprocess.run([*SEGDL, "get", *urls, "-d", str(dest), "--json", "--journal", str(tmp_path / "j.sqlite")],
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr, proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(r["url"] for r in results) == sorted(urls), proc
    [done] = [r for r in results if r["status"] == "done"]
    [other] = [r for r in results if r is not done]
    assert other["status"] == "failed" and other["exit_code"] == 2, proc
    assert f"two downloads in this job would write {dest / 'same.bin'}" in other["error"], other
    assert proc.returncode == 2, proc
    expected = small[1] if done["url"] == urls[0] else api_blob[1]
    assert blake3_file(dest / "same.bin") == expected == done["blake3"]
    assert files_under(dest) == [dest / "same.bin"], files_under(dest)


def _check_inside_allow(run: Run, tmp_path: Path, digest: str, allowed: list[Path]) -> Path:
    dest = run.dest.resolve()
    r = run.r
    assert r["status"] == "done", run
    final = Path(r["path"]).resolve()
    assert final.parent == dest, f"escaped the target folder: {final}"
    assert blake3_file(final) == digest == r["blake3"], run
    assert files_under(dest) == [final]
    others = [p for p in files_under(tmp_path)
              if dest not in p.resolve().parents and not p.name.startswith("j.sqlite")
              and p not in allowed]
    assert others == [], others
    return final


# --------------------------------------------------------------------------
# bodies without Content-Length
# --------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["nolength", "chunked"])
def test_lengthless_bodies(srv, tmp_path, big, fault):
    run = segdl_get(fault_url(srv, fault), tmp_path)
    assert_done(run, big[1])
    rs = reqs(srv)
    assert len([r for r in rs if not is_probe(r["range"])]) == 1, rs
    assert len(rs) <= 3, rs


def test_chunked_tiny_chunks(srv, tmp_path, small):
    run = segdl_get(fault_url(srv, "chunked", "s.bin", chunk=997), tmp_path)
    assert_done(run, small[1], "s.bin")


# --------------------------------------------------------------------------
# slow first byte
# --------------------------------------------------------------------------

def test_slowfirst_under_stall_timeout(srv, tmp_path, big):
    run = segdl_get(fault_url(srv, "slowfirst", delay=1), tmp_path)
    assert_done(run, big[1])
    assert 1.0 <= run.elapsed < 12, run
    # Every response is slow to start but within the stall timeout: none is
    # cut and retried (a split may still end one early on purpose).
    assert len(cut_short(reqs(srv), BIG_SIZE)) <= 1, reqs(srv)
    assert len(reqs(srv)) <= 30


def test_slowfirst_beyond_stall_timeout_heals(srv, tmp_path, big):
    # first response takes longer than --stall-timeout 2: cut and retried
    run = segdl_get(fault_url(srv, "slowfirst", delay=4, times=1), tmp_path)
    assert_done(run, big[1])
    assert run.elapsed < 12, run
    assert len(reqs(srv)) <= 30


# --------------------------------------------------------------------------
# redirects
# --------------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    dict(n=1), dict(n=3, relative=1), dict(n=2, code=301),
    dict(n=2, code=307), dict(n=2, code=308), dict(n=10),
], ids=["1", "3-relative", "301", "307", "308", "10"])
def test_redirect_chain(srv, tmp_path, big, params):
    run = segdl_get(fault_url(srv, "redirect", **params), tmp_path)
    assert_done(run, big[1])
    assert len(reqs(srv)) <= params["n"] + 12


def test_too_many_redirects(srv, tmp_path):
    run = segdl_get(fault_url(srv, "redirect", n=30), tmp_path, "--retries", "2")
    assert_clean_failure(run, words=("redirect",))
    assert len(reqs(srv)) <= 3 * 12, len(reqs(srv))  # bounded, not 30 hops x retries


def _auth(rec: dict) -> str | None:
    for k, v in rec["headers"].items():
        if k.lower() == "authorization":
            return v
    return None


def _host(rec: dict) -> str:
    for k, v in rec["headers"].items():
        if k.lower() == "host":
            return v
    return ""


def test_authorization_not_forwarded_cross_host(srv, tmp_path, big):
    # last hop goes to http://localhost:<port>/a.bin: a different host than 127.0.0.1
    url = fault_url(srv, "redirect", n=2, to_port=srv.port)
    run = segdl_get(url, tmp_path, "-H", "Authorization: Bearer secret")
    assert_done(run, big[1])
    rs = reqs(srv)
    first = [r for r in rs if r["fault"] == "redirect"]
    assert first and all(_auth(r) == "Bearer secret" for r in first), first  # sent to origin
    other = [r for r in rs if _host(r).startswith("localhost")]
    assert other, rs
    leaked = [(r["range"], _host(r)) for r in other if _auth(r) is not None]
    assert leaked == [], f"Authorization sent to another host: {leaked}"


def test_authorization_kept_same_host(srv, tmp_path, big):
    url = fault_url(srv, "redirect", n=2)
    run = segdl_get(url, tmp_path, "-H", "Authorization: Bearer secret")
    assert_done(run, big[1])
    assert all(_auth(r) == "Bearer secret" for r in reqs(srv)), reqs(srv)


# --------------------------------------------------------------------------
# hashes and existing files
# --------------------------------------------------------------------------

def test_hash_mismatch_exit_4(srv, tmp_path):
    run = segdl_get(srv.url("s.bin"), tmp_path, "--blake3", "00" * 32)
    assert_clean_failure(run, EXIT_HASH_MISMATCH, "s.bin", status="hash_mismatch",
                         words=("mismatch",))


@pytest.mark.parametrize("how", ["repr_digest", "digest"])
def test_sha256_published_by_the_server_is_checked(srv, tmp_path, small, how):
    import hashlib

    run = segdl_get(srv.url(f"s.bin?{how}=ok"), tmp_path)
    assert_done(run, small[1], "s.bin")
    assert run.r["sha256"] == hashlib.sha256(small[0]).hexdigest(), run


@pytest.mark.parametrize("how", ["repr_digest", "digest"])
def test_sha256_published_wrong_is_a_hash_mismatch(srv, tmp_path, how):
    run = segdl_get(srv.url(f"s.bin?{how}=bad"), tmp_path)
    assert_clean_failure(run, EXIT_HASH_MISMATCH, "s.bin", status="hash_mismatch",
                         words=("sha256", "published by the server"))


def test_sha256_in_a_hubs_linked_etag_is_checked(srv, tmp_path, small):
    """A hub answers with a redirect to its CDN and the file's sha256 in
    X-Linked-ETag on that redirect (Hugging Face's LFS files)."""
    import hashlib

    run = segdl_get(fault_url(srv, "signed", "s.bin", linked="ok", ttl=60), tmp_path, "-o", "s.bin")
    assert_done(run, small[1], "s.bin")
    assert run.r["sha256"] == hashlib.sha256(small[0]).hexdigest(), run
    run = segdl_get(fault_url(srv, "signed", "s.bin", linked="bad", ttl=60), tmp_path / "again", "-o", "s.bin")
    assert_clean_failure(run, EXIT_HASH_MISMATCH, "s.bin", status="hash_mismatch",
                         words=("published by the server",))


def test_hash_match_done(srv, tmp_path, small):
    run = segdl_get(srv.url("s.bin"), tmp_path, "--blake3", small[1].upper())
    assert_done(run, small[1], "s.bin")


def test_existing_different_file_exit_5(srv, tmp_path):
    dest = tmp_path / "dl"
    dest.mkdir()
    victim = dest / "s.bin"
    victim.write_bytes(b"precious local data\n")
    run = segdl_get(srv.url("s.bin"), tmp_path)
    assert run.r["status"] == "failed" and run.code == EXIT_EXISTS, run
    assert run.r["exit_code"] == EXIT_EXISTS and "force" in run.r["error"], run
    assert victim.read_bytes() == b"precious local data\n"
    assert files_under(dest) == [victim]


def test_existing_different_file_force(srv, tmp_path, small):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "s.bin").write_bytes(b"stale\n")
    run = segdl_get(srv.url("s.bin"), tmp_path, "--force")
    assert_done(run, small[1], "s.bin")


def test_existing_correct_file_skipped_without_network(srv, tmp_path, small):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "s.bin").write_bytes(small[0])
    run = segdl_get(srv.url("s.bin"), tmp_path, "-o", "s.bin", "--blake3", small[1])
    assert run.r["status"] == "skipped" and run.code == 0, run
    assert run.r["blake3"] == small[1]
    assert srv.bytes_sent("s.bin") == 0
    assert srv.requests() == []
    assert (dest / "s.bin").read_bytes() == small[0]


def test_existing_correct_file_skipped_name_from_url(srv, tmp_path, small):
    dest = tmp_path / "dl"
    dest.mkdir()
    (dest / "s.bin").write_bytes(small[0])
    run = segdl_get(srv.url("s.bin"), tmp_path, "--blake3", small[1])
    assert run.r["status"] == "skipped" and run.code == 0, run
    assert srv.bytes_sent("s.bin") <= 1  # at most the probe's one byte
    assert (dest / "s.bin").read_bytes() == small[0]


def test_published_sha256_is_not_journaled_as_the_users_expectation(srv, tmp_path, small):
    """A later re-run, resume or retry learns the server's digest again; a
    stale one kept as 'expected' would fail an updated file forever."""
    import hashlib
    import sqlite3

    run = segdl_get(srv.url("s.bin?repr_digest=ok"), tmp_path)
    assert_done(run, small[1], "s.bin")
    con = sqlite3.connect(tmp_path / "j.sqlite")
    [(expected, got)] = con.execute("SELECT expected_sha256, sha256 FROM files").fetchall()
    con.close()
    assert expected is None and got == hashlib.sha256(small[0]).hexdigest()
