"""Nothing is written outside a root (issue 21, findings 1-3): a symlink
planted in place of a part file, a symlinked folder that leads out of the
target folder, a hard link in place of a part file, the HF cache's links,
and ``segdl serve --socket`` over a file that is not a socket.  Each
against a real ``segdl get`` or ``segdl serve`` and a mirror on 127.0.0.1;
the refused file fails alone (exit 2), the others of the job finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import SEGDL, json_lines, run_segdl
from servers import MiB, FaultServer

PRECIOUS = b"precious bytes\n"  # 15 bytes


@pytest.fixture
def mirror():
    with FaultServer() as srv:
        for name, size in (("victim.bin", 8 * MiB), ("gone.bin", 64 * 1024), ("other.bin", 3 * MiB),
                           ("x.bin", 2 * MiB), ("y.bin", 100_000), ("z.bin", 70_000), ("hard.bin", 2 * MiB)):
            srv.add(name, os.urandom(size))
        yield srv


@pytest.fixture
def outside(tmp_path):
    """A folder next to the root, with a file that must stay as it is."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "precious.txt").write_bytes(PRECIOUS)
    return d


def untouched(outside: Path) -> None:
    assert (outside / "precious.txt").read_bytes() == PRECIOUS
    assert sorted(p.relative_to(outside).as_posix() for p in outside.rglob("*")) == ["precious.txt"]


def by_name(lines: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in lines}


# ------------------------------------------------- 1. a symlink as the part file


def test_get_refuses_a_symlink_in_place_of_a_part_file(mirror, outside, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "victim.bin.segdl-part").symlink_to("../outside/precious.txt")
    (root / "gone.bin.segdl-part").symlink_to("../outside/new.txt")  # dangling
    # A hard link to the outside file: a regular file, but writing it would write that one.
    os.link(outside / "precious.txt", root / "hard.bin.segdl-part")
    p = run_segdl(["get", mirror.url("victim.bin"), mirror.url("gone.bin"), mirror.url("hard.bin"),
                   mirror.url("other.bin"), "-d", root, "--json", "-x", "2"], tmp_path / "j.sqlite")
    lines = by_name(json_lines(p))
    assert p.returncode == 2, p.stderr
    for name in ("victim.bin", "gone.bin", "hard.bin"):
        assert lines[name]["status"] == "failed" and lines[name]["exit_code"] == 2, lines[name]
    assert "symbolic link" in lines["victim.bin"]["error"] and "symbolic link" in lines["gone.bin"]["error"]
    assert "hard link" in lines["hard.bin"]["error"]
    assert lines["other.bin"]["status"] == "done"
    assert (root / "other.bin").read_bytes() == mirror._get_blob("other.bin").data
    untouched(outside)
    assert os.stat(outside / "precious.txt").st_nlink == 2  # the planted link is left alone
    # gone.bin (64 KiB) came whole with its probe: its part file is written
    # off the loop, with its rename, and refused there the same way.
    assert not os.path.lexists(outside / "new.txt")
    for name in ("victim.bin", "gone.bin", "hard.bin"):
        assert not os.path.lexists(root / name)


def test_serve_refuses_a_symlink_in_place_of_a_part_file(mirror, outside, tmp_path):
    from serving import Serve

    serve = Serve(tmp_path, "-x", "2")
    serve.out.mkdir(parents=True)
    (serve.out / "victim.bin.segdl-part").symlink_to("../outside/precious.txt")
    serve.start()
    try:
        status, body = serve.call("POST", "/jobs", {"urls": [mirror.url("victim.bin"), mirror.url("other.bin")]})
        assert status == 201, body
        files = {Path(f["path"]).name: f for f in serve.wait_files(body["job"], states=("done", "failed"))}
        assert files["victim.bin"]["state"] == "failed" and files["victim.bin"]["exit_code"] == 2
        assert "symbolic link" in files["victim.bin"]["error"]
        assert files["other.bin"]["state"] == "done"
        untouched(outside)
        assert not os.path.lexists(serve.out / "victim.bin")
    finally:
        serve.stop()


