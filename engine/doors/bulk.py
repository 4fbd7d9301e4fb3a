"""One request that acts on many files (``POST /files/bulk``): pause,
resume, a priority, a speed limit, or cancel, for every file it names.

AriaNg sends one request per task, which crawls with thousands; here the
whole list is checked first (:data:`BULK`: a bad field or id applies
nothing), then applied in one command on the engine's loop.  Each file
answers for itself: one that is not running (done, failed) is listed as
refused with the reason, and the others change.
"""

from __future__ import annotations

from ..values.errors import ConflictError, UsageError
from .validation import FieldError, an_id, boolean, fields, listing, priority, speed

MAX_BULK = 10000  # files in one bulk request

BULK = {"ids": listing(an_id, MAX_BULK), "paused": boolean, "priority": priority, "max_speed": speed,
        "cancel": boolean, "keep_partial": boolean}
CHANGES = ("paused", "priority", "max_speed")


def plan(body) -> tuple[list[int], dict, bool, bool]:
    """(ids, the change, cancel?, keep partial data?) of a checked body."""
    body = fields(body, BULK)
    ids = list(dict.fromkeys(body.get("ids") or []))
    if not ids:
        raise FieldError("ids", "give the files to act on (a non-empty list of ids)")
    change = {k: body[k] for k in CHANGES if k in body}
    cancel = body.get("cancel", False)
    if cancel == bool(change):
        raise UsageError("give either cancel: true, or at least one of paused, priority, max_speed")
    if "keep_partial" in body and not cancel:
        raise UsageError("keep_partial goes with cancel: true")
    return ids, change, cancel, body.get("keep_partial", False)


def apply(commands, ids: list[int], change: dict, cancel: bool, keep_partial: bool) -> dict:
    """Run on the loop's thread: each file changed or cancelled, or refused."""
    done, refused = [], []
    for fid in ids:
        try:
            if cancel:
                commands.cancel(fid, keep_partial=keep_partial)
            else:
                commands.set_file(fid, **change)
        except (LookupError, ConflictError) as e:
            refused.append({"id": fid, "error": str(e.args[0]) if e.args else type(e).__name__})
        else:
            done.append(fid)
    return {"done": done, "refused": refused}
