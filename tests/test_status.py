"""``segdl status`` at scale (issue 19 §3) and the journal's typed reads
(issue 18 §4): the pure rules of what a file shows as, the summary and
listing queries on journals built through the journal's own API, the
command's output, and an old journal migrated when opened."""

from __future__ import annotations

import json
import sqlite3
from itertools import product
from pathlib import Path

import pytest

from helpers import json_lines, run_segdl
from segdl.engine.rules import lifecycle as lc
from segdl.engine.doors import status as view
from segdl.engine.journal.writer import Journal
from segdl.engine.journal.schema import MIGRATION_SET, MIGRATION_STEPS
from segdl.engine.journal.status import FileRow, JobRow, StateGroup

# ------------------------------------------------------------------ pure rules


def test_a_dead_jobs_moving_file_shows_as_interrupted_and_a_queued_one_stays_queued():
    assert view.shown_state(lc.DOWNLOADING, False, alive=True) == lc.DOWNLOADING
    assert view.shown_state(lc.DOWNLOADING, False, alive=False) == view.INTERRUPTED
    assert view.shown_state(lc.VERIFYING, False, alive=False) == view.INTERRUPTED
    assert view.shown_state(lc.QUEUED, False, alive=False) == lc.QUEUED
    assert view.shown_state(lc.DOWNLOADING, True, alive=True) == lc.PAUSED
    assert view.shown_state(lc.DOWNLOADING, True, alive=False) == lc.PAUSED
    for final in lc.FINAL:  # a final state shows as itself, flag or not
        assert view.shown_state(final, True, alive=False) == final


@pytest.mark.parametrize("wanted", [(s,) for s in view.SHOWN_STATES] + [("failed", "interrupted"), ("paused", "done")])
def test_a_filter_on_shown_states_takes_exactly_the_rows_that_show_so(wanted):
    filters = view.state_filters(wanted)
    for state, paused, alive in product(lc.RECORDED, (False, True), (False, True)):
        taken = any(f.state == state and f.paused == paused and f.alive in (None, alive) for f in filters)
        assert taken == (view.shown_state(state, paused, alive) in wanted), (state, paused, alive)


def test_a_job_is_alive_while_running_with_a_fresh_heartbeat_and_its_process():
    job = JobRow(1, None, "/d", "running", 4242, heartbeat=100.0)
    assert view.job_alive(job, now=105.0, pid_exists=lambda pid: True)
    assert not view.job_alive(job, now=105.0, pid_exists=lambda pid: False)
    assert not view.job_alive(job, now=100.0 + view.HEARTBEAT_STALE, pid_exists=lambda pid: True)
    assert not view.job_alive(JobRow(1, None, "/d", "finished", None, 100.0), now=101.0)
    assert not view.job_alive(JobRow(1, None, "/d", "running", None, None), now=101.0)


def test_eta_is_zero_when_complete_unknown_without_speed_or_size():
    assert view.eta(1000, 1000, 0.0, final=True) == 0.0
    assert view.eta(1000, 200, 100.0, final=False) == 8.0
    assert view.eta(None, 200, 100.0, final=False) is None
    assert view.eta(1000, 200, 0.0, final=False) is None


def test_a_group_line_adds_up_its_state_groups():
    groups = [StateGroup(1, lc.DONE, False, 3, 300, 0, 300, 0.0),
              StateGroup(1, lc.DOWNLOADING, False, 2, 200, 0, 50, 30.0),
              StateGroup(2, lc.DOWNLOADING, False, 1, 100, 0, 10, 99.0),  # job 2 is dead
              StateGroup(2, lc.FAILED, False, 1, 0, 1, 0, 0.0)]
    g = view.group_line("c", "c", groups, alive={1})
    assert dict(g.counts) == {"done": 3, "downloading": 2, "interrupted": 1, "failed": 1}
    assert (g.files, g.bytes_done, g.size, g.unknown_size) == (7, 360, 600, 1)
    assert g.speed == 30.0  # a dead job's last speed counts for nothing
    assert g.eta == round((300 - 60) / 30.0, 1)
    done = view.group_line("c", "c", groups[:1], alive=set())
    assert done.eta == 0.0 and done.speed == 0.0


def test_a_file_line_shows_what_arrived_of_a_moving_file_and_redacts_its_url():
    row = FileRow(7, 1, "c", "/d/a.bin", "http://u:secret@127.0.0.1/a.bin?sig=1", lc.DOWNLOADING, False,
                  1000, 100, 400, 50.0, None, None, json.dumps([{"url": "m", "bytes": 1}]))
    line = view.file_line(row, alive=True)
    assert (line.state, line.bytes_done, line.speed, line.eta) == (lc.DOWNLOADING, 400, 50.0, 12.0)
    assert "secret" not in line.url and "sig=1" not in line.url and line.mirrors == [{"url": "m", "bytes": 1}]
    dead = view.file_line(row, alive=False)
    assert (dead.state, dead.bytes_done, dead.speed, dead.eta) == (view.INTERRUPTED, 100, 0.0, None)


