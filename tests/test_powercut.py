"""Power cuts, not only kill -9: segdl on a filesystem that forgets every
write, name and rename that was not synced (tests/support/forgetfs.py), cut at
random instants and at chosen operations, remounted (the kernel's caches
go with the mount), checked by an oracle (tests/support/powercut.py), and run
again until the same command finishes."""

from __future__ import annotations

import os
import random
import subprocess
import zlib

import pytest

from helpers import SEGDL, json_lines
from powercut import (POINTS, ForgetfulMount, Job, check_after_cut, done_lines, power_trial, progress_trial,
                      segdl_env, unavailable)
from servers import PacedMirror
from segdl.engine.rules.ranges import MiB

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


def cut_then_check(fs: ForgetfulMount, base, sources: dict[str, bytes]) -> None:
    """Cut the power, mount again: every file of ``sources`` is under ``base``, whole."""
    fs.cut()
    fs.mount()
    for name, data in sources.items():
        assert (base / name).read_bytes() == data


def synced_parts(trace) -> set[str]:
    """The part files the forgetful daemon saw fsynced (its paths, from
    the FORGETFS_TRACE file)."""
    ops = (line.strip().split(" ", 1) for line in trace.read_text().splitlines())
    return {path for op, path in ops if op in ("fsync", "fdatasync") and path.endswith(".segdl-part")}


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


@pytest.mark.parametrize("seed, points", [
    # Exit 0, then a cut: the target folder and the journal were gone.
    # Folders made by mkdir -p were never fsynced into their parents, and
    # SQLite never syncs the folder of a new database file (fixed:
    # storage.make_dirs, Journal._sync_creation).
    (0, ["random"]),
    # A torn cut garbled WAL bytes that had been synced, losing a synced
    # commit: a bug of the filesystem's model, not segdl's (torn writes now
    # damage only the bytes written since the last sync).
    (2, None),
])
def test_replays_the_seeds_that_found_bugs(collection, tmp_path, seed, points):
    mirror, sources = collection
    r = power_trial(Job(mirror, sources), tmp_path, seed, points=points)
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
    # Each cut re-fetches at most the collection once, and a probe of each
    # file (it is smaller than the kill -9 bound;
    # test_power_cut_loses_about_a_second bounds it).
    assert r.redownloaded <= len(r.cuts) * (r.needed + len(sources) * MiB), describe(r)


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
        cut_then_check(fs, out, sources)
    finally:
        fs.unmount()


@pytest.mark.parametrize("seed", range(2))
def test_power_cut_loses_about_a_second_of_progress(tmp_path, seed):
    """A cut mid-download loses at most the progress since the last synced
    commit (the heartbeat's, once a second): compared with what the journal
    held at the kill (what a kill -9 leaves), and the re-run fetches only
    what the journal no longer claims."""
    t = progress_trial(tmp_path, seed, size=24 * MiB, rate=3 * MiB, connections=2, cut_window=(2.5, 3.5))
    assert t.where.startswith("t="), t  # the cut came mid-download
    assert not t.problems, t.problems
    assert t.at_kill >= 8 * MiB, t  # well under way
    assert t.lost <= 2 * t.per_second, (t.at_kill / MiB, t.after_cut / MiB)
    assert t.after_cut > 0
    assert t.final_rc == 0 and t.final_ok
    # The rest, plus what the kill found unsynced and the probe.
    assert t.fetched <= t.size - t.after_cut + 2 * MiB, (t.fetched / MiB, t.after_cut / MiB)


def test_commit_interval_is_the_progress_a_cut_can_lose(tmp_path):
    """With --commit-interval 600 nothing is synced to the journal before
    the cut: a kill -9 would keep the progress, a power cut loses it all
    (and the file still ends correct).  The heartbeat's synced commit is
    what the test above measures."""
    t = progress_trial(tmp_path, 0, size=24 * MiB, rate=3 * MiB, connections=2, cut_window=(2.5, 3.0),
                       extra=("--commit-interval", "600"))
    assert t.where.startswith("t=") and not t.problems, t
    # Under way (a kill -9 would keep what the journal held; 7 MiB by the
    # cut in a CI run under two test processes), and all of it lost.
    assert t.at_kill >= 4 * MiB and t.after_cut == 0, (t.at_kill / MiB, t.after_cut / MiB)
    assert t.final_rc == 0 and t.final_ok


