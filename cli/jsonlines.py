"""``--json``: one line per file as it ends.  No rich here: a run with
``--json`` or ``-q`` shows no live view, and loads none (about 30 ms of
start-up)."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from segdl.engine.values.results import FileResult


def result_line(result: FileResult) -> dict:
    """A result as its JSON line says it: credentials in its URL hidden."""
    from segdl.engine.inputs.naming import hide_userinfo

    return {**result.as_dict(), "url": hide_userinfo(result.url)}


def print_json_line(result: FileResult, out: TextIO = sys.stdout, extra: dict | None = None) -> None:
    """One file's result as one JSON line, flushed at once (a consumer can
    act on each file as it ends); ``extra``: fields it adds (``--ray``: the
    node)."""
    out.write(json.dumps({**result_line(result), **(extra or {})}, sort_keys=True) + "\n")
    out.flush()