# ------------------------------------------------- journals built by its API


def _build(path: Path, dest: Path) -> dict[str, dict[str, int]]:
    """Two collections and a job of none, files in every kind of state."""
    j = Journal(path)
    made: dict[str, dict[str, int]] = {}
    try:
        for coll, n in (("shards", 40), ("configs", 12), (None, 3)):
            job = j.create_job(dest, {"requests": []}, collection=coll)
            states: dict[str, int] = {}
            done = []
            for i in range(n):
                ext = "json" if i % 4 == 0 else "bin"
                fid = j.put_file(job, f"http://127.0.0.1:9/{coll}/{i}.{ext}?token=abc",
                                 dest / str(coll) / f"f{i:03d}.{ext}", size=1000)
                k = i % 5
                if k in (0, 1):
                    done.append((fid, 1.0, 1000))
                    state = lc.DONE
                elif k == 2:
                    j.update_file(fid, state=lc.FAILED, error="HTTP 404", exit_code=3)
                    state = lc.FAILED
                elif k == 3:
                    [sid] = j.replace_segments(fid, [(0, 1000)], state=lc.DOWNLOADING)
                    j.record({sid: 250})
                    state = view.INTERRUPTED  # no process runs the job
                else:
                    state = lc.QUEUED
                states[state] = states.get(state, 0) + 1
            j.mark_done(done)
            made[coll if coll is not None else f"job {job}"] = states
    finally:
        j.close()
    return made


@pytest.fixture
def built(tmp_path):
    journal = tmp_path / "j.sqlite"
    return journal, _build(journal, tmp_path / "out")


def test_the_summary_counts_each_collection_and_a_job_without_one(built):
    journal, made = built
    lines = {g.name: g for g in view.summary(journal)}
    assert set(lines) == set(made)
    for name, states in made.items():
        g = lines[name]
        assert dict(g.counts) == states, name
        n = sum(states.values())
        assert g.files == n and g.size == 1000 * n
        assert g.bytes_done == 1000 * states.get("done", 0) + 250 * states.get(view.INTERRUPTED, 0)
        assert g.speed == 0.0  # nothing runs: no speed, so no ETA, unless all is final
        assert g.eta == (0.0 if set(states) <= lc.FINAL else None), name
    [only] = view.summary(journal, "configs")
    assert only.name == "configs" and dict(only.counts) == made["configs"]


def test_files_are_listed_by_shown_state_glob_collection_and_limit(built):
    journal, made = built
    failed = list(view.files(journal, states=(lc.FAILED,)))
    assert len(failed) == sum(s.get(lc.FAILED, 0) for s in made.values())
    assert all(f.state == lc.FAILED and f.error == "HTTP 404" for f in failed)
    assert [f.id for f in failed] == sorted(f.id for f in failed)
    stuck = list(view.files(journal, "shards", states=(view.INTERRUPTED,)))
    assert len(stuck) == made["shards"][view.INTERRUPTED] and all(f.bytes_done == 250 for f in stuck)
    jsons = list(view.files(journal, glob="*.json"))
    assert jsons and all(f.path.endswith(".json") for f in jsons)
    assert len(jsons) == sum(1 for f in view.files(journal) if f.path.endswith(".json"))
    assert len(list(view.files(journal, limit=5))) == 5
    assert all("token" not in f.url for f in view.files(journal))
    with pytest.raises(ValueError, match="unknown state 'broken'"):
        list(view.files(journal, states=("broken",)))


