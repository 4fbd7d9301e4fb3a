"""What a hub's error answers mean.  Pure: status, headers and body in, a
:class:`~segdl.engine.values.errors.SegdlError` out.

* Hugging Face puts the reason in ``X-Error-Code`` (RepoNotFound,
  RevisionNotFound, EntryNotFound, GatedRepo) and a sentence in
  ``X-Error-Message``.
* CivitAI answers a client that does not look like a browser with a JSON
  body, ``{"error": ..., "message": ...}`` (early access adds a deadline).

Messages quote the hub's sentence (shortened, control characters dropped)
and name the repo, model or file they are about (``what``); they never
carry a header value we sent.
"""

from __future__ import annotations

import json
import unicodedata
from urllib.parse import unquote, urlsplit

from ...values.errors import (
    HubAccessError,
    HubError,
    HubGoneError,
    HubNotFoundError,
    HubRateLimitError,
    EntryNotFoundError,
    RevisionNotFoundError,
    SegdlError,
)


def clean(text: object, limit: int = 300) -> str:
    """A hub's sentence, safe to print: one line, no control characters."""
    s = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c for c in str(text))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def describe(url: str) -> str:
    """A URL as a person reads it in a message: no query string (signed
    URLs carry their tokens there)."""
    p = urlsplit(url)
    netloc = p.netloc.rpartition("@")[2]  # no user:password@
    return f"{p.scheme}://{netloc}{unquote(p.path)}" if p.scheme else url


def hub_error(hub: str, status: int, headers: dict[str, str], body: bytes, url: str,
              retry_after: float | None, what: str | None = None) -> SegdlError | None:
    """The error a hub's answer stands for, or None to let the generic
    HTTP mapping decide."""
    what = what or describe(url)
    if hub == "hf" or headers.get("x-error-code"):
        return hf_error(status, headers, what, retry_after)
    if hub == "civitai":
        return civitai_error(status, body, what, retry_after)
    return None


_TOKEN_HINT = "set HF_TOKEN (or log in with `hf auth login`) if it is private or gated"


def hf_error(status: int, headers: dict[str, str], what: str, retry_after: float | None) -> SegdlError | None:
    code = headers.get("x-error-code", "")
    said = clean(headers.get("x-error-message", ""))
    tail = f" ({said})" if said else ""
    if status == 429:
        return HubRateLimitError(f"{what}: rate-limited by the hub (HTTP 429){tail}",
                                 status_code=429, retry_after=retry_after)
    if code == "RepoNotFound":
        return HubNotFoundError(f"{what}: repository not found{tail}; {_TOKEN_HINT}", status_code=status)
    if code == "RevisionNotFound":
        return RevisionNotFoundError(f"{what}: revision not found{tail}", status_code=status)
    if code == "EntryNotFound":
        return EntryNotFoundError(f"{what}: file not found in the repository{tail}", status_code=status)
    if code == "GatedRepo":
        return HubAccessError(f"{what}: gated repository: accept its terms on the hub's page and {_TOKEN_HINT}"
                              f"{tail}", status_code=status)
    if said and "disabled" in said.lower():
        return HubAccessError(f"{what}: access disabled{tail}", status_code=status)
    if status == 401:
        return HubAccessError(f"{what}: authentication required (HTTP 401){tail}; {_TOKEN_HINT}", status_code=status)
    if status == 403:
        return HubAccessError(f"{what}: access forbidden (HTTP 403){tail}", status_code=status)
    if status == 404:
        return HubNotFoundError(f"{what}: not found (HTTP 404){tail}", status_code=status)
    return None


def _json_body(body: bytes) -> dict:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def civitai_error(status: int, body: bytes, what: str, retry_after: float | None) -> SegdlError | None:
    doc = _json_body(body)
    error = doc.get("error")
    if isinstance(error, dict):  # tRPC: {"error": {"json": {"message": ...}}}
        inner = error.get("json") if isinstance(error.get("json"), dict) else error
        error = inner.get("message")
    said = clean(doc.get("message") or error or "")
    tail = f": {said}" if said else ""
    if status == 429:
        return HubRateLimitError(f"{what}: rate-limited by CivitAI (HTTP 429){tail}",
                                 status_code=429, retry_after=retry_after)
    if status == 401:
        return HubAccessError(f"{what}: login required, or downloads of it are disabled (HTTP 401){tail}; "
                              "set CIVITAI_TOKEN to an API key (or name another variable with --token-env)",
                              status_code=status)
    if status == 403:
        deadline = doc.get("deadline") or doc.get("earlyAccessDeadline") or doc.get("earlyAccessEndsAt")
        when = f" until {clean(deadline, 60)}" if deadline else ""
        return HubAccessError(f"{what}: in early access{when} (HTTP 403){tail}", status_code=status)
    if status == 404:
        return HubNotFoundError(f"{what}: not found (HTTP 404){tail}", status_code=status)
    if status == 410:
        return HubGoneError(f"{what}: archived or removed (HTTP 410){tail}", status_code=status)
    return None


__all__ = ["hub_error", "hf_error", "civitai_error", "clean", "describe", "HubError"]
