"""File names from URLs and Content-Disposition, and paths that cannot
leave the target folder.  Pure."""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..values.errors import UsageError

PART_SUFFIX = ".segdl-part"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_MAX_NAME = 200


def safe_name(raw: str | None) -> str | None:
    """Reduce a remote-supplied name to one plain file name, or None.

    Drops any directory part (either slash), control characters and leading
    dots, so ``../../etc/passwd`` becomes ``passwd`` and ``..`` becomes None.
    """
    if not raw:
        return None
    if raw.isascii() and raw.isprintable():  # (NFC already; no control or format character)
        base = raw.replace("\\", "/").rsplit("/", 1)[-1]
    else:
        raw = unicodedata.normalize("NFC", raw)
        base = re.split(r"[/\\]", raw)[-1]
        base = _UNSAFE.sub("_", base)
        # Any other control character (C1 controls such as U+009B, the terminal
        # escape introducer) would reach terminals and logs: replace them too.
        base = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in base)
    base = base.strip().lstrip(".").strip()
    if not base:
        return None
    if len(base.encode()) > _MAX_NAME:
        stem, dot, ext = base.rpartition(".")
        ext = ext if dot and len(ext) <= 16 else ""
        base = base.encode()[: _MAX_NAME - len(ext) - 1].decode("utf-8", "ignore") + (
            "." + ext if ext else ""
        )
    return base


def filename_from_url(url: str) -> str | None:
    path = urlsplit(url).path
    # (PurePosixPath(path).name: the last part that is not "" or ".")
    last = next((p for p in reversed(path.split("/")) if p not in ("", ".")), "")
    return safe_name(unquote(last)) if path else None


def filename_from_disposition(value: str | None) -> str | None:
    """The file name a Content-Disposition header suggests (RFC 6266),
    preferring ``filename*``; not yet made safe."""
    if not value:
        return None
    star = re.search(r"filename\*\s*=\s*([^;]+)", value, re.I)
    if star:
        v = star.group(1).strip().strip('"')
        charset, _, rest = v.partition("'")
        _, _, encoded = rest.partition("'")
        try:
            return unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            pass
    plain = re.search(r'filename\s*=\s*("((?:[^"\\]|\\.)*)"|[^;]+)', value, re.I)
    if plain:
        value = re.sub(r"\\(.)", r"\1", plain.group(2)) if plain.group(2) is not None else plain.group(1).strip()
        # Headers arrive as ISO-8859-1; servers often put raw UTF-8 there.
        try:
            return value.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return value
    return None


def choose_name(url: str, disposition_name: str | None, override: str | None) -> str:
    """The name a download gets: -o, else Content-Disposition, else the URL."""
    for candidate in (override, safe_name(disposition_name), filename_from_url(url)):
        if candidate:
            return candidate
    return "index.html"


def inside(dest: Path, relative: str) -> Path:
    """``dest / relative``, refusing anything that would land outside
    ``dest`` (absolute paths, ``..``, drive letters, NUL)."""
    if not relative or "\x00" in relative:
        raise UsageError(f"invalid path {relative!r}")
    rel = relative.replace("\\", "/")
    if rel.startswith("/") or _DRIVE.match(rel):
        raise UsageError(f"path {relative!r} is absolute; it must be relative to the target folder")
    parts = [p for p in rel.split("/") if p not in ("", ".")]  # PurePosixPath(rel).parts, 5x faster
    if ".." in parts:
        raise UsageError(f"path {relative!r} escapes the target folder")
    if _CONTROL.search(rel):
        raise UsageError(f"path {relative!r} contains control characters")
    if not parts:
        raise UsageError(f"path {relative!r} escapes the target folder")
    # The folder, absolute and normalised, joined with parts none of which
    # is "", "." or "..": below the folder, and normalised as it stands.
    # (Walking ``target.parents`` cost more than the rest of a manifest's
    # parsing; ``abspath`` of the join, 1 us a file.)  A symlink on the
    # way is the Root's to refuse (disk/confine.py).
    return Path(_absolute(os.fspath(dest)).rstrip(os.sep) + os.sep + os.sep.join(parts))


_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@functools.lru_cache(maxsize=64)
def _absolute_of(path: str) -> str:
    return os.path.abspath(path)


def _absolute(path: str) -> str:
    """``os.path.abspath``, remembered for absolute paths (a job's folder,
    once per file otherwise); a relative one depends on the working
    folder, and is made absolute each time."""
    return _absolute_of(path) if path.startswith(os.sep) else os.path.abspath(path)


def same_origin(url: str, *others: str) -> bool:
    """Does ``url`` have the scheme, host and port of one of ``others``?"""
    if url in others:
        return True  # (the same URL, as a file's own, without splitting it: once a file at least)
    def origin(u: str):
        p = urlsplit(u)
        port = p.port or {"http": 80, "https": 443}.get(p.scheme)
        return (p.scheme, (p.hostname or "").lower(), port)

    mine = origin(url)
    return any(origin(o) == mine for o in others)


def redirect_headers(headers: tuple[str, ...], first_url: str, url: str, trusted: bool = False) -> tuple[str, ...]:
    """The headers a request carries to ``url``, where a redirect from
    ``first_url`` led: all of them on the same origin, none on another
    (any header may carry a key, ``X-Api-Key`` as much as Authorization),
    unless ``trusted`` (--location-trusted)."""
    return headers if trusted or same_origin(url, first_url) else ()


def hide_userinfo(url: str) -> str:
    """``url`` with its ``user:password@`` shown as ``***@`` (and nothing
    else changed): for what leaves segdl (the service's answers and events,
    ``--json`` lines), where the URL is still to be recognised."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    return url if at < 0 else f"{scheme}://***@{rest[at + 1:]}"


def redact_url(url: str) -> str:
    """``url`` without what may be a secret: user:password@ and the query
    string (signed URLs carry their tokens there)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return f"{p.scheme}://{host}{p.path}" + ("?…" if p.query else "")


def part_path(final: Path) -> Path:
    return final.with_name(final.name + PART_SUFFIX)
