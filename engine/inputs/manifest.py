"""Input files for ``segdl get -i FILE``: a JSON manifest or an aria2 input file.

Pure: reading the given file is the only I/O.  Every problem with the input
is a :class:`UsageError` (exit code 2) that names the file and the line
(aria2) or the entry (JSON), raised before anything downloads.  No input,
however malformed, produces any other exception.

JSON manifest::

    {"collection": "NAME",
     "files": [{"url": "https://...", "mirrors": ["https://..."],
                "path": "sub/dir/name.safetensors", "size": 123,
                "blake3": "HEX", "sha256": "HEX",
                "headers": {"Authorization": "..."}}]}

Only ``files`` and each file's ``url`` are required; ``null`` means absent.
Unknown keys are errors, except keys starting with ``x-`` (ignored).

aria2 input file (``aria2c --input-file``): a line of TAB-separated URIs is
one download (the extra URIs are mirrors); the lines after it that start
with a space or TAB are ``key=value`` options for it; lines starting with
``#`` and blank lines are skipped.  segdl reads ``out``, ``dir``,
``checksum=sha-256=HEX``, ``header=Name: value`` and its own ``blake3=HEX``;
the other documented input-file options of aria2 are accepted and ignored;
anything else is an error.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

from ..values.errors import UsageError
from ..values.request import Manifest, Request
from .aria2 import parse_aria2_input
from .checks import (Claims, Problem, at, check_collection, check_header, check_hex, check_path, check_relative,
                     check_size, check_url, mirrors_of, quoted, strip_bom)

__all__ = ["Manifest", "load_input", "parse_input", "parse_json_manifest", "parse_aria2_input", "check_path"]


# ---------------------------------------------------------------------------
# reading and format detection

_MAX_GUNZIPPED = 256 * 1024 * 1024  # a larger gzip'ed input file is refused (zip bombs)


def load_input(path: str | Path) -> Manifest:
    """Read ``path`` (UTF-8, optionally gzip-compressed like aria2 allows)
    and parse it with :func:`parse_input`."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {source}: {e.strerror or e}") from None
    except ValueError as e:  # e.g. a NUL in the file name
        raise UsageError(f"cannot read {source!r}: {e}") from None
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data, source)
    return parse_input(_decode(data, source), source=source)


def parse_input(text: str, *, source: str = "<input>") -> Manifest:
    """A JSON manifest if the first non-space character is ``{``, else an
    aria2 input file."""
    text = strip_bom(text)
    start = text.lstrip()
    if start.startswith("{"):
        return parse_json_manifest(text, source)
    if start.startswith("["):
        raise UsageError(
            f'{source}: a JSON manifest must be an object, {{"files": [...]}}, not a list'
        )
    return parse_aria2_input(text, source)


def _gunzip(data: bytes, source: str) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(_MAX_GUNZIPPED + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise UsageError(f"{source}: not a valid gzip file ({e})") from None
    if len(out) > _MAX_GUNZIPPED:
        raise UsageError(f"{source}: decompresses to more than {_MAX_GUNZIPPED >> 20} MiB")
    return out


def _decode(data: bytes, source: str) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise UsageError(f"{source}: the file is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UsageError(
            f"{source}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8"
        ) from None




# ---------------------------------------------------------------------------
# JSON manifest

_TOP_KEYS = ("collection", "files")
_FILE_KEYS = ("url", "mirrors", "path", "size", "blake3", "sha256", "headers")


def _ignored(key: str) -> bool:
    return key[:2].lower() == "x-"


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise Problem(f"duplicate key {quoted(k)}")
        out[k] = v
    return out


def _no_constant(name: str):
    raise Problem(f"{name} is not a JSON number")


def parse_json_manifest(text: str, source: str = "<input>") -> Manifest:
    try:
        doc = json.loads(strip_bom(text), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise UsageError(f"{source}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except Problem as e:
        raise UsageError(f"{source}: invalid JSON: {e}") from None
    except RecursionError:
        raise UsageError(f"{source}: invalid JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer with too many digits
        raise UsageError(f"{source}: invalid JSON: {e}") from None

    if not isinstance(doc, dict):
        raise UsageError(f'{source}: a manifest must be a JSON object, {{"files": [...]}}')
    _refuse_unknown_keys(doc, _TOP_KEYS, source)
    collection = doc.get("collection")
    if collection is not None:
        collection = at(f"{source}: collection", check_collection, collection)
    if "files" not in doc:
        raise UsageError(f'{source}: missing "files" (the list of files to download)')
    files = doc["files"]
    if not isinstance(files, list):
        raise UsageError(f"{source}: files: must be a list")

    claims = Claims()
    requests = []
    for i, entry in enumerate(files):
        where = f"{source}: files[{i}]"
        req = _json_entry(entry, where)
        at(f"{where}.path" if req.path is not None else f"{where}.url", claims.claim, req, f"files[{i}]")
        requests.append(req)
    return Manifest(collection, tuple(requests))


def _refuse_unknown_keys(obj: dict, known, where: str) -> None:
    """Typos must not be ignored silently; ``x-`` keys are."""
    for key in obj:
        if key not in known and not _ignored(key):
            raise UsageError(
                f"{where}: unknown key {quoted(key)} (known: {', '.join(known)}; keys starting with x- are ignored)"
            )


def _json_entry(entry: object, where: str) -> Request:
    if not isinstance(entry, dict):
        raise UsageError(f'{where}: must be an object like {{"url": "https://..."}}')
    _refuse_unknown_keys(entry, _FILE_KEYS, where)
    if entry.get("url") is None:
        raise UsageError(f'{where}: missing "url"')
    url = at(f"{where}.url", check_url, entry["url"])

    mirrors: list[str] = []
    raw_mirrors = entry.get("mirrors")
    if raw_mirrors is not None:
        if not isinstance(raw_mirrors, list):
            raise UsageError(f"{where}.mirrors: must be a list of URLs")
        mirrors = [at(f"{where}.mirrors[{j}]", check_url, m) for j, m in enumerate(raw_mirrors)]

    path = entry.get("path")
    if path is not None:
        path = at(f"{where}.path", check_relative, path)
    size = entry.get("size")
    if size is not None:
        size = at(f"{where}.size", check_size, size)
    blake3 = entry.get("blake3")
    if blake3 is not None:
        blake3 = at(f"{where}.blake3", check_hex, blake3, "blake3")
    sha256 = entry.get("sha256")
    if sha256 is not None:
        sha256 = at(f"{where}.sha256", check_hex, sha256, "sha256")

    headers: list[str] = []
    raw_headers = entry.get("headers")
    if raw_headers is not None:
        if not isinstance(raw_headers, dict):
            raise UsageError(f'{where}.headers: must be an object like {{"Authorization": "..."}}')
        headers = [at(f"{where}.headers", check_header, k, v) for k, v in raw_headers.items()]

    return Request(
        url=url,
        path=path,
        blake3=blake3,
        sha256=sha256,
        size=size,
        mirrors=mirrors_of(url, mirrors),
        headers=tuple(headers),
    )
