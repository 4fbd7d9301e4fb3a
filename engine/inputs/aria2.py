"""aria2 input files (``aria2c --input-file``) as segdl reads them: a line
of TAB-separated URIs is one download (the extra URIs are mirrors); the
lines after it that start with a space or TAB are ``key=value`` options for
it.  See manifest.py for the rules both formats share."""

from __future__ import annotations

from dataclasses import dataclass

from ..values.errors import UsageError
from ..values.request import Manifest, Request
from .checks import (Claims, Problem, at, check_header, check_hex, check_relative, check_url, mirrors_of, quoted,
                     strip_bom)

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
    # (100,000 downloads are 200,000 lines, read before the first request:
    # a line's location is formatted only for an error, and the checks'
    # Problems are caught here rather than through ``at``.)
    entries: list[_Aria2Entry] = []
    current: _Aria2Entry | None = None
    for lineno, raw in enumerate(strip_bom(text).split("\n"), 1):
        line = raw.rstrip("\r")
        first = line[:1]
        if first == "#" or not line.strip(" \t"):
            continue
        if first in " \t":
            body = line.strip(" \t")
            if body[0] == "#":
                continue
            if current is None:
                raise UsageError(
                    f"{source}:{lineno}: option line before any URI line (a line starting with a space "
                    "or TAB holds an option for the URI line above it)"
                )
            _aria2_option(current, body, source, lineno)
        else:
            parts = line.split("\t") if "\t" in line else (line,)
            try:
                urls = [check_url(u) for u in (part.strip(" \t") for part in parts) if u]
            except Problem as e:
                raise UsageError(f"{source}:{lineno}: {e}") from None
            current = _Aria2Entry(lineno, urls)
            entries.append(current)

    claims = Claims()
    requests = []
    for e in entries:
        path = None
        folder = e.dir[1] if e.dir is not None else ""  # "" is the target folder itself
        if e.out is not None:
            path = at(f"{source}:{e.out[0]}", check_relative, f"{folder}/{e.out[1]}") if folder else e.out[1]
        elif folder:
            raise UsageError(
                f"{source}:{e.dir[0]}: dir= without out= is not supported; give the file name with out="
            )
        req = Request(
            url=e.urls[0],
            path=path,
            blake3=e.blake3[1] if e.blake3 else None,
            sha256=e.sha256[1] if e.sha256 else None,
            mirrors=mirrors_of(e.urls[0], e.urls[1:]) if len(e.urls) > 1 else (),
            headers=tuple(e.headers) if e.headers else (),
        )
        try:
            claims.claim(req, e.line)
        except Problem as p:
            raise UsageError(f"{source}:{e.out[0] if e.out is not None else e.line}: {p}") from None
        requests.append(req)
    return Manifest(None, tuple(requests))


def _aria2_option(entry: _Aria2Entry, body: str, source: str, lineno: int) -> None:
    key, eq, value = body.partition("=")
    key, value = key.strip(" \t"), value.strip(" \t")
    if not eq or not key:
        raise UsageError(f"{source}:{lineno}: malformed option line {quoted(body)}; expected key=value")
    if key not in _ARIA2_OPTIONS and key not in _SEGDL_OPTIONS:
        hint = " (write option names without the leading --)" if key.startswith("-") else ""
        raise UsageError(f"{source}:{lineno}: unknown option {quoted(key)}{hint}")
    try:
        if key in ("out", "dir"):
            _once(entry, key, key, source, lineno)
            setattr(entry, key, (lineno, check_relative(value, folder=key == "dir")))
        elif key == "checksum":
            _once(entry, "sha256", key, source, lineno)
            entry.sha256 = (lineno, _aria2_checksum(value))
        elif key == "blake3":
            _once(entry, "blake3", key, source, lineno)
            entry.blake3 = (lineno, check_hex(value, "blake3"))
        elif key == "header":
            name, colon, hvalue = value.partition(":")
            if not colon:
                raise UsageError(f"{source}:{lineno}: header: expected header=Name: value")
            entry.headers = (entry.headers or []) + [check_header(name, hvalue)]
        # any other known aria2 option: accepted, ignored
    except Problem as e:
        raise UsageError(f"{source}:{lineno}: {key}: {e}") from None


def _once(entry: _Aria2Entry, attr: str, key: str, source: str, lineno: int) -> None:
    previous = getattr(entry, attr)
    if previous is not None:
        raise UsageError(f"{source}:{lineno}: {key}= is given twice for this download (first on line {previous[0]})")


def _aria2_checksum(value: str) -> str:
    kind, eq, digest = value.partition("=")
    kind = kind.strip(" \t").lower()
    if not eq or not kind:
        raise Problem(f"expected checksum=sha-256=HEX, got {quoted(value)}")
    if kind in _SHA256_NAMES:
        return check_hex(digest.strip(" \t"), "sha-256")
    if kind in _OTHER_CHECKSUMS:
        raise Problem(
            f"checksum type {kind!r} is not supported; segdl verifies sha-256 (checksum=sha-256=HEX) "
            "and blake3 (blake3=HEX) and refuses rather than download without the check asked for"
        )
    raise Problem(f"unknown checksum type {quoted(kind)}; segdl verifies sha-256 (checksum=sha-256=HEX)")
