"""``segdl verify [COLLECTION | PATH...]``: hash finished files again
against the journal (engine/reverify.py) and say, for each, ``ok``,
``corrupt`` or ``missing``; a corrupt one is moved aside (``NAME.corrupt``)
and, as a missing one, recorded as a hash mismatch, so ``segdl retry``
fetches it again.

Exit code: 0 when every file checked is ok, 4 (as for a hash mismatch)
when any is corrupt or missing, 2 when nothing matches what was named."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .console import say, shown


def verify(
    targets: List[str] = typer.Argument(None, help="Collections, files or folders (default: every finished file)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per file, then a summary line."),
    journal: Optional[Path] = typer.Option(None, "--journal", envvar="SEGDL_JOURNAL", help="Journal file (default: $XDG_STATE_HOME/segdl/journal.sqlite)."),
) -> None:
    """Re-hash finished files: ok, corrupt or missing.

    A corrupt file is moved aside to NAME.corrupt; a corrupt or missing
    file is recorded in the journal as a hash mismatch, and 'segdl retry'
    then fetches it again. Exit code 0 if all
    are ok, 4 if any is corrupt or missing.

    \b
    Examples:
      segdl verify
      segdl verify my-loras
      segdl verify models/sd15
    """
    import json

    from segdl.engine.doors import reverify
    from segdl.engine.values.errors import EXIT_HASH_MISMATCH, EXIT_USAGE, SegdlError
    from segdl.engine.journal.writer import Journal

    try:
        j = Journal(journal)
    except SegdlError as e:
        say(e.message, "red")
        raise typer.Exit(e.exit_code)
    try:
        try:
            rows = reverify.choose(reverify.finished(j), list(targets or []))
        except LookupError as e:
            say(str(e.args[0]), "red")
            raise typer.Exit(EXIT_USAGE)
        outcomes = []
        for row in rows:
            o = reverify.check(row)
            outcomes.append(o)
            if as_json:
                print(json.dumps(o.as_dict()), flush=True)
            else:
                print(f"{o.result:9} {shown(o.path)}" + (f"  ({shown(o.detail)})" if o.detail else ""), flush=True)
        reverify.record(j, outcomes)
    finally:
        j.close()
    counts = reverify.summary(outcomes)
    if as_json:
        print(json.dumps({"summary": counts}), flush=True)
    else:
        say(", ".join(f"{n} {k}" for k, n in counts.items() if n) or "no finished file to verify", None)
    raise typer.Exit(EXIT_HASH_MISMATCH if counts["corrupt"] or counts["missing"] else 0)
