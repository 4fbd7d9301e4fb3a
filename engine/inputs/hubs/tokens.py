"""Where a hub's token comes from.  Pure but for reading the environment
and ``$HF_HOME/token``.

A request names its credential ("hf", or "env:NAME"); only that name is
ever kept (in the journal, with the job).  The token itself is read when a
request goes out, so a resumed or retried job finds it again in the
environment, and it is never written anywhere nor printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

HF = "hf"


def env_credential(name: str) -> str:
    return f"env:{name}"


def hf_home(env: Mapping[str, str] = os.environ) -> Path:
    home = env.get("HF_HOME")
    if home:
        return Path(home).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface"


def hf_token(env: Mapping[str, str] = os.environ) -> str | None:
    """As huggingface_hub reads it: ``HF_TOKEN``, then the older
    ``HUGGING_FACE_HUB_TOKEN``, then the file ``$HF_TOKEN_PATH`` or
    ``$HF_HOME/token`` (what ``hf auth login`` writes)."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = (env.get(name) or "").strip()
        if value:
            return value
    path = Path(env["HF_TOKEN_PATH"]).expanduser() if env.get("HF_TOKEN_PATH") else hf_home(env) / "token"
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def token(credential: str, env: Mapping[str, str] = os.environ) -> str | None:
    if credential == HF:
        return hf_token(env)
    if credential.startswith("env:"):
        value = (env.get(credential[4:]) or "").strip()
        return value or None
    return None


def auth_header(credential: str, env: Mapping[str, str] = os.environ) -> str | None:
    """``Authorization: Bearer TOKEN`` for a credential, or None when the
    environment has no token for it (the request then goes without)."""
    t = token(credential, env)
    if not t or any(c in t for c in "\r\n\0"):
        return None
    return f"Authorization: Bearer {t}"
