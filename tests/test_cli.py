"""The CLI is thin; check every command answers --help, and the
human-readable outputs render (the JSON ones are tested elsewhere)."""

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from helpers import SEGDL, json_lines, run_segdl
from segdl.cli.main import app

COMMANDS = ["get", "ls", "status", "pause", "resume", "retry", "limit", "serve", "login", "bench", "demo", "verify"]


def test_every_command_is_listed_and_has_help():
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for name in COMMANDS:
        assert name in top.output
        r = runner.invoke(app, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)
        assert "--journal" in r.output or name in ("bench", "demo")


def test_status_table_and_collection_name(nginx, tmp_path):
    journal = tmp_path / "j.sqlite"
    m = tmp_path / "m.txt"
    m.write_text(nginx.url("one.bin") + "\n  out=x/one.bin\n")
    p = run_segdl(["get", "-i", m, "--collection", "mine", "-d", tmp_path / "out", "-q"], journal)
    assert p.returncode == 0, p.stderr
    st = run_segdl(["status"], journal, env={"COLUMNS": "200"})
    assert st.returncode == 0
    assert "mine: 1 done" in st.stdout and "one.bin" in st.stdout


@pytest.mark.parametrize("args", [["get"], ["limit"], ["get", "http://127.0.0.1:1/x", "--max-speed", "fast"]])
def test_usage_errors_exit_2(tmp_path, args):
    p = run_segdl(args, tmp_path / "j.sqlite")
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr


def test_start_up_does_not_import_pandas_or_numpy(tmp_path, nginx):
    """sqlite-utils would import them (0.5 s and more where installed) only
    to map their types; segdl's process hides them while it loads.  Fake
    modules that leave a mark when imported stand in for the real ones."""
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for name in ("numpy", "pandas"):
        (fakes / f"{name}.py").write_text(
            f"open({str(tmp_path / (name + '.imported'))!r}, 'w').close()\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(fakes), os.environ.get("PYTHONPATH")]))}
    p = run_segdl(["get", nginx.url("one.bin"), "-d", tmp_path / "out", "--json"], tmp_path / "j.sqlite", env=env)
    assert p.returncode == 0, p.stderr
    assert json_lines(p)[0]["status"] == "done"
    p = run_segdl(["status", "--json"], tmp_path / "j.sqlite", env=env)
    assert p.returncode == 0, p.stderr
    assert not list(tmp_path.glob("*.imported"))
    # ... and the fakes are importable, so a leak would have shown.
    check = subprocess.run([sys.executable, "-c", "import numpy, pandas"], env=dict(os.environ, **env))
    assert check.returncode == 0 and len(list(tmp_path.glob("*.imported"))) == 2


def _help(*args: str) -> str:
    p = subprocess.run([*SEGDL, *args, "--help"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, COLUMNS="80"))
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_help_reads_well_at_80_columns():
    """Issue 9: short first lines (the command list shows them whole), no
    line past 80 columns, and no sentence broken by a hard line break: a
    line that goes on in the next one was filled up to the width."""
    top = _help()
    listing = top.split("Commands:", 1)[1]
    assert "..." not in listing, listing
    for name in ["", *COMMANDS]:
        text = _help(*([name] if name else []))
        lines = text.splitlines()
        assert all(len(line) <= 80 for line in lines), [l for l in lines if len(l) > 80]
        # The description: from after "Usage:" to the first section.
        desc = []
        for line in lines[1:]:
            if line in ("Arguments:", "Options:", "Commands:"):
                break
            desc.append(line)
        for line, nxt in zip(desc, desc[1:]):
            prose = line.startswith("  ") and not line.startswith("    ") and not line.rstrip().endswith(":")
            goes_on = nxt.startswith("  ") and not nxt.startswith("    ") and nxt.strip()
            if prose and goes_on:
                assert len(line) >= 60, (name, line, nxt)
        if name:
            assert any(l.strip().startswith("segdl ") for l in desc), (name, "an example")


def test_demo_downloads_and_verifies_a_sample_collection(tmp_path):
    """The README's first command, minus pip: a job on local mirrors, no network."""
    keep = tmp_path / "demo"
    p = subprocess.run([*SEGDL, "demo", "--keep", str(keep), "--rate", "8M"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    from segdl.cli.demo import SAMPLE
    from servers import blake3_file

    for name in SAMPLE:
        assert blake3_file(keep / "files" / "demo" / name) == blake3_file(keep / "mirror" / name)
    assert f"{len(SAMPLE)} of {len(SAMPLE)} files verified" in p.stderr
    st = run_segdl(["status", "demo", "--json"], keep / "journal.sqlite")
    rows = json_lines(st)
    assert sorted(r["state"] for r in rows) == ["done"] * len(SAMPLE)
    # Run again: everything is there already and is skipped, nothing fetched.
    again = subprocess.run([*SEGDL, "demo", "--keep", str(keep), "-q"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("flag", ["-q", "--json"])
def test_a_get_that_shows_no_live_view_loads_no_rich(tmp_path, flag):
    """rich's live view, table and console are for a terminal: a quiet or
    JSON run (scripts, benchmarks) does not pay their import (about 30 ms
    of start-up).  -X importtime lists every module loaded."""
    from servers import PacedMirror

    (tmp_path / "one.bin").write_bytes(b"x" * 1000)
    with PacedMirror(tmp_path, rate=0) as m:
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "segdl.cli.main", "get", m.url("one.bin"),
                            "-d", str(tmp_path / "out"), "--journal", str(tmp_path / "j.sqlite"), flag],
                           capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if "import time:" in line}
    assert "segdl.engine.run.coordinator" in modules  # it did run the engine
    assert not {x for x in modules if x == "rich" or x.startswith("rich.")}, sorted(modules)
    if flag == "--json":
        [line] = json_lines(p)
        assert line["status"] == "done" and line["size"] == 1000


def test_a_big_jobs_summary_counts_its_files_and_lists_its_failures(nginx, tmp_path):
    """Past 50 files, ``get`` ends with a line of counts and a row for each
    failed file, not a row per file (20,000 rows took 10 s to draw)."""
    m = tmp_path / "m.txt"
    m.write_text("".join(f"{nginx.url('one.bin')}\n  out=f{i:03d}.bin\n" for i in range(60))
                 + f"{nginx.url('not-here.bin')}\n  out=[gone] v2.bin\n")
    p = run_segdl(["get", "-i", m, "-d", tmp_path / "out"], tmp_path / "j.sqlite", env={"COLUMNS": "400"})
    assert p.returncode == 3, p.stderr
    assert len(list((tmp_path / "out").glob("f*.bin"))) == 60
    lines = p.stdout.splitlines()
    assert lines[0] == ("61 files: 60 done, 1 failed (0.0 MB complete). The failed ones below; `segdl status "
                        "--files` lists the journal's files (`--limit N` past 1,000, `--state failed` for these)."), p.stdout
    assert "[gone] v2.bin" in p.stdout and "404" in p.stdout, p.stdout
    assert "f000.bin" not in p.stdout and len(lines) < 10, p.stdout
