"""Model hubs as sources: a reference (``hf://...``, ``civitai://...``, a
CivitAI page URL) becomes a collection of :class:`~segdl.engine.request.Request`
values, with the sizes and hashes the hub lists, which the engine then
downloads like any manifest.

* :mod:`.hf`, :mod:`.civitai`: each hub's pure rules (references, globs,
  file selection, layouts, the HF cache's paths).
* :mod:`.errors`: what a hub's error answers mean (pure).
* :mod:`.fetch`: the listing calls (the only I/O with a hub here).
* :mod:`.hf_listing`, :mod:`.civitai_listing`: a reference to a
  :class:`Listing`, using the two above.
* :mod:`.tokens`: where tokens come from (never stored, never printed).
* :mod:`.presence`: which listed files are here, partial or missing.
* :mod:`.hfcache`: the HF cache's snapshot links and refs, after a job.

Only :func:`is_hub_ref` is light to import; the CLI loads the rest when a
hub reference is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..errors import SegdlError


def is_hub_ref(text: str, env: Mapping[str, str] = os.environ) -> bool:
    if text.startswith(("hf://", "civitai://")):
        return True
    if text.startswith(("http://", "https://")):
        from .civitai import is_page_url

        return is_page_url(text, env)
    return False


@dataclass(frozen=True, slots=True)
class Problem:
    """A part of a reference that gives no file: an archived model, a
    model of a collection that failed.  Reported like a failed file."""

    what: str
    error: SegdlError


@dataclass(frozen=True)
class HubOptions:
    dest: Path = Path(".")
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hf_cache: Path | None = None  # lay files out as the HF cache, there
    all_versions: bool = False
    all_files: bool = False
    types: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    layout: str | None = None
    token_env: str | None = None  # CivitAI: the variable holding the token
    collection: str | None = None  # {collection} in a CivitAI layout
    transfer: object = None  # TransferOptions for the listing calls (TLS options)


@dataclass(frozen=True)
class Listing:
    ref: str
    hub: str  # "hf" | "civitai"
    dest: Path  # the folder the requests' paths are relative to
    collection: str | None
    requests: tuple = ()  # Request values
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    source: dict = field(default_factory=dict)  # kept with the job: the reference, the pinned commit
    calls: int = 0  # listing requests made


def resolve(ref: str, opts: HubOptions, on_message: Callable[[str], None] = lambda m: None) -> Listing:
    """List a hub reference (network: the hub's API only, no file)."""
    if ref.startswith("hf://"):
        from .hf_listing import list_hf

        return list_hf(ref, opts, on_message)
    from .civitai_listing import list_civitai

    return list_civitai(ref, opts, on_message)


__all__ = ["is_hub_ref", "resolve", "HubOptions", "Listing", "Problem"]
