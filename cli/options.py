"""What the commands share: the options more than one of them takes, and
turning bad input or an engine error into a message and an exit code."""

from __future__ import annotations

from typing import List, Optional

import typer

from segdl.engine.values.errors import EXIT_USAGE, SegdlError

from .console import say

JournalOpt = typer.Option(None, "--journal", envvar="SEGDL_JOURNAL", help="Journal file (default: $XDG_STATE_HOME/segdl/journal.sqlite).")
HeaderOpt = typer.Option([], "-H", "--header", help="Extra request header, 'Name: value' (repeatable).")
RayOpt = typer.Option(None, "--ray", metavar="ADDRESS", help="Run on the Ray cluster at ADDRESS ('auto': $RAY_ADDRESS or the local one); needs segdl[ray].")
RayJournalsOpt = typer.Option(None, "--ray-journals", help="With --ray: folder of each node's journal (default: the node's $XDG_STATE_HOME/segdl/ray). A shared path lets a node resume a lost node's files.")


def fail(e: SegdlError) -> "typer.Exit":
    say(e.message, "red")
    return typer.Exit(e.exit_code)


def rate_option(value: Optional[str], name: str) -> int:
    if value is None:
        return 0
    from segdl.engine.rules.bandwidth import parse_rate

    try:
        return parse_rate(value)
    except ValueError as e:
        say(f"{name}: {e}", "red")
        raise typer.Exit(EXIT_USAGE)


# Options of the hub references (get and ls).
IncludeOpt = typer.Option([], "--include", help="Hugging Face: only files matching this glob (repeatable; fnmatch, case-sensitive, 'dir/' is a folder).")
ExcludeOpt = typer.Option([], "--exclude", help="Hugging Face: leave out files matching this glob (repeatable).")
HfCacheOpt = typer.Option(None, "--hf-cache", metavar="[DIR]", help="Hugging Face: lay files out as the HF cache (default $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub); --hf-cache=DIR for another.")
AllVersionsOpt = typer.Option(False, "--all-versions", help="CivitAI: every version of a model, not only the latest.")
AllFilesOpt = typer.Option(False, "--all-files", help="CivitAI: every file of a version, not only the primary one.")
TypeOpt = typer.Option([], "--type", help="CivitAI: only files of this type (Model, VAE, Config, 'Training Data'; repeatable).")
FormatOpt = typer.Option([], "--format", help="CivitAI: only files of this format (SafeTensor, PickleTensor; repeatable).")
LayoutOpt = typer.Option(None, "--layout", help="CivitAI: paths under -d, default '{collection}/{model}/{file}' (see README for the fields).")
TokenEnvOpt = typer.Option(None, "--token-env", metavar="NAME", help="CivitAI: read the API key from this environment variable (default CIVITAI_TOKEN).")


def hub_args(include, exclude, hf_cache, all_versions, all_files, types, formats, layout, token_env, collection):
    from .hubs import HubArgs

    if token_env is not None and not token_env.replace("_", "").isalnum():
        say("--token-env takes the NAME of an environment variable, not a token", "red")
        raise typer.Exit(EXIT_USAGE)
    return HubArgs(tuple(include), tuple(exclude), hf_cache, all_versions, all_files, tuple(types),
                   tuple(formats), layout, token_env, collection)


def check_headers(headers: List[str]) -> None:
    for h in headers:
        if ":" not in h:
            say(f"header {h!r} is not 'Name: value'", "red")
            raise typer.Exit(EXIT_USAGE)
