"""The checks shared by both input formats (manifest.py's JSON, aria2.py's
input files): relative paths that stay inside the target folder, URLs,
hex digests, request headers, sizes, collection names, and the claims two
entries make on one path.  They raise :class:`Problem`, which the parsers
turn into a UsageError that says where."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, urlsplit

from ..values.errors import UsageError
from ..values.request import Request


class Problem(Exception):
    """A check failed; the message does not yet say where."""


def quoted(value: str, limit: int = 80) -> str:
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


#: A path that is already normal: ASCII name parts of letters, digits,
#: ``_ - .`` (none empty, none starting with a dot, so no ``.`` or ``..``)
#: of at most 255 bytes, joined by single slashes.  Most paths of a big
#: manifest are such; they skip the general checks below (10 us a path).
_PLAIN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254})*")


def check_relative(path: str, *, folder: bool = False) -> str:
    """The normalised POSIX form of a path relative to the target folder
    (``\\`` read as ``/``, ``.`` parts and repeated slashes dropped), or
    :class:`Problem` if it is empty, absolute, has a drive letter, a ``..``
    part, a control character, or does not end in a file name.

    With ``folder``, the path names a folder: it may end in ``/`` and may be
    ``.`` (the target folder itself, returned as ``""``)."""
    if not isinstance(path, str):
        raise Problem("must be a string")
    if _PLAIN.fullmatch(path):
        return path
    return _check_relative(path, folder)


def _check_relative(path: str, folder: bool) -> str:
    """check_relative's rules for any path (the general case)."""
    if path == "":
        raise Problem("must not be empty")
    bad = _bad_char(path)
    if bad is not None:
        raise Problem(f"path {quoted(path)} contains a control character ({bad!r})")
    p = path.replace("\\", "/")
    if p.startswith("/"):
        raise Problem(f"path {quoted(path)} is absolute; it must be relative to the target folder")
    if _DRIVE.match(p):
        raise Problem(f"path {quoted(path)} starts with a drive letter; it must be relative to the target folder")
    raw_parts = p.split("/")
    if ".." in raw_parts:
        raise Problem(f"path {quoted(path)} has a '..' part; it must stay inside the target folder")
    if raw_parts[-1] in ("", ".") and not folder:
        raise Problem(f"path {quoted(path)} does not end in a file name")
    parts = [x for x in raw_parts if x not in ("", ".")]
    for part in parts:
        if len(part.encode("utf-8")) > _MAX_COMPONENT:
            raise Problem(f"path {quoted(path)} has a part longer than {_MAX_COMPONENT} bytes")
    normal = "/".join(parts)
    if _DRIVE.match(normal):  # "./C:/x"
        raise Problem(f"path {quoted(path)} starts with a drive letter; it must be relative to the target folder")
    return normal


def check_path(path: str, where: str) -> str:
    """A path relative to the target folder, checked and normalised exactly
    as a manifest's ``path`` is (a hub's layout goes through this too);
    a :class:`UsageError` at ``where`` if it would leave the folder."""
    return at(where, check_relative, path)


