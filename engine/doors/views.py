"""A file and a job as every answer and event of the service names their
fields (README, "segdl serve": one vocabulary), from the journal's rows."""

from __future__ import annotations

import json

from ..inputs.naming import hide_userinfo
from ..rules import lifecycle
from ..run.commands import on_disk


def file_view(row: dict) -> dict:
    """A file as every answer and event names its fields (README, "segdl
    serve"): limits are integers, 0 for none; ``speed`` is 0 unless it is
    downloading; bytes on disk (durable, ``bytes_done``) lag what has
    arrived (``received``); a URL's ``user:password@`` stays in the
    journal (0600) only.  ``on_disk``: is a finished file still at its
    path (null for the others); ``checked``: what the last re-verify
    found, and when."""
    return {"id": row["id"], "job": row["job_id"], "url": hide_userinfo(row["url"] or ""), "path": row["path"],
            "state": row["state"], "size": row["size"], "bytes_done": row["bytes_done"],
            "received": row["received"] or 0,
            "speed": (row["speed"] or 0) if row["state"] == "downloading" else 0, "paused": bool(row["paused"]),
            "priority": row["priority"], "max_speed": row["max_speed"] or 0, "blake3": row["blake3"],
            "sha256": row["sha256"], "error": row["error"], "exit_code": row["exit_code"], "updated": row["updated"],
            "mirrors": json.loads(row["mirrors"]) if row.get("mirrors") else None,
            "on_disk": on_disk(row) if row["state"] in lifecycle.COMPLETE else None,
            "checked": {"result": row["checked"], "at": row["checked_at"]} if row.get("checked") else None}


def job_view(row: dict, counts: dict[str, int]) -> dict:
    """A job: its files (rows in the journal, as GET /files?job= lists
    them) counted by state, as its ``job_ended`` event counts them."""
    spec = row["spec"]
    out = {"id": row["id"], "created": row["created"], "dest": row["dest"], "collection": row["collection"],
           "state": row["state"], "files": sum(counts.values()), "counts": counts,
           "requested": len(spec.get("requests", []))}
    if spec.get("source"):
        out["source"] = {k: v for k, v in spec["source"].items() if k in ("key", "ref", "commit", "hub")}
    return out
