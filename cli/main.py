"""``segdl``: each command parses options, calls one engine function and
renders what comes back.  Engine errors become a one-line message and the
documented exit code.

The commands live by group: ``cmd_get`` (get), ``cmd_jobs`` (pause,
resume, retry, limit), ``cmd_status``, ``cmd_ls``, ``cmd_service`` (serve, login,
ui), ``bench`` and ``demo``; the options they share in ``options``.  This
module makes the app and registers them, in the order ``--help`` lists."""

from __future__ import annotations

import sys

import typer

from .cmd_get import get
from .cmd_jobs import limit, pause, resume, retry
from .cmd_ls import ls_cmd
from .cmd_service import login, serve, ui
from .cmd_status import status

# Each command imports the engine parts and rich only when it runs: ``segdl
# --help`` or ``status`` does not load libcurl, multiprocess or sqlite-utils.

app = typer.Typer(
    help="Segmented, crash-safe bulk downloads: libcurl workers, a SQLite journal, blake3 verification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (click's formatter): rewraps paragraphs to the terminal,
    # and does not load rich and markdown-it to print it (-40 ms).
    rich_markup_mode=None,
)

for _command in (get, pause, resume, status):
    app.command()(_command)
app.command(name="ls")(ls_cmd)
for _command in (retry, limit, serve, login, ui):
    app.command()(_command)

from .bench import bench as _bench  # noqa: E402  (imports its engine part lazily)
from .demo import demo as _demo  # noqa: E402
from .verify import verify as _verify  # noqa: E402

app.command(name="bench")(_bench)
app.command(name="demo")(_demo)
app.command(name="verify")(_verify)


def _hf_cache_argv(argv: list[str]) -> list[str]:
    """``--hf-cache`` takes an optional DIR, which click cannot say: a bare
    ``--hf-cache`` becomes ``--hf-cache=`` (the default cache), unless a
    folder (not a URL, reference or option) follows it."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a == "--hf-cache":
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and not nxt.startswith("-") and "://" not in nxt:
                out.append(f"--hf-cache={nxt}")
                i += 2
                continue
            out.append("--hf-cache=")
        else:
            out.append(a)
        i += 1
    return out


def main() -> None:  # pragma: no cover - console script entry
    app(args=_hf_cache_argv(sys.argv[1:]), prog_name="segdl")


if __name__ == "__main__":  # pragma: no cover
    main()
