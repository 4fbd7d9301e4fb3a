"""Shared fixtures: a generated document root, a session nginx, fault servers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
SUPPORT_DIR = TESTS_DIR / "support"  # servers, helpers and harnesses, imported by name
for _d in (TESTS_DIR, SUPPORT_DIR):
    if str(_d) not in sys.path:
        sys.path.insert(0, str(_d))

from servers import MiB, FaultServer, Nginx, write_deterministic_file  # noqa: E402

# name -> (size, seed).  Content is deterministic, but tests should compare
# against blake3_file(nginx_root / name) rather than hard-coded digests.
NGINX_FILES = {
    "zero.bin": (0, 0),
    "one.bin": (1, 1),
    "odd.bin": (5 * MiB + 12345, 2),
    "big.bin": (300 * MiB, 3),
}


@pytest.fixture(scope="session")
def nginx_root(tmp_path_factory) -> Path:
    """Directory with zero.bin (0 B), one.bin (1 B), odd.bin (5 MiB+12345), big.bin (300 MiB)."""
    root = tmp_path_factory.mktemp("nginx-root")
    for name, (size, seed) in NGINX_FILES.items():
        write_deterministic_file(root / name, size, seed)
    yield root
    # big.bin is large; do not leave it behind in pytest's retained tmp dirs
    try:
        os.unlink(root / "big.bin")
    except OSError:
        pass


@pytest.fixture(scope="session")
def nginx(nginx_root) -> Nginx:
    """A plain nginx (no rate limit, no delay) serving ``nginx_root``, for the session.

    Its access log is shared by all tests: call ``nginx.reset_access_log()``
    first if a test inspects it.
    """
    with Nginx(root=nginx_root) as srv:
        yield srv


@pytest.fixture
def make_nginx(nginx_root):
    """Factory for extra nginx instances (``make_nginx(limit_rate="20m")``), stopped after the test."""
    started: list[Nginx] = []

    def factory(**kwargs) -> Nginx:
        kwargs.setdefault("root", nginx_root)
        srv = Nginx(**kwargs).start()
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
def fault_server() -> FaultServer:
    """A fresh FaultServer per test."""
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def mount_ram(tmp_path):
    """Factory: mount a memory file system (``fstype`` tmpfs or ramfs; a
    tmpfs of ``size``) under tmp_path and return its path; unmounted after
    the test.  Skips where mounting is not allowed (not root)."""
    mounted: list[Path] = []

    def factory(fstype: str = "tmpfs", size: str = "64m") -> Path:
        import subprocess

        mnt = tmp_path / f"{fstype}{len(mounted)}"
        mnt.mkdir()
        opts = ["-o", f"size={size}"] if fstype == "tmpfs" else []
        r = subprocess.run(["mount", "-t", fstype, *opts, fstype, str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a {fstype} here: {r.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    yield factory
    import subprocess

    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
