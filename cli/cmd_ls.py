"""``segdl ls``: a hub's or a manifest's files, here, partial or missing."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from segdl.engine.values.errors import EXIT_USAGE, SegdlError

from .console import say
from .options import (AllFilesOpt, AllVersionsOpt, ExcludeOpt, FormatOpt, HfCacheOpt, IncludeOpt, JournalOpt,
                      LayoutOpt, TokenEnvOpt, TypeOpt, fail, hub_args)


def ls_cmd(
    ref: Optional[str] = typer.Argument(None, help="A hub reference (hf://..., civitai://..., a CivitAI page URL)."),
    input_file: Optional[Path] = typer.Option(None, "-i", "--input-file", help="A manifest or aria2 input file instead."),
    dest: Path = typer.Option(Path("."), "-d", "--dir", help="Target folder, as for get."),
    journal: Optional[Path] = JournalOpt,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file on stdout."),
    collection: Optional[str] = typer.Option(None, "--collection", help="CivitAI: {collection} of the layout."),
    include: List[str] = IncludeOpt,
    exclude: List[str] = ExcludeOpt,
    hf_cache: Optional[str] = HfCacheOpt,
    all_versions: bool = AllVersionsOpt,
    all_files: bool = AllFilesOpt,
    file_type: List[str] = TypeOpt,
    file_format: List[str] = FormatOpt,
    layout: Optional[str] = LayoutOpt,
    token_env: Optional[str] = TokenEnvOpt,
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify TLS certificates."),
    ca_cert: Optional[Path] = typer.Option(None, "--ca-cert", help="CA bundle for TLS verification."),
) -> None:
    """List a hub's or a manifest's files: here, partial or missing.

    Per file: path, size, hash, and "here" (done in the journal, or the
    same hash done under another path, which get then links), "partial"
    (with its bytes done) or "missing".  Lists the hub (its API only);
    downloads nothing.

    \b
    Examples:
      segdl ls hf://org/name --include '*.safetensors'
      segdl ls civitai://collection/123 -d loras --json
    """
    if (ref is None) == (input_file is None):
        say("give a hub reference or -i FILE", "red")
        raise typer.Exit(EXIT_USAGE)
    from segdl.engine.values.messages import TransferOptions

    from .hubs import ls as run_ls

    args = hub_args(include, exclude, hf_cache, all_versions, all_files, file_type, file_format,
                     layout, token_env, collection)
    try:
        if ref is not None:
            from segdl.engine.inputs.hubs import is_hub_ref

            if not is_hub_ref(ref):
                say(f"{ref!r} is not a hub reference (hf://..., civitai://..., a CivitAI page URL)", "red")
                raise typer.Exit(EXIT_USAGE)
        code = run_ls(ref, input_file, args, dest, TransferOptions(insecure=insecure, ca_cert=str(ca_cert) if ca_cert else None),
                      journal, as_json)
    except SegdlError as e:
        raise fail(e)
    raise typer.Exit(code)
