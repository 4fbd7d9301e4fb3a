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
import re
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..values.errors import UsageError
from ..values.request import Request

__all__ = ["Manifest", "load_input", "parse_input", "parse_json_manifest", "parse_aria2_input", "check_path"]


@dataclass(frozen=True, slots=True)
class Manifest:
    """What an input file asks for: an optional collection name (a label
    for the job in the journal) and the files, in file order."""

    collection: str | None
    requests: tuple[Request, ...]


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
    text = _strip_bom(text)
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


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


# ---------------------------------------------------------------------------
# checks shared by both formats; they raise _Problem, which the parsers turn
# into a UsageError that says where


class _Problem(Exception):
    """A check failed; the message does not yet say where."""


def _show(value: str, limit: int = 80) -> str:
    """A quoted, escaped (no raw control characters reach the terminal),
    shortened rendering of user input for error messages."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _bad_char(text: str) -> str | None:
    """The first control character or lone surrogate in ``text``."""
    if text.isascii() and text.isprintable():  # the common case, at C speed
        return None
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cs"):
            return c
    return None


_DRIVE = re.compile(r"[A-Za-z]:")
_MAX_COMPONENT = 255  # bytes: NAME_MAX of common file systems


def _check_relative(path: str, *, folder: bool = False) -> str:
    """The normalised POSIX form of a path relative to the target folder
    (``\\`` read as ``/``, ``.`` parts and repeated slashes dropped), or
    :class:`_Problem` if it is empty, absolute, has a drive letter, a ``..``
    part, a control character, or does not end in a file name.

    With ``folder``, the path names a folder: it may end in ``/`` and may be
    ``.`` (the target folder itself, returned as ``""``)."""
    if not isinstance(path, str):
        raise _Problem("must be a string")
    if path == "":
        raise _Problem("must not be empty")
    bad = _bad_char(path)
    if bad is not None:
        raise _Problem(f"path {_show(path)} contains a control character ({bad!r})")
    p = path.replace("\\", "/")
    if p.startswith("/"):
        raise _Problem(f"path {_show(path)} is absolute; it must be relative to the target folder")
    if _DRIVE.match(p):
        raise _Problem(f"path {_show(path)} starts with a drive letter; it must be relative to the target folder")
    raw_parts = p.split("/")
    if ".." in raw_parts:
        raise _Problem(f"path {_show(path)} has a '..' part; it must stay inside the target folder")
    if raw_parts[-1] in ("", ".") and not folder:
        raise _Problem(f"path {_show(path)} does not end in a file name")
    parts = [x for x in raw_parts if x not in ("", ".")]
    for part in parts:
        if len(part.encode("utf-8")) > _MAX_COMPONENT:
            raise _Problem(f"path {_show(path)} has a part longer than {_MAX_COMPONENT} bytes")
    normal = "/".join(parts)
    if _DRIVE.match(normal):  # "./C:/x"
        raise _Problem(f"path {_show(path)} starts with a drive letter; it must be relative to the target folder")
    return normal


def check_path(path: str, where: str) -> str:
    """A path relative to the target folder, checked and normalised exactly
    as a manifest's ``path`` is (a hub's layout goes through this too);
    a :class:`UsageError` at ``where`` if it would leave the folder."""
    return _at(where, _check_relative, path)


def _check_url(url: object) -> str:
    """An http(s) URL with a host, as ASCII (non-ASCII characters of the path
    and query percent-encoded as UTF-8, a non-ASCII host IDNA-encoded)."""
    if not isinstance(url, str):
        raise _Problem("must be a string")
    if not url:
        raise _Problem("must not be empty")
    clean = url.isascii() and url.isprintable() and " " not in url  # the common case, at C speed
    for c in () if clean else url:
        if c.isspace() or unicodedata.category(c) in ("Cc", "Cs"):
            hint = " (separate mirror URLs with a TAB)" if c == " " else ""
            raise _Problem(f"URL {_show(url)} contains whitespace or a control character{hint}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port  # validates it: 0-65535
    except ValueError as e:
        raise _Problem(f"URL {_show(url)} is not valid ({e})") from None
    if port == 0:
        raise _Problem(f"URL {_show(url)} has port 0, which no server listens on")
    if parts.scheme.lower() not in ("http", "https"):
        raise _Problem(f"URL {_show(url)}: only http:// and https:// URLs are supported")
    if not host:
        raise _Problem(f"URL {_show(url)} has no host")
    return url if url.isascii() else _ascii_url(url, parts.netloc)


def _ascii_url(url: str, netloc: str) -> str:
    start = url.index("//") + 2  # the scheme is http(s) and there is a host
    assert url[start : start + len(netloc)] == netloc
    rest = url[start + len(netloc) :]
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        if not port.isascii():
            raise _Problem(f"URL {_show(url)} has an invalid port")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise _Problem(f"URL {_show(url)}: host {_show(host)} is not a valid domain name") from None
        userinfo = _encode_non_ascii(userinfo)
        netloc = f"{userinfo}{at}{host}{colon}{port}"
    return url[:start] + netloc + _encode_non_ascii(rest)


def _encode_non_ascii(s: str) -> str:
    return "".join(c if c.isascii() else quote(c, safe="") for c in s)


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _check_hex(value: object, algorithm: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        shown = _show(value) if isinstance(value, str) else type(value).__name__
        raise _Problem(f"must be a {algorithm} digest: 64 hex digits (got {shown})")
    return value.lower()


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The engine makes ranged requests itself and sends no body.
_RESERVED_HEADERS = frozenset({"range", "if-range", "content-length", "transfer-encoding"})


def _check_header(name: object, value: object) -> str:
    """``"Name: value"``.  Messages never repeat the value (it is often a
    credential)."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        shown = _show(name) if isinstance(name, str) else type(name).__name__
        raise _Problem(f"header name {shown} is not a valid HTTP header name")
    if name.lower() in _RESERVED_HEADERS:
        raise _Problem(f"header {name}: segdl sets this header itself")
    if not isinstance(value, str):
        raise _Problem(f"header {name}: the value must be a string")
    if "\r" in value or "\n" in value:
        raise _Problem(f"header {name}: the value must not contain CR or LF")
    if any(c != "\t" and unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise _Problem(f"header {name}: the value contains a control character")
    if not value.isascii():
        raise _Problem(f"header {name}: the value must be ASCII")
    value = value.strip(" \t")
    if not value:
        raise _Problem(f"header {name}: the value must not be empty")
    return f"{name}: {value}"


_MAX_SIZE = 2**63 - 1  # what the journal (SQLite INTEGER) can hold


def _check_size(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_SIZE:
        raise _Problem("must be a non-negative integer")
    return value


def _check_collection(value: object) -> str:
    if not isinstance(value, str):
        raise _Problem("must be a string")
    if not value.strip():
        raise _Problem("must not be empty")
    if _bad_char(value) is not None:
        raise _Problem("must not contain control characters")
    return value


def _at(where: str, check, *args, **kwargs):
    """``check(*args)``, with a failure turned into a UsageError at ``where``."""
    try:
        return check(*args, **kwargs)
    except _Problem as e:
        raise UsageError(f"{where}: {e}") from None


def _mirrors(primary: str, urls: list[str]) -> tuple[str, ...]:
    """The mirror URLs in order, without repeats or copies of the primary."""
    out: list[str] = []
    for u in urls:
        if u != primary and u not in out:
            out.append(u)
    return tuple(out)


class _Claims:
    """Catches two downloads writing the same file: the same normalised path,
    a path that is a folder of another's path, or the same URL twice with
    the name left to the server."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}  # NFC path -> who
        self.folders: dict[str, str] = {}  # NFC folder -> first who put a file under it
        self.unnamed: dict[str, str] = {}  # URL -> who (path None)

    def claim(self, req: Request, who: str) -> None:
        if req.path is None:
            other = self.unnamed.get(req.url)
            if other is not None:
                raise _Problem(f"URL {_show(req.url)} is already downloaded by {other} (give each a path)")
            self.unnamed[req.url] = who
            return
        key = unicodedata.normalize("NFC", req.path)
        other = self.files.get(key)
        if other is not None:
            raise _Problem(f"path {_show(req.path)} is already used by {other}")
        other = self.folders.get(key)
        if other is not None:
            raise _Problem(f"path {_show(req.path)} is a folder of the path of {other}")
        parts = key.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            other = self.files.get(folder)
            if other is not None:
                raise _Problem(f"path {_show(req.path)} needs {_show(folder)} as a folder, but {other} writes a file there")
        self.files[key] = who
        for i in range(1, len(parts)):
            self.folders.setdefault("/".join(parts[:i]), who)


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
            raise _Problem(f"duplicate key {_show(k)}")
        out[k] = v
    return out


def _no_constant(name: str):
    raise _Problem(f"{name} is not a JSON number")


def parse_json_manifest(text: str, source: str = "<input>") -> Manifest:
    try:
        doc = json.loads(_strip_bom(text), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise UsageError(f"{source}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except _Problem as e:
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
        collection = _at(f"{source}: collection", _check_collection, collection)
    if "files" not in doc:
        raise UsageError(f'{source}: missing "files" (the list of files to download)')
    files = doc["files"]
    if not isinstance(files, list):
        raise UsageError(f"{source}: files: must be a list")

    claims = _Claims()
    requests = []
    for i, entry in enumerate(files):
        where = f"{source}: files[{i}]"
        req = _json_entry(entry, where)
        _at(f"{where}.path" if req.path is not None else f"{where}.url", claims.claim, req, f"files[{i}]")
        requests.append(req)
    return Manifest(collection, tuple(requests))


def _refuse_unknown_keys(obj: dict, known, where: str) -> None:
    """Typos must not be ignored silently; ``x-`` keys are."""
    for key in obj:
        if key not in known and not _ignored(key):
            raise UsageError(
                f"{where}: unknown key {_show(key)} (known: {', '.join(known)}; keys starting with x- are ignored)"
            )


def _json_entry(entry: object, where: str) -> Request:
    if not isinstance(entry, dict):
        raise UsageError(f'{where}: must be an object like {{"url": "https://..."}}')
    _refuse_unknown_keys(entry, _FILE_KEYS, where)
    if entry.get("url") is None:
        raise UsageError(f'{where}: missing "url"')
    url = _at(f"{where}.url", _check_url, entry["url"])

    mirrors: list[str] = []
    raw_mirrors = entry.get("mirrors")
    if raw_mirrors is not None:
        if not isinstance(raw_mirrors, list):
            raise UsageError(f"{where}.mirrors: must be a list of URLs")
        mirrors = [_at(f"{where}.mirrors[{j}]", _check_url, m) for j, m in enumerate(raw_mirrors)]

    path = entry.get("path")
    if path is not None:
        path = _at(f"{where}.path", _check_relative, path)
    size = entry.get("size")
    if size is not None:
        size = _at(f"{where}.size", _check_size, size)
    blake3 = entry.get("blake3")
    if blake3 is not None:
        blake3 = _at(f"{where}.blake3", _check_hex, blake3, "blake3")
    sha256 = entry.get("sha256")
    if sha256 is not None:
        sha256 = _at(f"{where}.sha256", _check_hex, sha256, "sha256")

    headers: list[str] = []
    raw_headers = entry.get("headers")
    if raw_headers is not None:
        if not isinstance(raw_headers, dict):
            raise UsageError(f'{where}.headers: must be an object like {{"Authorization": "..."}}')
        headers = [_at(f"{where}.headers", _check_header, k, v) for k, v in raw_headers.items()]

    return Request(
        url=url,
        path=path,
        blake3=blake3,
        sha256=sha256,
        size=size,
        mirrors=_mirrors(url, mirrors),
        headers=tuple(headers),
    )


# ---------------------------------------------------------------------------
# aria2 input file

# aria2's documented input-file options ("Input File" in aria2c(1)), plus a
# few from older releases.  segdl reads out, dir, checksum and header; the
# rest are accepted and ignored, so that files written for aria2 load.
_ARIA2_OPTIONS = frozenset(
    """
    all-proxy all-proxy-passwd all-proxy-user allow-overwrite allow-piece-length-change
    always-resume async-dns auto-file-renaming bt-enable-hook-after-hash-check bt-enable-lpd
    bt-exclude-tracker bt-external-ip bt-force-encryption bt-hash-check-seed
    bt-load-saved-metadata bt-max-open-files bt-max-peers bt-metadata-only bt-min-crypto-level
    bt-prioritize-piece bt-remove-unselected-file bt-request-peer-speed-limit bt-require-crypto
    bt-save-metadata bt-seed-unverified bt-stop-timeout bt-tracker bt-tracker-connect-timeout
    bt-tracker-interval bt-tracker-timeout check-integrity checksum conditional-get
    connect-timeout content-disposition-default-utf8 continue dir dry-run
    enable-http-keep-alive enable-http-pipelining enable-mmap enable-peer-exchange
    file-allocation follow-metalink follow-torrent force-save ftp-passwd ftp-pasv ftp-proxy
    ftp-proxy-passwd ftp-proxy-user ftp-reuse-connection ftp-type ftp-user gid
    hash-check-only header http-accept-gzip http-auth-challenge http-no-cache http-passwd
    http-proxy http-proxy-passwd http-proxy-user http-user https-proxy https-proxy-passwd
    https-proxy-user index-out lowest-speed-limit max-connection-per-server
    max-download-limit max-file-not-found max-mmap-limit max-resume-failure-tries max-tries
    max-upload-limit metalink-base-uri metalink-enable-unique-protocol metalink-language
    metalink-location metalink-os metalink-preferred-protocol metalink-version
    min-split-size no-file-allocation-limit no-netrc no-proxy out parameterized-uri pause
    pause-metadata piece-length proxy-method realtime-chunk-checksum referer remote-time
    remove-control-file retry-wait reuse-uri rpc-save-upload-metadata seed-ratio seed-time
    select-file split ssh-host-key-md stream-piece-selector timeout uri-selector use-head
    user-agent
    """.split()
)
_SEGDL_OPTIONS = frozenset({"blake3"})  # segdl's own additions
_SHA256_NAMES = frozenset({"sha-256", "sha256"})  # aria2 lower-cases the type and accepts both
_OTHER_CHECKSUMS = frozenset({"md5", "sha-1", "sha1", "sha-224", "sha-384", "sha-512", "adler32"})


@dataclass(slots=True)
class _Aria2Entry:
    line: int
    urls: list[str]
    out: tuple[int, str] | None = None  # (line, normalised path)
    dir: tuple[int, str] | None = None
    sha256: tuple[int, str] | None = None
    blake3: tuple[int, str] | None = None
    headers: list[str] | None = None


def parse_aria2_input(text: str, source: str = "<input>") -> Manifest:
    entries: list[_Aria2Entry] = []
    current: _Aria2Entry | None = None
    for lineno, raw in enumerate(_strip_bom(text).split("\n"), 1):
        line = raw.rstrip("\r")
        where = f"{source}:{lineno}"
        if not line.strip(" \t") or line[0] == "#":
            continue
        if line[0] in " \t":
            body = line.strip(" \t")
            if body.startswith("#"):
                continue
            if current is None:
                raise UsageError(
                    f"{where}: option line before any URI line (a line starting with a space "
                    "or TAB holds an option for the URI line above it)"
                )
            _aria2_option(current, body, where, lineno)
        else:
            urls = [u for u in (part.strip(" \t") for part in line.split("\t")) if u]
            current = _Aria2Entry(lineno, [_at(where, _check_url, u) for u in urls])
            entries.append(current)

    claims = _Claims()
    requests = []
    for e in entries:
        path = None
        folder = e.dir[1] if e.dir is not None else ""  # "" is the target folder itself
        if e.out is not None:
            path = _at(f"{source}:{e.out[0]}", _check_relative, f"{folder}/{e.out[1]}") if folder else e.out[1]
        elif folder:
            raise UsageError(
                f"{source}:{e.dir[0]}: dir= without out= is not supported; give the file name with out="
            )
        req = Request(
            url=e.urls[0],
            path=path,
            blake3=e.blake3[1] if e.blake3 else None,
            sha256=e.sha256[1] if e.sha256 else None,
            mirrors=_mirrors(e.urls[0], e.urls[1:]),
            headers=tuple(e.headers or ()),
        )
        line = e.out[0] if e.out is not None else e.line
        _at(f"{source}:{line}", claims.claim, req, f"the download on line {e.line}")
        requests.append(req)
    return Manifest(None, tuple(requests))


def _aria2_option(entry: _Aria2Entry, body: str, where: str, lineno: int) -> None:
    key, eq, value = body.partition("=")
    key, value = key.strip(" \t"), value.strip(" \t")
    if not eq or not key:
        raise UsageError(f"{where}: malformed option line {_show(body)}; expected key=value")
    if key not in _ARIA2_OPTIONS and key not in _SEGDL_OPTIONS:
        hint = " (write option names without the leading --)" if key.startswith("-") else ""
        raise UsageError(f"{where}: unknown option {_show(key)}{hint}")

    def once(attr: str) -> None:
        previous = getattr(entry, attr)
        if previous is not None:
            raise UsageError(f"{where}: {key}= is given twice for this download (first on line {previous[0]})")

    if key in ("out", "dir"):
        once(key)
        setattr(entry, key, (lineno, _at(f"{where}: {key}", _check_relative, value, folder=key == "dir")))
    elif key == "checksum":
        once("sha256")
        entry.sha256 = (lineno, _at(f"{where}: checksum", _aria2_checksum, value))
    elif key == "blake3":
        once("blake3")
        entry.blake3 = (lineno, _at(f"{where}: blake3", _check_hex, value, "blake3"))
    elif key == "header":
        name, colon, hvalue = value.partition(":")
        if not colon:
            raise UsageError(f"{where}: header: expected header=Name: value")
        entry.headers = (entry.headers or []) + [_at(f"{where}: header", _check_header, name, hvalue)]
    # any other known aria2 option: accepted, ignored


def _aria2_checksum(value: str) -> str:
    kind, eq, digest = value.partition("=")
    kind = kind.strip(" \t").lower()
    if not eq or not kind:
        raise _Problem(f"expected checksum=sha-256=HEX, got {_show(value)}")
    if kind in _SHA256_NAMES:
        return _check_hex(digest.strip(" \t"), "sha-256")
    if kind in _OTHER_CHECKSUMS:
        raise _Problem(
            f"checksum type {kind!r} is not supported; segdl verifies sha-256 (checksum=sha-256=HEX) "
            "and blake3 (blake3=HEX) and refuses rather than download without the check asked for"
        )
    raise _Problem(f"unknown checksum type {_show(kind)}; segdl verifies sha-256 (checksum=sha-256=HEX)")