# ------------------------------------------------- 2. a symlinked folder that leads out


def _manifest(mirror) -> dict:
    return {"files": [{"url": mirror.url("x.bin"), "path": "evil/x.bin"},
                      {"url": mirror.url("y.bin"), "path": "evil/deeper/y.bin"},
                      {"url": mirror.url("other.bin"), "path": "fine/other.bin"}]}


def _aria2(mirror) -> str:
    return f"{mirror.url('z.bin')}\n  dir=evil\n  out=z.bin\n{mirror.url('x.bin')}\n  out=x.bin\n"


def test_get_refuses_a_folder_that_leads_outside(mirror, outside, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "evil").symlink_to("../outside")
    (root / "inner").mkdir()
    (root / "alias").symlink_to("inner")  # a link that stays under the root is fine
    m = _manifest(mirror)
    m["files"].append({"url": mirror.url("gone.bin"), "path": "alias/gone.bin"})
    (tmp_path / "m.json").write_text(json.dumps(m))
    p = run_segdl(["get", "-i", tmp_path / "m.json", "-d", root, "--json", "-x", "2"], tmp_path / "j.sqlite")
    lines = {Path(r["path"]).relative_to(root).as_posix(): r for r in json_lines(p)}
    assert p.returncode == 2, p.stderr
    for rel in ("evil/x.bin", "evil/deeper/y.bin"):
        assert lines[rel]["status"] == "failed" and lines[rel]["exit_code"] == 2
        assert "leads outside" in lines[rel]["error"], lines[rel]
    assert lines["fine/other.bin"]["status"] == "done" and lines["alias/gone.bin"]["status"] == "done"
    assert (root / "inner" / "gone.bin").read_bytes() == mirror._get_blob("gone.bin").data
    untouched(outside)

    (tmp_path / "in.txt").write_text(_aria2(mirror))
    p = run_segdl(["get", "-i", tmp_path / "in.txt", "-d", root, "--json"], tmp_path / "j2.sqlite")
    lines = by_name(json_lines(p))
    assert p.returncode == 2 and lines["z.bin"]["exit_code"] == 2 and "leads outside" in lines["z.bin"]["error"]
    assert lines["x.bin"]["status"] == "done"
    untouched(outside)


def test_serve_refuses_a_folder_that_leads_outside(mirror, outside, tmp_path):
    from serving import Serve

    serve = Serve(tmp_path, "-x", "2")
    serve.out.mkdir(parents=True)
    (serve.out / "evil").symlink_to("../outside")
    serve.start()
    try:
        for job in ({"manifest": _manifest(mirror)}, {"aria2": _aria2(mirror)}):
            status, body = serve.call("POST", "/jobs", job)
            assert status == 201, body
            files = serve.wait_files(body["job"], states=("done", "failed"))
            for f in files:
                rel = Path(f["path"]).relative_to(os.path.realpath(serve.out)).as_posix()
                if rel.startswith("evil/"):
                    assert f["state"] == "failed" and f["exit_code"] == 2 and "leads outside" in f["error"], f
                else:
                    assert f["state"] == "done", f
            assert any(f["state"] == "failed" for f in files) and any(f["state"] == "done" for f in files)
        untouched(outside)
        status, body = serve.call("POST", "/jobs", {"urls": [mirror.url("x.bin")], "dest": "evil"})
        assert status == 400  # as before: a dest outside the roots
    finally:
        serve.stop()