# ------------------------------------------------------------- disk faults


def fault_run(collection, tmp_path, setup, expect_exit: int, expect_text: str, journal_too: bool = False):
    """A run under a disk fault: the documented exit code and message; after
    a cut the oracle finds nothing claimed that is not there; once the
    fault clears, the same command resumes and finishes.  ``journal_too``:
    the fault may reach the journal first (a full disk that holds it)."""
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
        if not failed and journal_too:
            # The journal, on the same full disk, may be the first to meet
            # the fault (about 1 run in 12): the run stops there, exit 6,
            # the journal named with the reason.
            assert "journal" in r.stderr and expect_text in r.stderr, (r.stdout, r.stderr)
        else:
            assert failed and all(expect_text in x["error"] for x in failed), (r.stdout, r.stderr)
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


@pytest.mark.parametrize("files", ["collection", "small_files"])
def test_eio_on_the_folders_fsync_claims_nothing_there(request, tmp_path, files):
    """A name is durable only once its folder is fsynced.  When that fails,
    no byte of a part file created there is claimed (the large files) and
    no file renamed there is reported done (the small ones, carried whole
    and renamed in batches): they fail (exit 6), and the same command then
    finishes them."""
    fault_run(request.getfixturevalue(files), tmp_path,
              lambda fs: fs.command(cmd="fault", op="fsyncdir", match="out", nth=1, count=1000),
              6, "cannot sync the folder")


def test_after_a_failed_folder_fsync_without_a_cut_the_same_command_keeps_the_files(small_files, tmp_path):
    """A folder fsync that fails after the renames (no power cut): those
    files fail (exit 6), though they are in place, whole; the same command
    then finds each one the file it verified (by its digest) and keeps it,
    rather than refusing it as one that "exists and differs"."""
    mirror, sources = small_files
    job = Job(mirror, sources, extra=("-j", "16", "--max-connections", "16"))
    fs = ForgetfulMount(tmp_path)
    out, journal = fs.mnt / "out", fs.mnt / "state" / "journal.sqlite"
    fs.mount()
    try:
        fs.command(cmd="fault", op="fsyncdir", match="out", nth=1, count=100000)
        r = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
        failed = [x for x in json_lines(r) if x["status"] == "failed"]
        assert r.returncode == 6 and failed, (r.returncode, r.stderr[-2000:])
        in_place = [x for x in failed if (out / os.path.basename(x["path"])).exists()]
        assert in_place, "no file was renamed before its folder's fsync failed"
        fs.command(cmd="clear")
        mirror.reset_access_log()
        again = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr[-2000:]
        for name, data in sources.items():
            assert (out / name).read_bytes() == data
        kept = {os.path.basename(x["path"]) for x in json_lines(again) if x["status"] == "skipped"}
        assert {os.path.basename(x["path"]) for x in in_place} <= kept
    finally:
        fs.unmount()


def test_disk_full_mid_file_fails_with_exit_6_and_resumes(collection, tmp_path):
    """A disk that overcommits (fallocate reserves nothing, as on
    thin-provisioned or copy-on-write storage) fills in the middle of a
    file."""
    fault_run(collection, tmp_path, lambda fs: fs.command(cmd="capacity", bytes=9 * MiB),
              6, "no space left on device", journal_too=True)


