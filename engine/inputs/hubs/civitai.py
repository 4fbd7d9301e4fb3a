"""CivitAI references, file selection and layout.  Pure: no I/O.

References: ``civitai://model/ID[@VERSION]``, ``civitai://version/ID``,
``civitai://collection/ID``, or a page URL pasted as it is
(``https://civitai.com/models/ID[/slug][?modelVersionId=V]``,
``https://civitai.com/collections/ID``), which is resolved against
``CIVITAI_ENDPOINT`` like every API call.
"""

from __future__ import annotations

import json
import os
import re
import string
from dataclasses import dataclass
from typing import Iterable, Mapping
from urllib.parse import parse_qs, quote, urlsplit

from ...values.errors import HubGoneError, HubProtocolError, UsageError

DEFAULT_ENDPOINT = "https://civitai.com"
from . import CIVITAI_PAGE_HOSTS as PAGE_HOSTS, _CIVITAI_PAGE as _PAGE  # noqa: E402
DEFAULT_LAYOUT = "{collection}/{model}/{file}"
DEFAULT_LAYOUT_VERSIONS = "{collection}/{model}/{version}/{file}"  # with --all-versions
FIELDS = ("collection", "model", "model_id", "version", "version_id", "type", "base_model",
          "file", "file_id", "format")