def test_status_prints_a_line_per_collection_and_lists_files_on_demand(built):
    journal, made = built
    p = run_segdl(["status"], journal, env={"COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    for name, states in made.items():
        counts = ", ".join(f"{n} {k}" for k, n in sorted(states.items()))
        assert f"{name}: {counts}; " in p.stdout, (name, p.stdout)
    assert "f000.json" not in p.stdout  # 55 files: a summary only
    assert "status --files" in p.stderr

    p = run_segdl(["status", "--files", "--state", "failed"], journal, env={"COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    failed = sum(s.get(lc.FAILED, 0) for s in made.values())
    rows = [line for line in p.stdout.splitlines() if "HTTP 404" in line]
    assert len(rows) == failed and all(" failed " in r for r in rows)

    p = run_segdl(["status", "shards", "--files", "--limit", "3"], journal, env={"COLUMNS": "200"})
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1 + 3, p.stdout
    assert "--limit N lists more" in p.stderr

    rows = json_lines(run_segdl(["status", "--json", "--state", "interrupted", "--glob", "*.bin"], journal))
    assert rows and all(r["state"] == "interrupted" and r["path"].endswith(".bin") for r in rows)
    assert len(rows) == sum(1 for r in json_lines(run_segdl(["status", "--json"], journal))
                            if r["state"] == "interrupted" and r["path"].endswith(".bin"))

    p = run_segdl(["status", "--files", "--state", "broken"], journal)
    assert p.returncode == 2 and "not a state" in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------- migration


def _old_journal(path: Path, steps: int) -> None:
    """A journal as a segdl that knew only the first ``steps`` migrations
    left it, with a job and a failed file in it."""
    import sqlite_utils
    from sqlite_utils.migrations import Migrations

    m = Migrations(MIGRATION_SET)
    for fn in MIGRATION_STEPS[:steps]:
        m(name=fn.__name__)(fn)
    con = sqlite3.connect(path)
    m.apply(sqlite_utils.Database(con))
    con.execute("""INSERT INTO jobs (id, created, dest, collection, spec, state)
                   VALUES (1, 1, '/d', 'old', '{"requests": [{"url": "http://127.0.0.1:9/a"}]}', 'finished')""")
    con.execute("""INSERT INTO files (job_id, url, path, size, state, error, created, updated)
                   VALUES (1, 'http://127.0.0.1:9/a', '/d/a.bin', 10, 'failed', 'HTTP 500', 1, 1)""")
    con.commit()
    con.close()


def test_an_old_journal_is_migrated_when_opened_and_keeps_its_rows(tmp_path):
    journal = tmp_path / "old.sqlite"
    _old_journal(journal, steps=6)
    # A read-only command cannot migrate: it says what to run.
    p = run_segdl(["status"], journal)
    assert p.returncode != 0 and "older schema" in p.stderr and "Traceback" not in p.stderr
    Journal(journal).close()  # a command that writes opens it: migrated
    con = sqlite3.connect(journal)
    names = [r[0] for r in con.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    assert names == [fn.__name__ for fn in MIGRATION_STEPS]
    assert "files_job_state_paused" in indexes and "files_job_state" not in indexes
    [line] = view.summary(journal)
    assert line.name == "old" and dict(line.counts) == {"failed": 1}
    [row] = view.files(journal, states=("failed",))
    assert row.path == "/d/a.bin" and row.error == "HTTP 500"
    # The job's spec moved out of its row (m008), whole.
    j = Journal(journal)
    try:
        assert j.job(1)["spec"] == {"requests": [{"url": "http://127.0.0.1:9/a"}]}
    finally:
        j.close()


def test_on_sqlite_without_drop_column_a_new_journal_still_takes_jobs(tmp_path, monkeypatch):
    """SQLite before 3.35 (Debian 11, Ubuntu 20.04) cannot drop a column:
    m008 then leaves jobs.spec (NOT NULL) in place, empty, and a new job
    must still be created, its spec kept in job_specs."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    j = Journal(tmp_path / "j.sqlite")
    try:
        job = j.create_job(tmp_path, {"requests": [{"url": "http://127.0.0.1:9/a"}]})
        assert j.job(job)["spec"] == {"requests": [{"url": "http://127.0.0.1:9/a"}]}
        left = [r[0] for r in j.db.conn.execute("SELECT spec FROM jobs")]
        assert left == [""]  # the old column is there, and unused
    finally:
        j.close()


# ------------------------------------------------------------------ ls at scale


def test_ls_of_a_manifest_past_the_table_size_prints_a_line_per_file(tmp_path):
    """Past TABLE_ROWS files ls prints plain lines (a rich table of 100,000
    rows takes a minute): the title, then every file with its state, one
    line each; a file the journal has done is here, the rest missing."""
    from segdl.cli.hubs import TABLE_ROWS

    n = TABLE_ROWS + 5
    out = tmp_path / "out"
    manifest = tmp_path / "big.txt"
    manifest.write_text("".join(f"http://127.0.0.1:9/{i}\n  out=d/f{i:05d}.bin\n" for i in range(n)))
    (out / "d").mkdir(parents=True)
    journal = tmp_path / "j.sqlite"
    j = Journal(journal)
    try:
        job = j.create_job(out, {"requests": []})
        here = out / "d" / "f00007.bin"
        here.write_bytes(b"x" * 10)
        fid = j.put_file(job, "http://127.0.0.1:9/7", here, size=10)
        j.mark_done([(fid, here.stat().st_mtime, 10)])
    finally:
        j.close()
    p = run_segdl(["ls", "-i", manifest, "-d", out], journal, env={"COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == f"{manifest}: 1 here, {n - 1} missing", lines[0]
    assert len(lines) == 1 + n
    assert lines[1 + 7].startswith("here") and lines[1 + 7].endswith("d/f00007.bin")
    assert all(line.startswith("missing") for k, line in enumerate(lines[1:]) if k != 7)
    rows = json_lines(run_segdl(["ls", "-i", manifest, "-d", out, "--json"], journal))
    assert [r["path"] for r in rows] == [line.split()[-1] for line in lines[1:]]
