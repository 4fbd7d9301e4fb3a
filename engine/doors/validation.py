"""What a client may send the service: every field's type and range, checked
in one step before anything is applied.

Each command's fields are a table (name -> check); :func:`fields` checks a
whole body against one and returns the clean values, or raises
:class:`FieldError` naming the first field that is wrong.  Nothing here
does I/O: the HTTP door (``cli/server.py``) and the terminal UI both come
through :class:`~segdl.engine.doors.service.Service`, which calls it.

Ranges are what the journal (SQLite, 64-bit integers) and a browser
(JavaScript numbers, exact to 2**53) both keep exactly.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Callable

from ..values.errors import UsageError

MAX_ID = 2**63 - 1  # a journal row id
MAX_SPEED = 2**53 - 1  # bytes/s; 0: no limit
MIN_PRIORITY, MAX_PRIORITY = -(2**31), 2**31 - 1
MAX_CONNECTIONS = 1024
MAX_NAME = 200  # characters of a collection name
MAX_PAGE = 10000  # files in one GET /files answer
DEFAULT_PAGE = 1000

# Characters a name shown in a terminal or a web page must not carry:
# controls (C0, DEL, C1), unpaired surrogates, line and paragraph
# separators, and the bidirectional controls that reorder what follows.
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class FieldError(UsageError):
    """A field of a request is missing, unknown, or of the wrong type or
    range.  ``field`` names it (``select[2]``, ``priority``); the message
    starts with it."""

    def __init__(self, field: str, message: str, *, prefixed: bool = False) -> None:
        super().__init__(message if prefixed else f"{field}: {message}")
        self.field = field

    def __reduce__(self):
        return (_field_error, (self.field, self.message))


def _field_error(field: str, message: str) -> FieldError:
    return FieldError(field, message, prefixed=True)


Check = Callable[[str, Any], Any]


def integer(lo: int, hi: int, what: str = "") -> Check:
    def check(name: str, v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise FieldError(name, f"must be an integer from {lo} to {hi}{what}")
        return v
    return check


def boolean(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise FieldError(name, "must be true or false")
    return v


def text(max_len: int = 1 << 20) -> Check:
    def check(name: str, v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise FieldError(name, "must be a non-empty string")
        if len(v) > max_len:
            raise FieldError(name, f"must be at most {max_len} characters")
        return v
    return check


def _control(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") or c in _BIDI


def name(name: str, v: Any) -> str | None:
    """A collection's name from a client: shown as it is, so no control
    characters."""
    if v is None:
        return None
    v = text(MAX_NAME)(name, v)
    for c in v:
        if _control(c):
            raise FieldError(name, f"must not contain control characters (U+{ord(c):04X})")
    return v


def clean_name(v: str | None) -> str | None:
    """A collection's name from elsewhere (a hub's listing): its control
    characters dropped."""
    if v is None:
        return None
    return "".join(c for c in v if not _control(c))[:MAX_NAME] or None


def obj(name: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise FieldError(name, "must be an object")
    return v


def listing(item: Check, max_items: int = 100000) -> Check:
    def check(name: str, v: Any) -> list:
        if not isinstance(v, list):
            raise FieldError(name, "must be a list")
        if len(v) > max_items:
            raise FieldError(name, f"must have at most {max_items} items")
        return [item(f"{name}[{i}]", x) for i, x in enumerate(v)]
    return check


def path_or_index(name: str, v: Any) -> str | int:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_ID:
        return v
    raise FieldError(name, "must be a file's path or URL (a string), or its index in the job (an integer >= 0)")


speed = integer(0, MAX_SPEED, " (bytes per second, 0 for none)")
priority = integer(MIN_PRIORITY, MAX_PRIORITY, " (higher first)")
an_id = integer(1, MAX_ID)

JOB = {
    "urls": listing(text(64 * 1024)), "manifest": obj, "aria2": text(), "ref": text(4096),
    "dest": text(4096), "collection": name, "connections": integer(1, MAX_CONNECTIONS),
    "priority": priority, "select": listing(path_or_index),
}
FILE_CHANGE = {"paused": boolean, "priority": priority, "max_speed": speed}
LIMITS = {"max_speed": speed, "max_file_speed": speed, "slow": boolean}
RETRY = {"ids": listing(an_id, MAX_PAGE), "job": an_id}


def fields(body: Any, table: dict[str, Check], *, at_least_one: bool = False) -> dict[str, Any]:
    """``body`` checked against ``table``: every key known, every value of
    its type and range.  Returns the clean values (absent keys absent)."""
    if not isinstance(body, dict):
        raise UsageError("the body must be a JSON object")
    unknown = sorted(k for k in body if k not in table)
    if unknown:
        raise FieldError(unknown[0], f"unknown field (known: {', '.join(table)})")
    if at_least_one and not body:
        raise UsageError(f"give at least one of {', '.join(table)}")
    return {k: table[k](k, v) for k, v in body.items()}