_SCHEME = re.compile(r"^civitai://(model|version|collection)/(\d+)(?:@(\d+))?/?$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class CivitaiRef:
    kind: str  # model | version | collection
    id: int
    version: int | None = None  # model@VERSION, or a page's ?modelVersionId=

    @property
    def text(self) -> str:
        return f"civitai://{self.kind}/{self.id}" + (f"@{self.version}" if self.version else "")


def endpoint(env: Mapping[str, str] = os.environ) -> str:
    return (env.get("CIVITAI_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_page_url(text: str, env: Mapping[str, str] = os.environ) -> bool:
    from . import is_civitai_page

    return is_civitai_page(text, env)


def parse_ref(text: str, env: Mapping[str, str] = os.environ) -> CivitaiRef:
    m = _SCHEME.match(text)
    if m:
        kind, ident, version = m.group(1), int(m.group(2)), m.group(3)
        if version and kind != "model":
            raise UsageError(f"{text!r}: only civitai://model/ID takes @VERSION")
        return CivitaiRef(kind, ident, int(version) if version else None)
    if text.startswith("civitai://"):
        raise UsageError(f"{text!r}: expected civitai://model/ID[@VERSION], civitai://version/ID "
                         "or civitai://collection/ID")
    if not is_page_url(text, env):
        raise UsageError(f"{text!r} is not a CivitAI reference")
    p = urlsplit(text)
    m = _PAGE.match(p.path)
    kind, ident = m.group(1), int(m.group(2))
    if kind == "collections":
        return CivitaiRef("collection", ident)
    v = parse_qs(p.query).get("modelVersionId", [""])[-1]
    if v and not v.isdigit():
        raise UsageError(f"{text!r}: modelVersionId must be a number")
    return CivitaiRef("model", ident, int(v) if v else None)


def model_url(base: str, ident: int) -> str:
    return f"{base}/api/v1/models/{ident}"


def version_url(base: str, ident: int) -> str:
    return f"{base}/api/v1/model-versions/{ident}"


def collection_url(base: str, ident: int) -> str:
    return f"{base}/api/v1/collections/{ident}"


def trpc_url(base: str, collection: int, cursor: object = None) -> str:
    """The site's own (unofficial) listing of a collection's models."""
    args: dict = {"collectionId": collection, "period": "AllTime", "sort": "Newest", "authed": True}
    if cursor is not None:
        args["cursor"] = cursor
    return f"{base}/api/trpc/model.getAll?input=" + quote(json.dumps({"json": args}, separators=(",", ":")))


def trpc_page(doc: object, what: str) -> tuple[list[tuple[int, str]], object]:
    """((model id, name) of each item, next cursor or None) of one
    ``model.getAll`` answer; the shape is checked, as the API is not a
    public one and may change."""
    try:
        data = doc["result"]["data"]["json"]  # type: ignore[index]
        items = data["items"]
        cursor = data.get("nextCursor")
        out = []
        for it in items:
            if type(it["id"]) is not int:
                raise TypeError("id")
            out.append((it["id"], str(it.get("name") or it["id"])))
    except (KeyError, TypeError, AttributeError):
        raise HubProtocolError(
            f"{what}: the collection listing (CivitAI's unofficial tRPC model.getAll) is not in the shape "
            "segdl reads (result.data.json.items[].id, nextCursor); it may have changed") from None
    return out, cursor


# -------------------------------------------------------------- selection


@dataclass(frozen=True, slots=True)
class Selection:
    all_versions: bool = False
    all_files: bool = False
    types: tuple[str, ...] = ()  # file types: Model, VAE, Config, "Training Data", ...
    formats: tuple[str, ...] = ()  # metadata.format: SafeTensor, PickleTensor, ...


@dataclass(frozen=True, slots=True)
class CivitaiFile:
    url: str
    name: str
    size: int | None
    sha256: str | None
    blake3: str | None
    fields: tuple[tuple[str, str], ...]  # for the layout template


def _versions(model: dict, version: int | None, sel: Selection, what: str) -> list[dict]:
    versions = model.get("modelVersions")
    if not isinstance(versions, list):
        raise HubProtocolError(f"{what}: the model has no modelVersions list")
    if version is not None:
        chosen = [v for v in versions if isinstance(v, dict) and v.get("id") == version]
        if not chosen:
            from ...values.errors import RevisionNotFoundError

            raise RevisionNotFoundError(f"{what}: the model has no version {version}", status_code=404)
        return chosen
    if not versions:
        raise HubGoneError(f"{what}: the model has no versions (archived or removed)", status_code=0)
    return versions if sel.all_versions else versions[:1]  # the API lists the newest first


def _matches(f: dict, sel: Selection) -> bool:
    if sel.types and str(f.get("type", "")).lower() not in {t.lower() for t in sel.types}:
        return False
    fmt = (f.get("metadata") or {}).get("format") if isinstance(f.get("metadata"), dict) else None
    return not sel.formats or str(fmt or "").lower() in {x.lower() for x in sel.formats}


def pick_files(files: list[dict], sel: Selection) -> list[dict]:
    """The primary file (or the first, when none is marked), or with
    ``all_files`` every file; ``types``/``formats`` narrow the choice first."""
    candidates = [f for f in files if isinstance(f, dict) and _matches(f, sel)]
    if sel.all_files or not candidates:
        return candidates
    primary = [f for f in candidates if f.get("primary") is True]
    return primary[:1] or candidates[:1]


def _digest(hashes: object, name: str) -> str | None:
    if not isinstance(hashes, dict):
        return None
    for k, v in hashes.items():  # hub spelling varies: compare names case-insensitively
        if k.lower() == name.lower() and isinstance(v, str) and _HEX64.match(v.strip()):
            return v.strip().lower()
    return None


def _size(size_kb: object) -> int | None:
    if isinstance(size_kb, bool) or not isinstance(size_kb, (int, float)) or size_kb < 0:
        return None
    n = size_kb * 1024
    return round(n) if abs(n - round(n)) < 0.01 else None  # sizeKB is bytes / 1024


def model_files(model: dict, version: int | None, sel: Selection, what: str,
                collection: str = "") -> tuple[list[CivitaiFile], list[str]]:
    """Files to download from a model's description (``/api/v1/models``,
    or a version's, normalised by :func:`version_as_model`), and notes for
    a person (a version with no file of the asked type).  A model or
    version with no files at all is :class:`HubGoneError` (archived)."""
    name = str(model.get("name") or model.get("id"))
    out: list[CivitaiFile] = []
    notes: list[str] = []
    empty = []
    for v in _versions(model, version, sel, what):
        files = v.get("files") if isinstance(v.get("files"), list) else []
        if not files:
            empty.append(str(v.get("name") or v.get("id")))
            continue
        chosen = pick_files(files, sel)
        if not chosen:
            notes.append(f"{what} ({name}, version {v.get('name') or v.get('id')}): no file matches "
                         f"--type/--format ({', '.join(sel.types + sel.formats)})")
        for f in chosen:
            url = f.get("downloadUrl")
            if not isinstance(url, str) or not url:
                raise HubProtocolError(f"{what}: file {f.get('name')!r} has no downloadUrl")
            hashes = f.get("hashes")
            meta = f.get("metadata") if isinstance(f.get("metadata"), dict) else {}
            fields = {"collection": collection, "model": name, "model_id": str(model.get("id", "")),
                      "version": str(v.get("name") or v.get("id")), "version_id": str(v.get("id", "")),
                      "type": str(model.get("type") or ""), "base_model": str(v.get("baseModel") or ""),
                      "file": str(f.get("name") or f.get("id")), "file_id": str(f.get("id", "")),
                      "format": str(meta.get("format") or "")}
            out.append(CivitaiFile(url, fields["file"], _size(f.get("sizeKB")), _digest(hashes, "SHA256"),
                                   _digest(hashes, "BLAKE3"), tuple(fields.items())))
    if not out and empty and not notes:
        mode = f" ({model['mode']})" if isinstance(model.get("mode"), str) and model.get("mode") else ""
        raise HubGoneError(f"{what} ({name}): no files to download{mode or ' (archived)'}", status_code=0)
    return out, notes


def version_as_model(version: dict, what: str) -> tuple[dict, int]:
    """A ``/api/v1/model-versions/{id}`` answer in the shape of a model's
    (its ``model`` part, with this one version), and the version id."""
    if not isinstance(version, dict) or type(version.get("id")) is not int:
        raise HubProtocolError(f"{what}: the version answer has no id")
    m = version.get("model") if isinstance(version.get("model"), dict) else {}
    model = {"id": version.get("modelId"), "name": m.get("name") or version.get("modelId"),
             "type": m.get("type"), "mode": m.get("mode"), "modelVersions": [version]}
    return model, version["id"]


# ----------------------------------------------------------------- layout


class _Fields(dict):
    def __missing__(self, key):
        raise UsageError(f"--layout: unknown field {{{key}}} (known: {', '.join('{%s}' % f for f in FIELDS)})")


def check_layout(template: str) -> str:
    try:
        names = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise UsageError(f"--layout {template!r}: {e}") from None
    for n in names:
        if n not in FIELDS:
            _Fields()[n]
    if "file" not in names and "file_id" not in names:
        raise UsageError("--layout must contain {file} (or {file_id}), or files of one model would collide")
    return template


def layout_path(template: str, fields: Iterable[tuple[str, str]]) -> str:
    """The path a file gets: each field made a safe single name (no
    leading dots, no control characters; a slash in a model's or
    version's name becomes ``_``, a file name keeps only its last part);
    an empty field's folder is left out.  The result is checked like a
    manifest path by the caller."""
    from ..naming import safe_name

    def one(k: str, v: str) -> str:
        if not v:
            return ""
        if k not in ("file", "file_id"):
            v = v.replace("/", "_").replace("\\", "_")
        return safe_name(v) or "_"

    safe = _Fields({k: one(k, v) for k, v in fields})
    text = template.format_map(safe)
    return "/".join(p for p in text.split("/") if p)
