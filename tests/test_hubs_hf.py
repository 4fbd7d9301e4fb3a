"""hf:// against the local hub (tests/support/hubserver.py): listing, downloads
verified by sha256 / git blob sha1, the token seen by the hub and never
by its CDN nor in the journal or output, re-runs, a moved branch, the HF
cache as huggingface_hub reads it, errors and rate limits."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import SEGDL, journal_rows, json_lines, run_segdl
from hubserver import HubServer

TOKEN = "hf_s3cr3t_t0ken_value"
MiB = 1024 * 1024


def _data(n: int, seed: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


FILES = {
    "config.json": (b'{"model_type": "test"}\n', False),
    "README.md": (b"# a test model\n", False),
    "tokenizer/vocab.txt": (b"a\nb\nc\n", False),
    "weights/model-00001-of-00002.safetensors": (_data(3 * MiB + 17, 1), True),
    "weights/model-00002-of-00002.safetensors": (_data(200_000, 2), True),
}


@pytest.fixture
def hub():
    with HubServer() as srv:
        yield srv


def _env(hub, tmp_path, **extra):
    env = {"HF_ENDPOINT": hub.hub_url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_CACHE": str(tmp_path / "default-cache"),
           "COLUMNS": "400"}  # messages are checked whole, not as rich wraps them at 80
    env.update(extra)
    return env


def _no_token_anywhere(tmp_path: Path, *procs):
    for p in tmp_path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert TOKEN.encode() not in p.read_bytes(), p
    for proc in procs:
        assert TOKEN not in proc.stdout and TOKEN not in proc.stderr


def test_repo_downloads_verified_with_the_token_on_the_hub_only(hub, tmp_path):
    repo = hub.add_repo("org/model", FILES)
    big = hashlib.sha256(FILES["weights/model-00001-of-00002.safetensors"][0]).hexdigest()
    hub.range200_once.add(big)  # the CDN answers one ranged request with 200
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    # (--keep-headers: header values go to the journal; the hub's token is not one)
    p = run_segdl(["get", "hf://org/model", "-d", out, "--json", "--keep-headers"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    lines = json_lines(p)
    assert sorted(r["status"] for r in lines) == ["done"] * len(FILES)
    for path, (data, lfs) in FILES.items():
        assert (out / path).read_bytes() == data
    by_path = {Path(r["path"]).relative_to(out).as_posix(): r for r in lines}
    assert by_path["weights/model-00001-of-00002.safetensors"]["sha256"] == big

    # The journal pins the commit: every file URL carries it, and the job's source says it.
    sha = repo.branches["main"]
    assert all(f"/resolve/{sha}/" in r["url"] for r in lines)
    spec = journal_rows(journal, "SELECT json_extract(spec, '$.source.commit') FROM job_specs")
    assert spec == [(sha,)]
    # git blob sha1 of the files kept in git is recorded as verified
    gits = dict(journal_rows(journal, "SELECT path, git_sha1 FROM files WHERE git_sha1 IS NOT NULL"))
    assert gits[str(out / "config.json")] == hashlib.sha1(b"blob %d\0" % len(FILES["config.json"][0])
                                                          + FILES["config.json"][0]).hexdigest()

    # Authorization: on every request to the hub, never on one to the CDN.
    hub_reqs, cdn_reqs = hub.requests("hub"), hub.requests("cdn")
    assert hub_reqs and all(r["auth"] == f"Bearer {TOKEN}" for r in hub_reqs)
    assert len(cdn_reqs) >= 3 and all(r["auth"] is None for r in cdn_reqs)
    # One request to the hub per file (its download), none to probe it
    # (the file the CDN answered with 200 starts over once: a second); the
    # tree came over several pages (2 entries a page).
    resolves = [r["path"].split(f"/resolve/{sha}/", 1)[1] for r in hub_reqs if "/resolve/" in r["path"]]
    assert sorted(resolves) == sorted([*FILES, "weights/model-00001-of-00002.safetensors"])
    assert "the server ignored the Range header" in p.stderr
    assert len([r for r in hub_reqs if "/tree/" in r["path"]]) >= 3
    assert "Mozilla" not in hub_reqs[0]["ua"]
    _no_token_anywhere(tmp_path, p)

    # A re-run fetches nothing: no file request to either host.
    hub.reset_log()
    again = run_segdl(["get", "hf://org/model", "-d", out, "--json"], journal, env=_env(hub, tmp_path))
    assert again.returncode == 0, again.stderr
    assert sorted(r["status"] for r in json_lines(again)) == ["skipped"] * len(FILES)
    assert not hub.requests("cdn") and not hub.requests("hub", "/resolve/")
    _no_token_anywhere(tmp_path, again)


def _ls(hub, tmp_path, ref, *args, env=None):
    p = run_segdl(["ls", ref, *args, "--json"], tmp_path / "j.sqlite", env=env or _env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    return {r["path"]: r for r in json_lines(p)}


def test_moved_main_fetches_only_the_changed_files_and_says_so(hub, tmp_path):
    repo = hub.add_repo("org/model", FILES)
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    before = _ls(hub, tmp_path, "hf://org/model", "-d", out)
    assert {r["state"] for r in before.values()} == {"missing"}
    assert run_segdl(["get", "hf://org/model", "-d", out, "-q"], journal, env=_env(hub, tmp_path)).returncode == 0
    old = repo.branches["main"]
    changed = dict(FILES)
    changed["config.json"] = (b'{"model_type": "test", "v": 2}\n', False)
    changed["weights/model-00002-of-00002.safetensors"] = (_data(200_000, 3), True)
    changed["added.txt"] = (b"new\n", False)
    new = repo.commit(changed)
    states = _ls(hub, tmp_path, "hf://org/model", "-d", out)
    assert {k for k, r in states.items() if r["state"] != "here"} == {
        "config.json", "weights/model-00002-of-00002.safetensors", "added.txt"}
    assert states["weights/model-00001-of-00002.safetensors"]["state"] == "here"

    hub.reset_log()
    p = run_segdl(["get", "hf://org/model", "-d", out, "--json"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    status = {Path(r["path"]).relative_to(out).as_posix(): r["status"] for r in json_lines(p)}
    assert status == {"config.json": "done", "weights/model-00002-of-00002.safetensors": "done", "added.txt": "done",
                      "README.md": "skipped", "tokenizer/vocab.txt": "skipped",
                      "weights/model-00001-of-00002.safetensors": "skipped"}
    assert f"moved from {old[:12]} to {new[:12]}" in p.stderr and "3 of 6 file(s) changed or new" in p.stderr
    assert p.stderr.count("changed on the hub since it was downloaded; updating it") == 2  # once per file
    fetched = {r["path"].rsplit("/resolve/", 1)[1].split("/", 1)[1] for r in hub.requests("hub", "/resolve/")}
    assert fetched == {"config.json", "weights/model-00002-of-00002.safetensors", "added.txt"}
    for path, (data, _) in changed.items():
        assert (out / path).read_bytes() == data
    assert {r["state"] for r in _ls(hub, tmp_path, "hf://org/model", "-d", out).values()} == {"here"}


def test_hf_cache_is_what_huggingface_hub_reads(hub, tmp_path):
    from huggingface_hub import hf_hub_download, snapshot_download

    repo = hub.add_repo("org/model", FILES)
    cache, journal = tmp_path / "cache", tmp_path / "j.sqlite"
    p = run_segdl(["get", "hf://org/model", "--hf-cache", cache, "-q"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    sha = repo.branches["main"]
    folder = cache / "models--org--model"
    assert (folder / "refs" / "main").read_text() == sha
    link = folder / "snapshots" / sha / "weights" / "model-00002-of-00002.safetensors"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    for name, (data, _) in FILES.items():
        got = hf_hub_download("org/model", name, cache_dir=str(cache), local_files_only=True)
        assert Path(got).read_bytes() == data
        got = hf_hub_download("org/model", name, revision=sha, cache_dir=str(cache), local_files_only=True)
        assert Path(got).read_bytes() == data
    snap = Path(snapshot_download("org/model", cache_dir=str(cache), local_files_only=True))
    assert sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()) == sorted(FILES)

    # The default cache ($HF_HUB_CACHE) with a bare --hf-cache, and the
    # same files under -d: linked from what is here, nothing downloaded.
    hub.reset_log()
    p = run_segdl(["get", "hf://org/model", "--hf-cache"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "default-cache" / "models--org--model" / "refs" / "main").read_text() == sha
    out = tmp_path / "out"
    p = run_segdl(["get", "hf://org/model", "-d", out, "--json"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    assert not hub.requests("cdn") and not hub.requests("hub", "/resolve/")
    assert "linked, not downloaded" in p.stderr
    blob = folder / "blobs" / hashlib.sha256(FILES["weights/model-00002-of-00002.safetensors"][0]).hexdigest()
    assert os.stat(out / "weights/model-00002-of-00002.safetensors").st_ino == os.stat(blob).st_ino  # a hard link
    assert (out / "config.json").read_bytes() == FILES["config.json"][0]


def test_huggingface_hub_downloads_from_the_stand_in(hub, tmp_path):
    """huggingface_hub itself (the benchmark's rival) reads the stand-in
    online: siblings carry lfs.pointerSize, a file's metadata comes from a
    HEAD, LFS files come from the CDN."""
    import sys

    repo = hub.add_repo("org/model", FILES)
    code = ("import sys; from huggingface_hub import snapshot_download as s; "
            "print(s('org/model', cache_dir=sys.argv[1]))")
    env = {**os.environ, **_env(hub, tmp_path), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    snap = Path(p.stdout.strip().splitlines()[-1])
    assert snap.name == repo.branches["main"]
    for path, (data, _) in FILES.items():
        assert (snap / path).read_bytes() == data
    assert {r["method"] for r in hub.requests("hub", "/resolve/")} == {"HEAD", "GET"}
    assert len(hub.requests("cdn", "/lfs/")) == 2  # the two LFS files, from the CDN


def test_renamed_repo_datasets_subdir_and_globs(hub, tmp_path):
    hub.add_repo("org/data", {"train/a.json": (b"[1]", False), "train/skip/b.json": (b"[2]", False),
                              "train/c.parquet": (_data(5000, 4), True), "test/d.json": (b"[3]", False)},
                 kind="datasets")
    hub.renamed["old/data"] = "org/data"
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    p = run_segdl(["get", "hf://datasets/old/data/train", "--include", "*.json", "--exclude", "train/skip/",
                   "-d", out, "--json"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    assert sorted(Path(r["path"]).relative_to(out).as_posix() for r in json_lines(p)) == ["train/a.json"]
    assert hub.requests("hub", "/api/datasets/old/data/revision/main")  # answered with a relative 307 ...
    assert hub.requests("hub", "/api/datasets/org/data/revision/main")  # ... that was followed


@pytest.mark.parametrize("ref, code, words", [
    ("hf://org/nothing", 8, "hf://org/nothing@main: repository not found"),
    ("hf://org/model@nope", 9, "revision not found"),
    ("hf://org/model/no/such/dir", 10, "file not found"),
])
def test_listing_errors_name_the_repo_with_their_exit_code(hub, tmp_path, ref, code, words):
    hub.add_repo("org/model", FILES)
    p = run_segdl(["get", ref, "-d", tmp_path / "out"], tmp_path / "j.sqlite", env=_env(hub, tmp_path))
    assert p.returncode == code, p.stderr
    assert words in p.stderr
    _no_token_anywhere(tmp_path, p)


def test_gated_repo_fails_each_file_with_its_code(hub, tmp_path):
    repo = hub.add_repo("org/gated", {"a.json": (b"{}", False)})
    repo.gated_token = "someone-else"
    p = run_segdl(["get", "hf://org/gated", "-d", tmp_path / "out", "--json"], tmp_path / "j.sqlite",
                  env=_env(hub, tmp_path))
    assert p.returncode == 11, p.stderr
    (line,) = json_lines(p)
    assert line["status"] == "failed" and line["exit_code"] == 11 and "gated repository" in line["error"]


def test_429_with_ratelimit_waits_as_asked_and_is_bounded(hub, tmp_path):
    hub.add_repo("org/model", {"a.json": (b"{}", False)})
    hub.rate_limit_once.add("/api/models/org/model/revision/main")
    p = run_segdl(["get", "hf://org/model", "-d", tmp_path / "out", "-q"], tmp_path / "j.sqlite",
                  env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    first, second = hub.requests("hub", "/revision/main")
    assert second["time"] - first["time"] >= 0.9  # t=1
    # Always rate-limited (t=0): a bounded number of tries, then exit 13.
    hub.rate_limit_always.add("/api/models/org/model/revision/main")
    hub.reset_log()
    p = run_segdl(["get", "hf://org/model", "-d", tmp_path / "out2"], tmp_path / "j.sqlite", env=_env(hub, tmp_path))
    assert p.returncode == 13, p.stderr
    assert "rate-limited" in p.stderr and len(hub.requests("hub", "/revision/main")) == 6


def test_file_errors_are_each_files_own(hub, tmp_path):
    """A file the tree lists whose resolve says EntryNotFound fails alone
    (exit 10, named); a resolve answered 429 with RateLimit t=1 is waited
    for and retried."""
    repo = hub.add_repo("org/model", FILES)
    sha = repo.branches["main"]
    hub.vanished.add("README.md")
    hub.rate_limit_once.add(f"/org/model/resolve/{sha}/config.json")
    out = tmp_path / "out"
    p = run_segdl(["get", "hf://org/model", "-d", out, "--json"], tmp_path / "j.sqlite", env=_env(hub, tmp_path))
    assert p.returncode == 10, p.stderr
    by = {Path(r["path"]).name: r for r in json_lines(p)}
    assert by["README.md"]["status"] == "failed" and by["README.md"]["exit_code"] == 10
    assert "README.md" in by["README.md"]["error"] and "file not found" in by["README.md"]["error"]
    assert {r["status"] for n, r in by.items() if n != "README.md"} == {"done"}
    first, second = [r for r in hub.requests("hub") if r["path"].endswith("/config.json")]
    assert second["time"] - first["time"] >= 0.9


@pytest.mark.parametrize("hf_cache", [False, True])
def test_token_file_partial_ls_and_a_resumed_job_reads_the_token_again(hub, tmp_path, hf_cache):
    """The token from $HF_HOME/token; a job killed mid-file shows as
    partial; run again, it gets the token from the environment (the
    journal never had it) and finishes (with --hf-cache: and links the
    snapshot, which huggingface_hub reads)."""
    repo = hub.add_repo("org/gated", {"big.safetensors": (_data(6 * MiB, 5), True), "a.json": (b"{}", False)})
    repo.gated_token = TOKEN
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "token").write_text(TOKEN + "\n")
    env = _env(hub, tmp_path, HF_TOKEN="")
    hub.cdn_rate = 1 * MiB
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    where = ["--hf-cache", str(out)] if hf_cache else ["-d", str(out)]
    proc = subprocess.Popen([*SEGDL, "get", "hf://org/gated", *where, "-x", "2", "-q"],
                            env={**os.environ, "SEGDL_JOURNAL": str(journal), **env}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = journal_rows(journal, "SELECT COALESCE(SUM(done), 0) FROM segments s JOIN files f ON f.id = s.file_id "
                                         f"WHERE f.size = {6 * MiB}")
            if done and done[0][0] >= 1 * MiB:
                break
            time.sleep(0.1)
        else:
            pytest.fail("no durable progress within 30 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    states = _ls(hub, tmp_path, "hf://org/gated", *where, env=env)
    big = repo.commits[repo.branches["main"]]["big.safetensors"][0]
    name = f"models--org--gated/blobs/{hashlib.sha256(big).hexdigest()}" if hf_cache else "big.safetensors"
    assert states[name]["state"] == "partial" and 0 < states[name]["done"] < 6 * MiB
    hub.cdn_rate = 0
    p = run_segdl(["resume", "--json"], journal, env=env)
    assert p.returncode == 0, p.stderr
    assert (out / name).read_bytes() == big
    if hf_cache:
        from huggingface_hub import hf_hub_download

        got = hf_hub_download("org/gated", "big.safetensors", cache_dir=str(out), local_files_only=True)
        assert Path(got).read_bytes() == big
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in hub.requests("hub"))
    assert not [r for r in hub.requests("cdn") if r["auth"]]
    assert {r["state"] for r in _ls(hub, tmp_path, "hf://org/gated", *where, env=env).values()} == {"here"}
    _no_token_anywhere(tmp_path / "out", p)
    assert TOKEN.encode() not in journal.read_bytes()


def test_ls_of_a_manifest(hub, tmp_path):
    """ls -i FILE: a manifest's files, before and after get -i."""
    repo = hub.add_repo("org/model", FILES)
    sha = repo.branches["main"]
    data = FILES["config.json"][0]
    import blake3

    manifest = tmp_path / "m.json"
    manifest.write_text(__import__("json").dumps({"files": [
        {"url": f"{hub.hub_url}/org/model/resolve/{sha}/config.json", "path": "c/config.json",
         "blake3": blake3.blake3(data).hexdigest()},
        {"url": f"{hub.hub_url}/org/model/resolve/{sha}/README.md", "path": "readme.md"}]}))
    out, journal = tmp_path / "out", tmp_path / "j.sqlite"
    p = run_segdl(["ls", "-i", manifest, "-d", out, "--json"], journal)
    assert p.returncode == 0, p.stderr
    assert [(r["path"], r["state"]) for r in json_lines(p)] == [("c/config.json", "missing"), ("readme.md", "missing")]
    assert run_segdl(["get", "-i", manifest, "-d", out, "-q"], journal).returncode == 0
    p = run_segdl(["ls", "-i", manifest, "-d", out, "--json"], journal)
    assert [(r["path"], r["state"]) for r in json_lines(p)] == [("c/config.json", "here"), ("readme.md", "here")]
    p = run_segdl(["ls", "https://example.org/x.bin"], journal)
    assert p.returncode == 2 and "not a hub reference" in p.stderr


def test_a_journal_of_the_schema_before_hubs_is_brought_up_to_date(hub, tmp_path):
    """A journal written by the segdl before this one (no git sha1
    columns) takes a hub reference: ls and get migrate it, not refuse it."""
    import sqlite3

    hub.add_repo("org/model", {"a.json": (b"{}", False)})
    journal = tmp_path / "j.sqlite"
    assert run_segdl(["status"], journal).returncode in (0, 7)  # (7: no journal yet)
    from segdl.engine.journal.writer import Journal

    Journal(journal).close()
    con = sqlite3.connect(journal)
    con.executescript("""DROP INDEX files_git_sha1; ALTER TABLE files DROP COLUMN git_sha1;
                         ALTER TABLE files DROP COLUMN expected_git_sha1;
                         DELETE FROM _sqlite_migrations WHERE name = 'm004_hub_sources';""")
    con.close()
    p = run_segdl(["ls", "hf://org/model", "-d", tmp_path / "out", "--json"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    assert [r["state"] for r in json_lines(p)] == ["missing"]
    p = run_segdl(["get", "hf://org/model", "-d", tmp_path / "out", "-q"], journal, env=_env(hub, tmp_path))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "a.json").read_bytes() == b"{}"


def test_content_other_than_listed_is_a_hash_mismatch(hub, tmp_path):
    """A file kept in git checked by its blob sha1, an LFS file by its
    sha256: served with one byte changed, each is hash_mismatch (exit 4),
    its data left in the part file, the others done."""
    hub.add_repo("org/model", FILES)
    big = hashlib.sha256(FILES["weights/model-00002-of-00002.safetensors"][0]).hexdigest()
    hub.corrupt |= {"config.json", big}
    out = tmp_path / "out"
    p = run_segdl(["get", "hf://org/model", "-d", out, "--json"], tmp_path / "j.sqlite", env=_env(hub, tmp_path))
    assert p.returncode == 4, p.stderr
    by = {Path(r["path"]).name: r for r in json_lines(p)}
    assert by["config.json"]["status"] == "hash_mismatch" and "git blob sha1" in by["config.json"]["error"]
    assert by["model-00002-of-00002.safetensors"]["status"] == "hash_mismatch"
    assert big in by["model-00002-of-00002.safetensors"]["error"]
    assert not (out / "config.json").exists() and (out / "config.json.segdl-part").exists()
    assert {r["status"] for n, r in by.items() if n not in ("config.json", "model-00002-of-00002.safetensors")} == {"done"}