def test_the_portable_walk_refuses_the_same(outside, tmp_path):
    """Where the kernel has no openat2, the folders are opened one by one:
    the same refusals, on the same folders."""
    from segdl.engine.disk import confine
    from segdl.engine.values.errors import UnsafePathError

    root = tmp_path / "root"
    (root / "inner").mkdir(parents=True)
    (root / "evil").symlink_to("../outside")
    (root / "abs").symlink_to(outside)
    (root / "alias").symlink_to("inner")
    (root / "inner" / "x.part").symlink_to("../../outside/precious.txt")
    for openat2 in (True, False):
        confine.use_openat2(openat2)
        tree = confine.Root(root)
        try:
            for rel in ("evil/a.bin", "abs/a.bin", "evil/deeper/a.bin", "inner/x.part"):
                with pytest.raises(UnsafePathError):
                    tree.open_file(root / rel, os.O_RDWR | os.O_CREAT)
            fd, _ = tree.open_file(root / "alias" / "new" / "ok.bin", os.O_RDWR | os.O_CREAT)
            os.close(fd)
            assert (root / "inner" / "new" / "ok.bin").is_file()
            (root / "inner" / "new" / "ok.bin").unlink()
        finally:
            tree.close()
            confine.use_openat2(True)
    untouched(outside)


def test_a_part_file_swapped_while_it_downloads_is_neither_written_nor_renamed(outside, tmp_path):
    """Between the coordinator creating a part file and a worker opening it
    by name, or its rename, someone puts a symlink in its place: the
    worker refuses to write it, the rename refuses to move it, and the
    final name is not a symlink."""
    from segdl.engine.disk import confine, storage
    from segdl.engine.values.errors import UnsafePathError

    root = tmp_path / "root"
    tree = confine.Root(root)
    part, final = root / "sub" / "a.bin.segdl-part", root / "sub" / "a.bin"
    held = storage.lock_part(tree, part)
    try:
        storage.prepare(held, 4096, keep=False)
        h = storage.open_for_write(str(part), expect=held.ident, direct=False)  # the same file: fine
        storage.close_quietly(h.fd)
        part.unlink()
        part.symlink_to("../../outside/precious.txt")
        with pytest.raises(UnsafePathError):
            storage.open_for_write(str(part), expect=held.ident, direct=False)
        [error] = storage.finalize_many([(tree, part, final, 4096, held.ident, None)])
        assert isinstance(error, UnsafePathError), error
        assert not os.path.lexists(final)
        part.unlink()
        part.write_bytes(b"someone else's")  # a regular file, but not the one downloaded
        [error] = storage.finalize_many([(tree, part, final, 4096, held.ident, None)])
        assert isinstance(error, UnsafePathError) and not os.path.lexists(final)
    finally:
        storage.unlock(held.fd)
        tree.close()
    untouched(outside)


# ------------------------------------------------- a file that appears meanwhile


