"""What the numbers were measured on: CPUs, memory, kernel, disk, tool versions."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path


def _first_line(argv: list[str], stream: str = "stdout") -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (p.stdout if stream == "stdout" else p.stderr) or p.stdout or p.stderr
    return text.strip().splitlines()[0] if text.strip() else "?"


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _fs_type(path: Path) -> str:
    best, fstype = "", "?"
    target = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and target.startswith(parts[1]) and len(parts[1]) > len(best):
            best, fstype = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return fstype


def _segdl_version(repo: Path) -> str:
    try:
        from importlib.metadata import version

        v = version("segdl")
    except Exception:  # noqa: BLE001 - informative only
        v = "?"
    commit = _first_line(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(repo), "status", "--porcelain",
                            "--", "engine", "cli"],
                           capture_output=True, text=True, timeout=20).stdout.strip()
    return f"segdl {v} ({commit}{', engine/cli modified' if dirty else ''})"


def _package_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - informative only
        return "not installed"


def machine_info(repo: Path, data_dir: Path) -> dict:
    import pycurl

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_total_gb": _meminfo_kib("MemTotal") * 1024 / 1e9,
        "mem_available_gb": _meminfo_kib("MemAvailable") * 1024 / 1e9,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
        "data_fs": _fs_type(data_dir),
        "versions": {
            "segdl": _segdl_version(repo),
            "pycurl": pycurl.version,
            "aria2c": _first_line(["aria2c", "--version"]),
            "curl": _first_line(["curl", "--version"]),
            "nginx": _first_line(["nginx", "-v"], stream="stderr"),
            "huggingface_hub": _package_version("huggingface_hub"),  # the tls-hub case's rival
            "openssl": _first_line(["openssl", "version"]),
        },
    }
