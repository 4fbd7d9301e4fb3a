"""The package list in pyproject.toml names every package under engine/ and
cli/: a new subpackage left out would install without its files."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_installed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("engine", "segdl.engine"), ("cli", "segdl.cli")):
        for init in (REPO / top).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(REPO / top).parts]))
    assert found == listed


def test_each_engine_package_says_what_it_holds():
    for init in (REPO / "engine").glob("*/__init__.py"):
        doc = init.read_text().lstrip()
        assert re.match(r'"""\S', doc), init  # a docstring, first thing