def test_a_file_that_appears_after_the_listing_is_not_replaced(mirror, outside, tmp_path):
    """A new small file of a list is not looked for again at its start: its
    job listed the folder once.  A file (or a symlink) that appears at its
    name after that is never replaced: that file fails with exit 5, its
    download left as the part file; the others of the list are done."""
    root = tmp_path / "root"
    root.mkdir()
    urls = [mirror.url("/slowfirst/z.bin?delay=2"), mirror.url("/slowfirst/gone.bin?delay=2"),
            mirror.url("y.bin")]
    (tmp_path / "in.txt").write_text("".join(u + "\n" for u in urls))
    p = subprocess.Popen([*SEGDL, "get", "-i", tmp_path / "in.txt", "-d", root, "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, SEGDL_JOURNAL=str(tmp_path / "j.sqlite")))
    try:
        deadline = time.monotonic() + 20
        while not (mirror.requests("z.bin") and mirror.requests("gone.bin")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mirror.requests("z.bin") and mirror.requests("gone.bin"), "no probe reached the mirror"
        (root / "z.bin").write_bytes(PRECIOUS)  # while their answers are held back
        (root / "gone.bin").symlink_to("../outside/precious.txt")
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 5, err
    lines = by_name([json.loads(x) for x in out.splitlines()])
    assert lines["y.bin"]["status"] == "done"
    for name in ("z.bin", "gone.bin"):
        assert lines[name]["exit_code"] == 5 and "appeared" in lines[name]["error"], lines[name]
        part = root / (name + ".segdl-part")
        assert part.stat().st_size == {"z.bin": 70_000, "gone.bin": 64 * 1024}[name]  # the download, kept
    assert (root / "z.bin").read_bytes() == PRECIOUS
    assert os.readlink(root / "gone.bin") == "../outside/precious.txt"
    untouched(outside)


def test_a_new_name_is_kept_without_renameat2_too(tmp_path, monkeypatch):
    """Where the kernel or the file system has no RENAME_NOREPLACE, a look
    just before the rename keeps a file that is there."""
    from segdl.engine.disk import confine, storage
    from segdl.engine.values.errors import ExistsError

    monkeypatch.setattr(storage, "_libc", None)
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.bin").write_bytes(PRECIOUS)
    tree = confine.Root(root)
    try:
        [kept, landed] = storage.finalize_many([
            (tree, root / "a.bin.segdl-part", root / "a.bin", 5, None, b"hello", False),
            (tree, root / "b.bin.segdl-part", root / "b.bin", 5, None, b"world", False)])
    finally:
        tree.close()
    assert isinstance(kept, ExistsError) and (root / "a.bin").read_bytes() == PRECIOUS
    assert (root / "a.bin.segdl-part").read_bytes() == b"hello"
    assert not isinstance(landed, Exception) and (root / "b.bin").read_bytes() == b"world"


# ------------------------------------------------- the HF cache's links


def test_hf_cache_links_stay_in_the_cache(outside, tmp_path):
    from hubserver import HubServer

    files = {"config.json": (b'{"a": 1}\n', False), "weights/w.bin": (os.urandom(300_000), True)}
    with HubServer() as hub:
        hub.add_repo("org/model", files)
        cache = tmp_path / "cache"
        (cache / "models--org--model").mkdir(parents=True)
        (cache / "models--org--model" / "snapshots").symlink_to(outside)  # planted
        env = {"HF_ENDPOINT": hub.hub_url, "HF_HOME": str(tmp_path / "hf-home"), "COLUMNS": "400"}
        p = run_segdl(["get", "hf://org/model", "--hf-cache", cache, "--json"], tmp_path / "j.sqlite", env=env)
    assert p.returncode == 2, p.stderr
    assert "snapshot link(s) not made" in p.stderr and "leads outside" in p.stderr
    assert sorted(r["status"] for r in json_lines(p)) == ["done", "done"]  # the blobs are here
    untouched(outside)


# ------------------------------------------------- 3. --socket over a file


def test_serve_socket_never_removes_what_is_not_a_socket(tmp_path):
    important = tmp_path / "important.txt"
    important.write_text("keep me\n")
    state = tmp_path / "state" / "journal.sqlite"
    base = [*SEGDL, "serve", "-d", str(tmp_path / "out"), "--journal", str(state)]
    r = subprocess.run([*base, "--socket", str(important)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "not a socket" in r.stderr
    assert important.read_text() == "keep me\n"

    # A socket a running program listens on is not taken over either ...
    live = tmp_path / "live.sock"
    holder = socket.socket(socket.AF_UNIX)
    holder.bind(str(live))
    holder.listen(1)
    try:
        r = subprocess.run([*base, "--socket", str(live)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "listens on it" in r.stderr, r.stderr
    finally:
        holder.close()
    # ... but one left behind by a service that ended is replaced, as before.
    proc = subprocess.Popen([*base, "--socket", str(live)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        info = state.parent / "serve.json"
        deadline = time.monotonic() + 30
        while not info.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert json.loads(info.read_text())["socket"] == str(live)
        assert live.is_socket() and (live.stat().st_mode & 0o777) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_small_files_written_with_their_rename_stay_under_the_root(outside, tmp_path):
    """Files whose bytes came whole are created, locked, written, synced and
    renamed in one batch (storage.finalize_many with data): each refused
    one fails alone, the others land."""
    import fcntl

    from segdl.engine.disk import confine, storage
    from segdl.engine.values.errors import BusyError, UnsafePathError

    root = tmp_path / "root"
    tree = confine.Root(root)
    datas = {f"d/f{i}.bin": os.urandom(4096 + i) for i in range(6)}
    (root / "d").mkdir(parents=True)
    (root / "d" / "f1.bin.segdl-part").symlink_to("../../outside/precious.txt")
    busy = os.open(root / "d" / "f2.bin.segdl-part", os.O_RDWR | os.O_CREAT)  # another downloader holds it
    fcntl.flock(busy, fcntl.LOCK_EX)
    try:
        items = [(tree, root / (n + ".segdl-part"), root / n, len(d), None, d) for n, d in datas.items()]
        results = storage.finalize_many(items)
    finally:
        os.close(busy)
        tree.close()
    for (name, data), result in zip(datas.items(), results):
        if name == "d/f1.bin":
            assert isinstance(result, UnsafePathError), result
        elif name == "d/f2.bin":
            assert isinstance(result, BusyError), result
        else:
            assert result == (os.stat(root / name).st_mtime, len(data)), result
            assert (root / name).read_bytes() == data
            assert not os.path.lexists(root / (name + ".segdl-part"))
    assert not os.path.lexists(root / "d" / "f1.bin") and not os.path.lexists(root / "d" / "f2.bin")
    untouched(outside)


def test_one_syncfs_only_for_a_batch_on_one_trusted_file_system(tmp_path):
    """A batch is synced by one syncfs when its files share a file system
    whose syncfs is trusted (tmpfs here); files on two file systems are
    fsynced one by one."""
    from segdl.engine.disk import confine, storage

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm apart from the test folder")
    here = Path(os.path.realpath(shm)) / f"segdl-test-{os.getpid()}"
    a, b, c = confine.Root(here / "a"), confine.Root(here / "b"), confine.Root(tmp_path / "c")
    try:
        item = lambda r: (r, r.path / "x.segdl-part", r.path / "x", 1, None, b"x")  # noqa: E731
        assert storage._one_file_system([item(a), item(b)] * 2) in (a.fd(), b.fd())
        assert storage._one_file_system([item(a), item(c)] * 2) is None
    finally:
        for r in (a, b, c):
            r.close()
        import shutil

        shutil.rmtree(here, ignore_errors=True)


def test_names_taken_from_urls_and_servers_are_plain_file_names():
    """``safe_name`` (a server's or a URL's name made one plain file name)
    and ``filename_from_url``: the ASCII fast path and the general one
    give the same answers."""
    from segdl.engine.inputs.naming import filename_from_url, safe_name

    assert filename_from_url("http://h/a/b.bin?x=1#y") == "b.bin"
    assert filename_from_url("http://h/a/") == filename_from_url("http://h/a/.") == "a"
    assert filename_from_url("http://h/a/..") is None
    assert filename_from_url("http://h/%2e%2e%2fetc%2fpasswd") == "passwd"
    assert filename_from_url("http://h/d%5C..%5Cx.bin") == "x.bin"
    assert filename_from_url("http://h") is None
    assert safe_name("..\\..\\x.bin") == safe_name("../../x.bin") == "x.bin"
    assert safe_name("a\tb.bin") == "a_b.bin"  # a control character
    assert safe_name("a\x7fb") == "a_b"
    assert safe_name("a\u009bb\u202ec") == "a_b_c"  # C1 control, bidi override
    assert safe_name("e\u0301.bin") == "\u00e9.bin"  # NFC
    assert safe_name("  .hidden ") == "hidden"
    assert safe_name("...") is None and safe_name("") is None
    long = safe_name("x" * 300 + ".safetensors")
    assert long == "x" * (200 - len(".safetensors")) + ".safetensors" and len(long.encode()) <= 200
