"""The coordinator's shape (issue 18): each part is given the owners of the
state it needs (the run's files, the scheduler's slots, the limits, the
journal, the workers) and its peers, never the coordinator; no part reads
another's private names; the parts stay small."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from segdl.engine.run import coordinator as coordinator_module
from segdl.engine.run.coordinator import Coordinator
from segdl.engine.journal.writer import Journal
from segdl.engine.values.request import Settings

ENGINE = Path(coordinator_module.__file__).parent
PARTS = ("intake", "existing", "activation", "dispatch", "reports", "restarts", "finishing", "control",
         "commands", "jobs")
OWNERS = ("files", "workers", "limits")
PART_ATTRS = ("intake", "existing", "activation", "dispatch", "reports", "restarts", "finishing", "control",
              "commands", "jobs")


def _tree(name: str) -> ast.Module:
    return ast.parse((ENGINE / f"{name}.py").read_text())


@pytest.fixture
def engine(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    c = Coordinator(Settings(dest=tmp_path, workers=1), journal)
    c.start(files_at_once=1)
    try:
        yield c
    finally:
        c._shutdown()
        journal.close()


def test_no_part_holds_the_coordinator(engine):
    """Every part of a started engine, and every value it holds, is
    something other than the coordinator."""
    parts = [getattr(engine, a) for a in PART_ATTRS]
    assert len({id(p) for p in parts}) == len(PART_ATTRS)
    for part in parts:
        held = vars(part)
        assert held, type(part).__name__
        for name, value in held.items():
            assert not isinstance(value, Coordinator), f"{type(part).__name__}.{name} is the coordinator"
        for name in inspect.signature(type(part).__init__).parameters:
            assert name not in ("c", "coordinator", "engine"), f"{type(part).__name__}({name}=...)"


def test_parts_are_wired_to_each_other_not_through_the_engine(engine):
    """The peers a part calls are the engine's own parts (one of each)."""
    assert engine.dispatch.finishing is engine.finishing
    assert engine.finishing.dispatch is engine.dispatch
    assert engine.intake.activation is engine.activation
    assert engine.reports.restarts is engine.restarts
    for part in (engine.intake, engine.activation, engine.dispatch, engine.reports, engine.finishing,
                 engine.control, engine.commands):
        assert part.files is engine.files
    assert engine.control.limits is engine.limits and engine.dispatch.limits is engine.limits


@pytest.mark.parametrize("name", PARTS + OWNERS)
def test_no_part_reads_another_objects_private_names(name):
    """``x._name`` only on ``self`` (or ``cls``): a part asks another part
    or an owner through its methods."""
    bad = []
    for node in ast.walk(_tree(name)):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
            bad.append(f"{name}.py:{node.lineno} {ast.unparse(node)}")
    assert bad == []


@pytest.mark.parametrize("name", ("coordinator",) + PARTS + OWNERS)
def test_parts_stay_small(name):
    """No module over 400 lines, no class over 300."""
    text = (ENGINE / f"{name}.py").read_text()
    assert len(text.splitlines()) <= 400
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            assert node.end_lineno - node.lineno + 1 <= 300, node.name


def test_the_coordinator_module_names_no_part_state():
    """The coordinator keeps no run state of its own: no part reaches
    ``self.c`` and the coordinator's attributes are the owners, the parts
    and its inbox."""
    for name in PARTS:
        src = (ENGINE / f"{name}.py").read_text()
        assert "self.c." not in src and "self.c =" not in src, name


def test_workers_forked_before_a_manifest_is_read_serve_the_engine_that_matches_them(tmp_path):
    """``segdl get -i`` forks its workers before it reads the manifest
    (start_workers_early): an engine of that shape takes them; one of
    another shape (fewer files than -j) stops them and forks its own."""
    s = Settings(dest=tmp_path, workers=2, concurrent_files=4)
    for files, same in ((None, True), (1, False)):
        coordinator_module.start_workers_early(s)
        early = coordinator_module._early[2]
        journal = Journal(tmp_path / "journal.sqlite")
        c = Coordinator(s, journal)
        c.start(files_at_once=files)
        try:
            assert (c.workers is early) is same
            if not same:
                assert not any(p.is_alive() for p in early._procs)
            assert coordinator_module._early is None
        finally:
            c._shutdown()
            journal.close()


def test_a_target_is_known_by_any_spelling_of_its_path_until_freed():
    """The engine's targets (which job writes which final path) match a
    path however it is spelt, and forget it when freed."""
    from segdl.engine.run.files import Files

    files = Files()
    files.claim_target(Path("/d//x/./a.bin"), 7)
    assert files.writer_of(Path("/d/x/a.bin")) == 7
    assert files.writer_of(Path("/d/x/b.bin")) is None
    files.free_target(Path("/d/x//a.bin"))
    assert files.writer_of(Path("/d/x/a.bin")) is None
    files.free_target(None)  # a run that never had a target


def test_a_jobs_targets_are_held_until_it_ends_and_only_its_own():
    """A finished file's target stays claimed by its job (so that a later
    file of the job cannot take its name) until the job ends; another
    job's stay."""
    from segdl.engine.run.files import Files
    from segdl.engine.run.filerun import JobRun

    files = Files()
    mine, other = JobRun(7, Path("/d"), 1, False, [None]), JobRun(8, Path("/e"), 1, False, [None])
    files.add_job(mine)
    files.add_job(other)
    files.claim_target(Path("/d/a.bin"), 7)
    files.claim_target(Path("/e/b.bin"), 8)
    assert files.writer_of(Path("/d/a.bin")) == 7
    files.job_ended(mine)
    assert [j.id for j in files.take_ended()] == [7]
    assert files.writer_of(Path("/d/a.bin")) is None
    assert files.writer_of(Path("/e/b.bin")) == 8
