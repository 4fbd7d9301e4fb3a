"""Model hubs as sources: a reference (``hf://...``, ``civitai://...``, a
CivitAI page URL) becomes a collection of :class:`~segdl.engine.values.request.Request`
values, with the sizes and hashes the hub lists, which the engine then
downloads like any manifest.

* :mod:`.hf`, :mod:`.civitai`: each hub's pure rules (references, globs,
  file selection, layouts, the HF cache's paths).
* :mod:`.errors`: what a hub's error answers mean (pure).
* :mod:`.fetch`: the listing calls (the only I/O with a hub here).
* :mod:`.hf_listing`, :mod:`.civitai_listing`: a reference to a
  :class:`Listing`, using the two above.
* :mod:`.tokens`: where tokens come from (never stored, never printed).
* :mod:`.listing`: the values a reference lists into (:class:`Listing`).
* :mod:`.presence`: which listed files are here, partial or missing.
* :mod:`.hfcache`: the HF cache's snapshot links and refs, after a job.

This package's own module holds only :func:`is_hub_ref`, which is cheap
to import; the CLI loads the rest when a hub reference is given.
"""

from __future__ import annotations

import os
import re
from typing import Mapping
from urllib.parse import urlsplit


CIVITAI_PAGE_HOSTS = frozenset({"civitai.com", "www.civitai.com"})
_CIVITAI_PAGE = re.compile(r"^/(models|collections)/(\d+)(?:/[^/]*)?/?$")


def is_hub_ref(text: str, env: Mapping[str, str] = os.environ) -> bool:
    """``hf://...``, ``civitai://...``, or a CivitAI page URL (on
    civitai.com or ``CIVITAI_ENDPOINT``'s host).  Cheap: ``segdl get URL``
    asks it of every URL and loads no hub module for a plain one."""
    if text.startswith(("hf://", "civitai://")):
        return True
    return text.startswith(("http://", "https://")) and is_civitai_page(text, env)


def is_civitai_page(text: str, env: Mapping[str, str] = os.environ) -> bool:
    try:
        p = urlsplit(text)
        host = (p.hostname or "").lower()
    except ValueError:
        return False
    if p.scheme not in ("http", "https") or not _CIVITAI_PAGE.match(p.path):
        return False
    endpoint = urlsplit(env.get("CIVITAI_ENDPOINT") or "https://civitai.com").netloc.lower()
    return host in CIVITAI_PAGE_HOSTS or p.netloc.lower() == endpoint


def resolve(ref: str, opts, on_message=lambda m: None):
    """See :func:`segdl.engine.inputs.hubs.listing.resolve`."""
    from .listing import resolve as _resolve

    return _resolve(ref, opts, on_message)


__all__ = ["is_hub_ref", "is_civitai_page", "resolve"]
