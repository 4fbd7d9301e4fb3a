"""``segdl get --ray`` and ``segdl status --ray``: the CLI's door onto
``segdl.engine.cluster``.  Imported only when ``--ray`` is given, so
plain ``segdl get`` loads neither Ray nor this."""

from __future__ import annotations

import json
import sys

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn

from segdl.engine.cluster.report import ClusterProgress
from segdl.engine.values.errors import EXIT_INTERRUPTED, SegdlError
from segdl.engine.rules.lifecycle import COMPLETE
from segdl.engine.values.results import FileResult

from .console import cell, make_console, say, shown


class ClusterView:
    """A total row, then one row per node."""

    def __init__(self, console: Console) -> None:
        cols = (TextColumn("{task.description}", markup=False), BarColumn(bar_width=None),
                DownloadColumn(binary_units=True), TransferSpeedColumn())
        self.bars = Progress(*cols, console=console, expand=True)
        self.total = self.bars.add_task("total", total=None)
        self.rows: dict[str, TaskID] = {}
        self.live = Live(Group(self.bars), console=console, refresh_per_second=4)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)

    def update(self, p: ClusterProgress) -> None:
        self.bars.update(self.total, description=f"total [{p.finished}/{p.files} files]",
                         completed=p.done, total=p.size or None)
        for n in p.nodes:
            if n.name not in self.rows:
                self.rows[n.name] = self.bars.add_task(shown(n.name), total=None)
            label = f"{shown(n.name)} [{n.finished}/{n.files}]" + ("" if n.alive else " (lost)")
            self.bars.update(self.rows[n.name], description=label, completed=n.done, total=n.size or None)


def json_line(result: FileResult, node: str) -> None:
    from .jsonlines import print_json_line

    print_json_line(result, sys.stdout, {"node": node})


def run(requests, settings, *, address, mode, journals, as_json: bool, quiet: bool, collection) -> int:
    from segdl.engine.cluster import driver

    from .render import print_summary

    console = make_console(stderr=True)
    interactive = console.is_terminal and not as_json and not quiet

    def message(m: str) -> None:
        if not quiet:
            say(m)

    kw = dict(address=address, mode=mode, journals=journals, collection=collection, on_message=message,
              on_result=json_line if as_json else None)
    try:
        if interactive:
            with ClusterView(console) as view:
                results = driver.download(requests, settings, on_progress=view.update, **kw)
        else:
            results = driver.download(requests, settings, **kw)
    except KeyboardInterrupt:
        say("interrupted; run the same command again to continue")
        return EXIT_INTERRUPTED
    except SegdlError as e:
        say(e.message, "red")
        return e.exit_code
    if not as_json and not quiet:
        print_summary(make_console(), results, nodes=results.nodes)
    return results.exit_code


def status(*, address, journals, collection, as_json: bool) -> int:
    from rich.table import Table

    from segdl.engine.cluster import driver
    from segdl.engine.inputs.naming import redact_url

    try:
        rows = driver.status(address, journals)
    except SegdlError as e:
        say(e.message, "red")
        return e.exit_code
    out = [{"node": node, "id": r["id"], "collection": r["collection"], "path": r["path"],
            "url": redact_url(r["url"]), "state": r["state"], "size": r["size"],
            "bytes_done": r["size"] if r["state"] in COMPLETE else (r["bytes_done"] or 0),
            "blake3": r["blake3"], "error": r["error"]}
           for node, r in rows if collection is None or r["collection"] == collection]
    if as_json:
        for o in out:
            print(json.dumps(o, sort_keys=True))
        return 0
    t = Table(title=f"{len(out)} files on {len({o['node'] for o in out})} node(s)", title_justify="left")
    for c in ("node", "state", "path", "done", "size", "detail"):
        t.add_column(c, overflow="fold")
    for o in out:
        t.add_row(cell(o["node"]), o["state"], cell(o["path"]), f"{o['bytes_done']:,}",
                  "?" if o["size"] is None else f"{o['size']:,}", cell(o["error"] or ""))
    make_console().print(t)
    return 0