def check_url(url: object) -> str:
    """An http(s) URL with a host, as ASCII (non-ASCII characters of the path
    and query percent-encoded as UTF-8, a non-ASCII host IDNA-encoded)."""
    if not isinstance(url, str):
        raise Problem("must be a string")
    if not url:
        raise Problem("must not be empty")
    clean = url.isascii() and url.isprintable() and " " not in url  # the common case, at C speed
    origin = _origin_of(url) if clean else None
    if origin is not None and origin in _GOOD_ORIGINS:
        return url  # its scheme, host and port were checked for an earlier URL
    for c in () if clean else url:
        if c.isspace() or unicodedata.category(c) in ("Cc", "Cs"):
            hint = " (separate mirror URLs with a TAB)" if c == " " else ""
            raise Problem(f"URL {quoted(url)} contains whitespace or a control character{hint}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port  # validates it: 0-65535
    except ValueError as e:
        raise Problem(f"URL {quoted(url)} is not valid ({e})") from None
    if port == 0:
        raise Problem(f"URL {quoted(url)} has port 0, which no server listens on")
    if parts.scheme.lower() not in ("http", "https"):
        raise Problem(f"URL {quoted(url)}: only http:// and https:// URLs are supported")
    if not host:
        raise Problem(f"URL {quoted(url)} has no host")
    if origin is not None:
        if len(_GOOD_ORIGINS) >= 4096:
            _GOOD_ORIGINS.clear()
        _GOOD_ORIGINS.add(origin)
    return url if url.isascii() else _ascii_url(url, parts.netloc)


#: ``scheme://host:port`` prefixes of URLs check_url accepted.  What it
#: checks (the scheme, a host, a valid port) is all in that prefix: another
#: clean URL with the same one passes without ``urlsplit`` (100,000 URLs
#: of one mirror: 0.7 s less before the first request).
_GOOD_ORIGINS: set[str] = set()


def _origin_of(url: str) -> str | None:
    """The ``scheme://netloc`` prefix of a clean (ASCII, printable, no
    space) URL, or None when it has no ``://``."""
    start = url.find("://")
    if start < 0:
        return None
    start += 3
    end = len(url)
    for sep in "/?#":
        i = url.find(sep, start)
        if 0 <= i < end:
            end = i
    return url[:end]


def _ascii_url(url: str, netloc: str) -> str:
    start = url.index("//") + 2  # the scheme is http(s) and there is a host
    assert url[start : start + len(netloc)] == netloc
    rest = url[start + len(netloc) :]
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
        if not port.isascii():
            raise Problem(f"URL {quoted(url)} has an invalid port")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise Problem(f"URL {quoted(url)}: host {quoted(host)} is not a valid domain name") from None
        userinfo = _encode_non_ascii(userinfo)
        netloc = f"{userinfo}{at}{host}{colon}{port}"
    return url[:start] + netloc + _encode_non_ascii(rest)


def _encode_non_ascii(s: str) -> str:
    return "".join(c if c.isascii() else quote(c, safe="") for c in s)


_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def check_hex(value: object, algorithm: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        got = quoted(value) if isinstance(value, str) else type(value).__name__
        raise Problem(f"must be a {algorithm} digest: 64 hex digits (got {got})")
    return value.lower()


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The engine makes ranged requests itself and sends no body.
_RESERVED_HEADERS = frozenset({"range", "if-range", "content-length", "transfer-encoding"})


def check_header(name: object, value: object) -> str:
    """``"Name: value"``.  Messages never repeat the value (it is often a
    credential)."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        got = quoted(name) if isinstance(name, str) else type(name).__name__
        raise Problem(f"header name {got} is not a valid HTTP header name")
    if name.lower() in _RESERVED_HEADERS:
        raise Problem(f"header {name}: segdl sets this header itself")
    if not isinstance(value, str):
        raise Problem(f"header {name}: the value must be a string")
    if "\r" in value or "\n" in value:
        raise Problem(f"header {name}: the value must not contain CR or LF")
    if any(c != "\t" and unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise Problem(f"header {name}: the value contains a control character")
    if not value.isascii():
        raise Problem(f"header {name}: the value must be ASCII")
    value = value.strip(" \t")
    if not value:
        raise Problem(f"header {name}: the value must not be empty")
    return f"{name}: {value}"


_MAX_SIZE = 2**63 - 1  # what the journal (SQLite INTEGER) can hold


def check_size(value: object) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_SIZE:
        raise Problem("must be a non-negative integer")
    return value


def check_collection(value: object) -> str:
    if not isinstance(value, str):
        raise Problem("must be a string")
    if not value.strip():
        raise Problem("must not be empty")
    if _bad_char(value) is not None:
        raise Problem("must not contain control characters")
    return value


def at(where: str, check, *args, **kwargs):
    """``check(*args)``, with a failure turned into a UsageError at ``where``."""
    try:
        return check(*args, **kwargs)
    except Problem as e:
        raise UsageError(f"{where}: {e}") from None


def mirrors_of(primary: str, urls: list[str]) -> tuple[str, ...]:
    """The mirror URLs in order, without repeats or copies of the primary."""
    out: list[str] = []
    for u in urls:
        if u != primary and u not in out:
            out.append(u)
    return tuple(out)


class Claims:
    """Catches two downloads writing the same file: the same normalised path,
    a path that is a folder of another's path, or the same URL twice with
    the name left to the server.  ``who`` names a download in the message
    about a clash: a string, or an aria2 input file's line number."""

    def __init__(self) -> None:
        self.files: dict[str, str | int] = {}  # NFC path -> who
        self.folders: dict[str, str | int] = {}  # NFC folder -> first who put a file under it
        self.unnamed: dict[str, str | int] = {}  # URL -> who (path None)

    def claim(self, req: Request, who: str | int) -> None:
        if req.path is None:
            other = self.unnamed.get(req.url)
            if other is not None:
                raise Problem(f"URL {quoted(req.url)} is already downloaded by {_who(other)} (give each a path)")
            self.unnamed[req.url] = who
            return
        key = req.path if req.path.isascii() else unicodedata.normalize("NFC", req.path)
        files, folders = self.files, self.folders
        other = files.get(key)
        if other is not None:
            raise Problem(f"path {quoted(req.path)} is already used by {_who(other)}")
        other = folders.get(key)
        if other is not None:
            raise Problem(f"path {quoted(req.path)} is a folder of the path of {_who(other)}")
        end = key.find("/")
        while end >= 0:
            folder = key[:end]
            other = files.get(folder)
            if other is not None:
                raise Problem(f"path {quoted(req.path)} needs {quoted(folder)} as a folder, "
                              f"but {_who(other)} writes a file there")
            end = key.find("/", end + 1)
        files[key] = who
        end = key.find("/")
        while end >= 0:
            folders.setdefault(key[:end], who)
            end = key.find("/", end + 1)


def _who(who: str | int) -> str:
    return f"the download on line {who}" if isinstance(who, int) else who


def strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text
