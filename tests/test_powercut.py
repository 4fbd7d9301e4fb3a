"""Power cuts, not only kill -9: segdl on a filesystem that forgets every
write, name and rename that was not synced (tests/forgetfs.py), cut at
random instants and at chosen operations, remounted (the kernel's caches
go with the mount), checked by an oracle (tests/powercut.py), and run
again until the same command finishes."""

from __future__ import annotations

import os
import random
import subprocess
import zlib

import pytest

from helpers import SEGDL, json_lines
from powercut import (POINTS, ForgetfulMount, Job, check_after_cut, claimed_bytes, done_lines, power_trial,
                      run_until_cut, segdl_env, unavailable)
from servers import PacedMirror
from segdl.engine.ranges import MiB

why = unavailable()
pytestmark = pytest.mark.skipif(why is not None, reason=why or "")

SIZES = [3 * MiB, 5 * MiB, 1 * MiB, 6 * MiB]


def sources_for(seed: int, sizes) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"f{i}.bin": rng.randbytes(size) for i, size in enumerate(sizes)}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Four files (1-6 MiB) on a paced mirror (8 MiB/s per connection): a
    run takes about a second, so random cuts land in every phase."""
    root = tmp_path_factory.mktemp("powercut-mirror")
    sources = sources_for(1, SIZES)
    for name, data in sources.items():
        (root / name).write_bytes(data)
    with PacedMirror(root, rate=8 * MiB) as mirror:
        yield mirror, sources


def describe(r) -> str:
    lines = [f"seed {r.seed}: cuts {r.cuts}, exits {r.rcs}, final {r.final_rc}"]
    lines += [f"  {p}" for p in r.problems]
    return "\n".join(lines)


def stable_seed(text: str) -> int:
    return zlib.crc32(text.encode())


@pytest.mark.parametrize("point", [name for name, _ in POINTS])
def test_cut_at_each_point_then_the_same_command_finishes(collection, tmp_path, point):
    """One cut at each chosen point (random instants, half the collection
    done, the k-th fdatasync, around the rename, a journal commit, a WAL
    checkpoint), then the same command: exit 0, every file correct, and
    after every cut the oracle finds the journal consistent and truthful."""
    mirror, sources = collection
    r = power_trial(Job(mirror, sources), tmp_path, stable_seed(point), points=[point])
    assert not r.problems, describe(r)
    assert r.final_rc == 0 and r.final_ok


@pytest.mark.parametrize("mode", ["direct", "buffered"])
@pytest.mark.parametrize("seed", range(5))
def test_up_to_three_cuts_then_the_same_command_finishes(collection, tmp_path, seed, mode):
    """Up to three cuts per trial at points the seed picks (a quarter of
    them torn: half the unsynced pages survive, some garbled), with both
    write paths: O_DIRECT (FUSE takes it) and the page cache."""
    mirror, sources = collection
    extra = () if mode == "direct" else ("--no-direct-io",)
    r = power_trial(Job(mirror, sources, extra=extra), tmp_path, seed * 7919 + len(mode))
    assert not r.problems, describe(r)
    assert r.final_rc == 0 and r.final_ok
    # Each cut re-fetches at most the collection once (it is smaller than
    # the kill -9 bound; test_power_cut_loses_about_a_second bounds it).
    assert r.redownloaded <= len(r.cuts) * r.needed, describe(r)


@pytest.mark.parametrize("mode", ["direct", "buffered"])
def test_both_write_paths_run_on_the_forgetful_filesystem(collection, tmp_path, mode):
    """FUSE takes O_DIRECT, so the direct path is what the trials test by
    default; --no-direct-io is the page-cache path.  The daemon counts the
    O_DIRECT opens it sees."""
    mirror, sources = collection
    fs = ForgetfulMount(tmp_path)
    fs.mount()
    try:
        out = fs.mnt / "out"
        extra = [] if mode == "direct" else ["--no-direct-io"]
        urls = [mirror.url(n) for n in sorted(sources)]
        r = subprocess.run([*SEGDL, "get", *urls, "-d", str(out), "--json", *extra],
                           env=segdl_env(fs.mnt / "j.sqlite"), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        direct_opens = fs.command(cmd="stats")["counts"].get("open_direct", 0)
        assert (direct_opens > 0) == (mode == "direct"), direct_opens
        assert "O_DIRECT" not in r.stderr  # no fallback message: the file system took it
        fs.cut()
        fs.mount()
        for name, data in sources.items():
            assert (out / name).read_bytes() == data
    finally:
        fs.unmount()


@pytest.mark.parametrize("seed", range(2))
def test_power_cut_loses_about_a_second_of_progress(tmp_path, seed):
    """A cut mid-download loses at most the progress since the last synced
    commit (the heartbeat's, once a second): compared with what the journal
    held at the kill (what a kill -9 leaves), and the re-run fetches only
    what the journal no longer claims."""
    rng = random.Random(seed)
    root = tmp_path / "mirror"
    root.mkdir()
    size, rate, connections = 24 * MiB, 3 * MiB, 2
    data = rng.randbytes(size)
    (root / "big.bin").write_bytes(data)
    fs = ForgetfulMount(tmp_path / "fs")
    out, journal = fs.mnt / "out", fs.mnt / "state" / "journal.sqlite"
    with PacedMirror(root, rate=rate) as mirror:
        job = Job(mirror, {"big.bin": data}, extra=("-x", str(connections)))
        fs.mount()
        try:
            at_kill = []
            rc, _, where = run_until_cut(job.args(out), segdl_env(journal), fs, rng.uniform(2.5, 3.5), None, 60,
                                         None, out, before_cut=lambda: at_kill.append(
                                             claimed_bytes(journal, tmp_path / "scratch-kill")))
            assert rc is None and where.startswith("t="), where  # the cut came mid-download
            fs.mount()
            after = claimed_bytes(journal, tmp_path / "scratch-cut")
            per_second = rate * connections
            assert at_kill[0] >= 8 * MiB, at_kill  # well under way
            assert at_kill[0] - after <= 2 * per_second, (at_kill[0] / MiB, after / MiB)
            assert after > 0
            check = check_after_cut(fs.mnt, journal, out, job.sources, set(), tmp_path / "scratch-check")
            assert not check.problems, check.problems
            mirror.reset_access_log()
            r = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert (out / "big.bin").read_bytes() == data
            fetched = job.sent()
            # The rest, plus what the kill found unsynced and the probe.
            assert fetched <= size - after + 2 * MiB, (fetched / MiB, after / MiB)
        finally:
            fs.unmount()


# ------------------------------------------------------------- disk faults


def fault_run(collection, tmp_path, setup, expect_exit: int, expect_text: str):
    """A run under a disk fault: the documented exit code and message; after
    a cut the oracle finds nothing claimed that is not there; once the
    fault clears, the same command resumes and finishes."""
    mirror, sources = collection
    job = Job(mirror, sources)
    fs = ForgetfulMount(tmp_path)
    out, journal = fs.mnt / "out", fs.mnt / "state" / "journal.sqlite"
    fs.mount()
    try:
        setup(fs)
        r = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
        assert r.returncode == expect_exit, (r.returncode, r.stderr, r.stdout)
        failed = [x for x in json_lines(r) if x["status"] == "failed"]
        assert failed and all(expect_text in x["error"] for x in failed), r.stdout
        said = done_lines(r.stdout, out)
        fs.cut()  # whatever the fault left unsynced is gone now
        fs.mount()
        check = check_after_cut(fs.mnt, journal, out, sources, said, tmp_path / "scratch")
        assert not check.problems, check.problems
        mirror.reset_access_log()
        again = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        for name, data in sources.items():
            assert (out / name).read_bytes() == data
        # Resumed, not restarted: the files already done are not fetched again.
        assert job.sent() <= job_bytes(sources) - sum(len(sources[n]) for n in said) + len(sources) * MiB
    finally:
        fs.unmount()


def job_bytes(sources) -> int:
    return sum(len(b) for b in sources.values())


def test_eio_on_a_write_fails_that_file_with_exit_6_and_resumes(collection, tmp_path):
    fault_run(collection, tmp_path,
              lambda fs: fs.command(cmd="fault", op="write", match="f3.bin.segdl-part", nth=5, count=1000),
              6, "Input/output error")


def test_eio_on_fdatasync_is_never_claimed_and_resumes(collection, tmp_path):
    """fsyncgate: after a failed fdatasync the pages are clean but not on
    disk (the filesystem drops them, as Linux does); the journal must not
    claim them, and no later sync may be taken as covering them."""
    fault_run(collection, tmp_path,
              lambda fs: fs.command(cmd="fault", op="fdatasync", match="f1.bin.segdl-part", nth=1, count=1),
              6, "fdatasync failed")


def test_disk_full_mid_file_fails_with_exit_6_and_resumes(collection, tmp_path):
    """A disk that overcommits (fallocate reserves nothing, as on
    thin-provisioned or copy-on-write storage) fills in the middle of a
    file."""
    fault_run(collection, tmp_path, lambda fs: fs.command(cmd="capacity", bytes=9 * MiB),
              6, "no space left on device")
