"""``segdl ui``: a Textual terminal UI onto the engine, in this process or
attached to a running ``segdl serve``.  Textual is imported here only:
``segdl get`` never loads it.

* ``client``: one interface onto the engine, local or over HTTP;
* ``sources``: what to download, as a job body and the picker's entries;
* ``fmt``: sizes, speeds, ETA, a bar, the job's total (pure);
* ``picker``, ``live``, ``dialogs``: the screens; ``app``: the app.
"""

from __future__ import annotations

from pathlib import Path

from segdl.engine.rules.lifecycle import FINAL

from .client import ClientError, attach, local_engine

__all__ = ["ClientError", "run_ui"]


def _plan(urls: list[str], input_file: Path | None, dest: Path, journal: Path | None, attached: bool,
          transfer=None):
    """(collection for the picker, or a job body to start at once, or neither)."""
    from segdl.engine.inputs.hubs import is_hub_ref

    from . import sources

    refs = [u for u in urls if is_hub_ref(u)]
    given = sum(1 for x in (refs, [u for u in urls if u not in refs], [input_file] if input_file else []) if x)
    if given > 1 or len(refs) > 1:
        raise ClientError("give URLs, one hub reference or -i FILE (one of them)")
    if input_file is not None:
        return sources.from_file(input_file, dest, journal, attached=attached), None
    if refs:
        return sources.from_ref(refs[0], dest, journal, attached=attached, transfer=transfer), None
    if len(urls) > 1:
        return sources.from_urls(urls, dest, journal, attached=attached), None
    if urls:
        body = {"urls": urls}
        if attached:
            body["dest"] = str(Path(dest).absolute())
        return None, body
    return None, None


def run_ui(urls: list[str], input_file: Path | None, settings, *, attached: bool, dest_given: bool) -> int:
    """Run the UI until the user quits; the exit code."""
    from segdl.engine.values.errors import SegdlError

    from .app import SegdlUI

    dest, journal = Path(settings.dest), settings.journal
    remote = attach(journal) if attached else None  # before listing anything: is it there?
    try:
        collection, body = _plan(urls, input_file, dest, journal, attached and dest_given, settings.transfer)
    except SegdlError as e:
        raise ClientError(e.message) from None
    if remote is not None:
        fields = {"dest": str(dest.absolute())} if dest_given else {}
        app = SegdlUI(remote, collection=collection, body=body, job_fields=fields)
        app.run()
        return app.return_code or 0
    dest.mkdir(parents=True, exist_ok=True)
    with local_engine(settings, [dest]) as client:
        app = SegdlUI(client, collection=collection, body=body)
        app.run()
    if app.live is not None and any(f["state"] not in FINAL for f in app.live.rows.values()):
        import sys

        print("segdl: stopped; 'segdl ui' or 'segdl resume' continues where it left off", file=sys.stderr)
    return app.return_code or 0
