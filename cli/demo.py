"""``segdl demo``: the main job, with no network.

It starts two local mirrors on 127.0.0.1 (segdl's built-in file server,
paced per connection by the kernel so the progress is visible), makes a
small sample collection, and downloads it with the live view: several
files at once, one from two mirrors, one whose first response breaks off
and heals.  Every file is verified by its blake3.  Then it says where the
files are and what to try next, and cleans up unless ``--keep``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import typer

from .console import err, say, shown

# name -> (size, seed); the names a model-hub collection would have.
SAMPLE = {
    "llama-lora-a.safetensors": (24 << 20, 11),
    "llama-lora-b.safetensors": (24 << 20, 12),
    "vae.safetensors": (40 << 20, 13),  # from two mirrors
    "unet-part-00001.safetensors": (16 << 20, 14),
    "tokenizer.json": (3 << 20, 15),  # its first response breaks off once
    "config.json": (2345, 16),
}
MIRRORED = "vae.safetensors"
FLAKY = "tokenizer.json"


def _rate(text: str) -> int:
    from segdl.engine.rules.bandwidth import parse_rate

    try:
        return parse_rate(text)
    except ValueError as e:
        say(f"--rate: {e}", "red")
        raise typer.Exit(2)


def demo(
    keep: Optional[Path] = typer.Option(
        None, "--keep", help="Keep the files, the mirror and the journal in this folder "
        "(run the same command again to resume after Ctrl-C)."),
    rate: str = typer.Option("2M", "--rate", help="Pace of each mirror connection, e.g. 2M (1024-based)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress or summary."),
) -> None:
    """Show the main job on local mirrors, no network.

    A sample collection downloads with the live view, several files at
    once: one from two mirrors, one that breaks off once and heals. Every
    file is verified by blake3.

    \b
    Example:
      segdl demo --keep /tmp/segdl-demo
    """
    from segdl.engine.values.request import Request, Settings

    from .fileserver import FileServer
    from .localmirror import write_file
    from .cmd_get import run_job as _run

    pace = _rate(rate)
    base = keep.resolve() if keep is not None else Path(tempfile.mkdtemp(prefix="segdl-demo-"))
    mirror_root, out, journal = base / "mirror", base / "files", base / "journal.sqlite"
    mirror_root.mkdir(parents=True, exist_ok=True)
    for name, (size, seed) in SAMPLE.items():
        p = mirror_root / name
        if not p.exists() or p.stat().st_size != size:  # kept: same bytes, same ETag, so a re-run resumes
            write_file(p, size, seed)
    try:
        from segdl.engine.disk.verify import digest_file

        digests = {name: digest_file(mirror_root / name).blake3 for name in SAMPLE}
        with FileServer(mirror_root, rate=pace, fail_once={FLAKY}) as a, FileServer(mirror_root, rate=pace) as b:
            requests = [Request(a.url(name), path=f"demo/{name}", blake3=digests[name],
                                mirrors=(b.url(name),) if name == MIRRORED else ())
                        for name in SAMPLE]
            if not quiet:
                err.print(f"segdl demo: {len(SAMPLE)} files from two local mirrors at {shown(rate)}/s per "
                          f"connection; {MIRRORED} comes from both, {FLAKY} breaks off once")
            code = _run(requests, Settings(dest=out, connections=4, concurrent_files=len(SAMPLE), journal=journal),
                        as_json=False, quiet=quiet, collection="demo")
        if not quiet:
            verified = sum(1 for name in SAMPLE if (out / "demo" / name).exists())
            where = out / "demo" if keep is not None else "a temporary folder (removed now; --keep DIR keeps it)"
            err.print(f"segdl demo: {verified} of {len(SAMPLE)} files verified by blake3, in {shown(where)}")
            j = f" --journal {journal}" if keep is not None else ""
            tips = [(f"segdl status{j}", "every file, its state and bytes"),
                     ("segdl get URL... -d DIR", "your own files (or -i manifest.json)"),
                     (f"segdl pause TARGET{j}", "in another terminal, while a job runs"),
                     ("Ctrl-C, then the same command", "it continues where it stopped")]
            err.print("Try next:\n" + "\n".join(f"  {shown(c)}\n      {w}" for c, w in tips))
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    raise typer.Exit(code)
