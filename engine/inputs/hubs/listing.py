"""What a hub reference lists into: the requests for the engine, what
the hub will not give (problems), and the source the journal keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...values.errors import SegdlError


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


__all__ = ["resolve", "HubOptions", "Listing", "Problem"]
