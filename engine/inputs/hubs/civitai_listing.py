"""A CivitAI reference to a :class:`~segdl.engine.inputs.hubs.listing.Listing`.

A model or a version is one call of the public API (``/api/v1/models``,
``/api/v1/model-versions``).  A collection is its metadata (its name)
and then its items through the site's own tRPC ``model.getAll``: the
public API has no item listing, so this one is unofficial, needs the
user's API key, and fails with a clear message if its shape changes.
Then one call per model of the collection; a model that fails is that
model's problem, the others go on.
"""

from __future__ import annotations

from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from ...values.errors import SegdlError, UsageError
from ..manifest import check_path
from ...values.messages import TransferOptions
from ..naming import same_origin
from ...values.request import Request
from . import civitai
from .listing import HubOptions, Listing, Problem
from .fetch import MAX_PAGES, Client
from .tokens import auth_header, env_credential


def _rebase(url: str, base: str) -> str:
    """A civitai.com download URL, on ``CIVITAI_ENDPOINT`` when it is set."""
    p = urlsplit(url)
    if (p.hostname or "").lower() in civitai.PAGE_HOSTS:
        b = urlsplit(base)
        return urlunsplit((b.scheme, b.netloc, p.path, p.query, ""))
    if not p.scheme:  # relative to the API
        return base + (url if url.startswith("/") else "/" + url)
    return url


def _collection_models(client: Client, base: str, ident: int, what: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    cursor = None
    seen = set()
    for _ in range(MAX_PAGES):
        doc, _ans = client.get(civitai.trpc_url(base, ident, cursor), what)
        items, cursor = civitai.trpc_page(doc, what)
        out += [it for it in items if it[0] not in {x[0] for x in out}]
        if cursor is None or cursor in seen:
            break
        seen.add(cursor)
    return out


def list_civitai(text: str, opts: HubOptions, on_message: Callable[[str], None]) -> Listing:
    ref = civitai.parse_ref(text)
    base = civitai.endpoint()
    credential = env_credential(opts.token_env or "CIVITAI_TOKEN")
    client = Client("civitai", base, opts.transfer or TransferOptions(), auth_header(credential), on_message)
    sel = civitai.Selection(opts.all_versions, opts.all_files, opts.types, opts.formats)
    template = civitai.check_layout(opts.layout) if opts.layout else (
        civitai.DEFAULT_LAYOUT_VERSIONS if opts.all_versions else civitai.DEFAULT_LAYOUT)
    what = ref.text
    collection = opts.collection or ""
    jobs: list[tuple[str, Callable[[], tuple[dict, int | None]]]] = []
    if ref.kind == "version":
        def one_version():
            doc, _ = client.get(civitai.version_url(base, ref.id), what)
            return civitai.version_as_model(doc, what)
        jobs.append((what, one_version))
    else:
        if ref.kind == "collection":
            meta, _ = client.get(civitai.collection_url(base, ref.id), what)
            name = meta.get("name") if isinstance(meta, dict) else None
            collection = opts.collection or (str(name) if name else f"collection-{ref.id}")
            models = _collection_models(client, base, ref.id, what)
            if not models:
                on_message(f"{what} ({collection}): the collection lists no models")
        else:
            models = [(ref.id, "")]
        for mid, _name in models:
            def one_model(mid=mid):
                doc, _ = client.get(civitai.model_url(base, mid), f"civitai://model/{mid}")
                return doc, ref.version if ref.kind == "model" else None
            jobs.append((f"civitai://model/{mid}", one_model))

    requests: list[Request] = []
    problems: list[Problem] = []
    notes: list[str] = []
    claimed: dict[str, str] = {}
    for label, fetch_model in jobs:
        try:
            model, version = fetch_model()
            if not isinstance(model, dict):
                raise UsageError(f"{label}: the model answer is not an object")
            files, more = civitai.model_files(model, version, sel, label, collection)
        except SegdlError as e:  # one model's failure never stops the others
            problems.append(Problem(label, e))
            continue
        notes += more
        for f in files:
            try:
                path = check_path(civitai.layout_path(template, f.fields), f"{label}: {f.name!r}")
            except UsageError as e:
                problems.append(Problem(label, e))
                continue
            if path in claimed:
                problems.append(Problem(label, UsageError(
                    f"{label}: {f.name!r} would land at {path}, already used by {claimed[path]}; "
                    "use --layout with {version} or {file_id}")))
                continue
            claimed[path] = label
            url = _rebase(f.url, base)
            requests.append(Request(url, path, size=f.size, sha256=None if f.blake3 else f.sha256,
                                    blake3=f.blake3, credential=credential if same_origin(url, base) else None,
                                    hub="civitai"))
    source = {"hub": "civitai", "ref": text, "key": f"civitai:{base}/{ref.text}"}
    return Listing(text, "civitai", opts.dest, collection or None, tuple(requests), tuple(problems),
                   tuple(notes), source, client.calls)
