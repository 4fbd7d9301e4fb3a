"""What a client's job names (``POST /jobs``, ``POST /review``, the
terminal UI through :class:`.service.Service`): exactly one of ``urls``,
``manifest``, ``aria2`` or ``ref`` (a hub reference) becomes the requests,
the collection's name and the hub source, each checked as ``segdl get``
checks its inputs; ``select`` then keeps the files it names."""

from __future__ import annotations

import json
from pathlib import Path

from . import validation
from ..values.errors import UsageError
from ..values.request import Request

KINDS = ("urls", "manifest", "aria2", "ref")


def requests_of(body: dict, dest: Path, transfer) -> tuple[list[Request], str | None, dict | None]:
    """The requests of ``body`` (checked by :data:`validation.JOB`
    already), its collection's name and its hub source (None but for a
    ``ref``).  A hub listing is resolved for ``dest``, with ``transfer``
    (the service's transfer settings)."""
    given = [k for k in KINDS if k in body]
    if len(given) != 1:
        raise UsageError("give exactly one of urls, manifest, aria2, ref")
    kind = given[0]
    try:
        return _parse(kind, body, dest, transfer)
    except validation.FieldError:
        raise
    except UsageError as e:  # the manifest's own checks: "urls: files[2].url: ..."
        raise validation.FieldError(kind, e.message, prefixed=True) from None


def _parse(kind: str, body: dict, dest: Path, transfer) -> tuple[list[Request], str | None, dict | None]:
    from ..inputs.manifest import parse_input

    if kind == "urls":  # checked as a manifest's URLs are
        m = parse_input(json.dumps({"files": [{"url": u} for u in body["urls"]]}), source="urls")
        return list(m.requests), None, None
    if kind == "manifest":
        m = parse_input(json.dumps(body["manifest"]), source="manifest")
        return list(m.requests), m.collection, None
    if kind == "aria2":
        m = parse_input(body["aria2"], source="aria2")
        return list(m.requests), m.collection, None
    from ..inputs.hubs import is_hub_ref, resolve
    from ..inputs.hubs.listing import HubOptions

    ref = body["ref"]
    if not is_hub_ref(ref):
        raise UsageError("ref is a hub reference (hf://..., civitai://..., a CivitAI page URL)")
    listing = resolve(ref, HubOptions(dest=dest, transfer=transfer))
    return list(listing.requests), listing.collection, listing.source


def select(requests: list[Request], select: list | None) -> list[Request]:
    """The requests ``select`` names (checked: paths, URLs or indexes)."""
    if select is None:
        return requests
    by_name: dict[str, list[Request]] = {}
    for r in requests:
        for key in {r.path, r.url} - {None}:
            by_name.setdefault(key, []).append(r)
    out = []
    for i, item in enumerate(select):
        if isinstance(item, int):
            if item >= len(requests):
                raise validation.FieldError(f"select[{i}]", f"the job has {len(requests)} files, no index {item}")
            out.append(requests[item])
        elif item in by_name:
            out.extend(by_name[item])
        else:
            raise validation.FieldError(f"select[{i}]", f"no file {item!r} in the job")
    return list(dict.fromkeys(out))