def test_disk_full_under_the_journal_is_exit_6_not_a_broken_journal(collection, tmp_path):
    """When the journal's own write meets the full disk, that is the disk's
    trouble (exit 6, "no space left"), not a journal to move aside (7);
    once space is back the same command finishes."""
    mirror, sources = collection
    job = Job(mirror, sources)
    fs = ForgetfulMount(tmp_path)
    out, journal = fs.mnt / "out", fs.mnt / "state" / "journal.sqlite"
    fs.mount()
    try:
        # The journal's WAL meets the full disk after its first few writes.
        fs.command(cmd="fault", op="write", match="journal.sqlite-wal", nth=40, count=100000, errno="ENOSPC")
        r = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
        said = " ".join((r.stderr + r.stdout).split())
        assert r.returncode == 6, (r.returncode, said)
        assert "no space left on device" in said and "move it aside" not in said
        fs.cut()
        fs.mount()  # the capacity limit goes with the old daemon
        again = subprocess.run(job.args(out), env=segdl_env(journal), capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        for name, data in sources.items():
            assert (out / name).read_bytes() == data
    finally:
        fs.unmount()


# ------------------------------------------------------------- many small files


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """120 files of about 4 KiB: a run finishes many files in each turn of
    the engine's loop, so their syncs, renames and journal rows go in
    batches (issue 19)."""
    root = tmp_path_factory.mktemp("powercut-small")
    rng = random.Random(19)
    sources = {f"s{i:03d}.bin": rng.randbytes(4096 + i) for i in range(120)}
    for name, data in sources.items():
        (root / name).write_bytes(data)
    with PacedMirror(root, rate=8 * MiB) as mirror:
        yield mirror, sources


@pytest.mark.parametrize("point", ["half", "rename-part-after", "fsyncdir-out", "journal-commit",
                                   "fsync-part-before-rename", "random"])
def test_a_batch_of_small_files_is_never_reported_before_it_is_durable(small_files, tmp_path, point):
    """Cuts while files finish in batches: every file a --json line called
    done is intact after the cut, the journal claims nothing that is not
    on disk, and the same command then finishes."""
    mirror, sources = small_files
    job = Job(mirror, sources, extra=("-j", "16", "--max-connections", "16"), duration=1.5)
    r = power_trial(job, tmp_path, stable_seed("small-" + point), points=[point])
    assert not r.problems, describe(r)
    assert r.final_rc == 0 and r.final_ok
    if point == "half":  # the cut came after half the files were reported done, not at the end
        assert r.cuts[0].startswith("half:after"), describe(r)


def test_small_files_on_fuse_are_fsynced_one_by_one(small_files, tmp_path, monkeypatch):
    """A FUSE file system's syncfs need not reach its daemon's disk, so a
    batch of small files there is fsynced file by file (not by one syncfs,
    as on ext4 or XFS): the daemon sees an fsync of each part file, and a
    cut after the run loses none of them."""
    mirror, sources = small_files
    trace = tmp_path / "ops.txt"
    monkeypatch.setenv("FORGETFS_TRACE", str(trace))  # (the daemon's operations, one a line)
    fs = ForgetfulMount(tmp_path)
    fs.mount()
    try:
        out = fs.mnt / "out"
        urls = [mirror.url(n) for n in sorted(sources)]
        r = subprocess.run([*SEGDL, "get", *urls, "-d", str(out), "-q", "-j", "16", "--max-connections", "16"],
                           env=segdl_env(fs.mnt / "j.sqlite"), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        synced = {os.path.basename(p) for p in synced_parts(trace)}
        assert synced == {n + ".segdl-part" for n in sources}, sorted(synced)[:5]
        cut_then_check(fs, out, sources)
    finally:
        fs.unmount()


def test_a_file_system_mounted_under_the_root_is_synced_file_by_file(tmp_path, monkeypatch):
    """One syncfs covers the root's file system only: files of a batch on a
    file system mounted under the root (the forgetful FUSE one here) are
    fsynced one by one, and a cut after their rename loses none of them."""
    from segdl.engine.disk import confine, storage

    trace = tmp_path / "ops.txt"
    monkeypatch.setenv("FORGETFS_TRACE", str(trace))
    root = tmp_path / "root"
    fs = ForgetfulMount(root)  # mounted at root/mnt
    fs.mount()
    tree = confine.Root(root)
    try:
        rng = random.Random(7)
        names = ["a.bin", "b.bin", "c.bin", "mnt/d.bin", "mnt/e.bin"]
        datas = {n: rng.randbytes(3000 + i) for i, n in enumerate(names)}
        results = storage.finalize_many([(tree, root / (n + ".segdl-part"), root / n, len(d), None, d)
                                         for n, d in datas.items()])
        assert all(isinstance(r, tuple) for r in results), results
        synced = synced_parts(trace)
        assert synced == {"/d.bin.segdl-part", "/e.bin.segdl-part"}, synced
        cut_then_check(fs, root, datas)
    finally:
        tree.close()
        fs.unmount()
