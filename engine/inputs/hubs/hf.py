"""Hugging Face references, listings and cache layout.  Pure: no I/O.

A reference is ``hf://[datasets/|spaces/]ORG/NAME[@REV][/SUBDIR]``; a
revision with a slash in it (``refs/pr/1``) is written percent-encoded
(``@refs%2Fpr%2F1``), as in huggingface_hub's own ``hf://`` paths.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping
from urllib.parse import quote, unquote

from ...values.errors import HubProtocolError, UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
KINDS = {"models": "", "datasets": "datasets/", "spaces": "spaces/"}  # kind -> URL prefix
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HEX40 = re.compile(r"^[0-9a-fA-F]{40}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True, slots=True)
class HfRef:
    kind: str  # models | datasets | spaces
    repo: str  # ORG/NAME
    revision: str  # "main" unless given
    subdir: str  # "" for the whole repo

    @property
    def text(self) -> str:
        kind = "" if self.kind == "models" else f"{self.kind}/"
        sub = f"/{self.subdir}" if self.subdir else ""
        return f"hf://{kind}{self.repo}@{quote(self.revision, safe='')}{sub}"


def parse_ref(text: str) -> HfRef:
    if not text.startswith("hf://"):
        raise UsageError(f"{text!r} is not an hf:// reference")
    rest = text[5:].strip("/")
    kind = "models"
    first, _, after = rest.partition("/")
    if first in KINDS and after:
        kind, rest = first, after
    parts = rest.split("/")
    if len(parts) < 2:
        raise UsageError(f"{text!r}: expected hf://[datasets/|spaces/]ORG/NAME[@REV][/SUBDIR]")
    org, name, sub = parts[0], parts[1], parts[2:]
    revision = "main"
    if "@" in name:
        name, _, rev = name.partition("@")
        revision = unquote(rev)
        if not revision:
            raise UsageError(f"{text!r}: empty revision after @")
    for part in (org, name):
        if not _NAME.match(part) or ".." in part:
            raise UsageError(f"{text!r}: {part!r} is not a valid repository name part")
    if any(c in revision for c in "\0\r\n") or ".." in revision.split("/"):
        raise UsageError(f"{text!r}: invalid revision {revision!r}")
    subdir = "/".join(p for p in sub if p not in ("", "."))
    if ".." in subdir.split("/"):
        raise UsageError(f"{text!r}: the folder must not contain '..'")
    return HfRef(kind, f"{org}/{name}", revision, subdir)


def endpoint(env: Mapping[str, str] = os.environ) -> str:
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def info_url(base: str, ref: HfRef) -> str:
    return f"{base}/api/{ref.kind}/{ref.repo}/revision/{quote(ref.revision, safe='')}"


def tree_url(base: str, ref: HfRef, commit: str) -> str:
    sub = f"/{quote(ref.subdir)}" if ref.subdir else ""
    return f"{base}/api/{ref.kind}/{ref.repo}/tree/{commit}{sub}?recursive=true&expand=false"


def resolve_url(base: str, kind: str, repo: str, commit: str, path: str) -> str:
    return f"{base}/{KINDS[kind]}{repo}/resolve/{commit}/{quote(path)}"


# ------------------------------------------------------------------ globs


def _pattern(p: str) -> str:
    """As huggingface_hub's ``filter_repo_objects``: backslashes are
    separators, and a pattern ending in ``/`` matches that folder's files."""
    p = p.replace("\\", "/")
    return p + "*" if p.endswith("/") else p


def selected(path: str, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> bool:
    """``fnmatchcase`` (case-sensitive; ``*`` matches across ``/``) against
    the allow list (if any) and then the ignore list."""
    inc = [_pattern(p) for p in include]
    if inc and not any(fnmatchcase(path, p) for p in inc):
        return False
    return not any(fnmatchcase(path, _pattern(p)) for p in exclude)


# ---------------------------------------------------------------- listing


@dataclass(frozen=True, slots=True)
class TreeFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the content's sha256 (lfs.oid)
    git_sha1: str | None  # files kept in git: the blob id (oid)

    @property
    def etag(self) -> str:
        """The name huggingface_hub gives its blob in the cache."""
        return self.sha256 or self.git_sha1 or ""


def commit_of(info: object, what: str) -> tuple[str, str]:
    """(commit sha, canonical repo id) from a repo-info answer."""
    if not isinstance(info, dict) or not isinstance(info.get("sha"), str) or not COMMIT.match(info["sha"]):
        raise HubProtocolError(f"{what}: the repo info has no commit sha")
    repo = info.get("id") or info.get("modelId")
    return info["sha"], repo if isinstance(repo, str) and "/" in repo else ""


def tree_files(entries: object, what: str) -> list[TreeFile]:
    """Files of a tree page (folders skipped)."""
    if not isinstance(entries, list):
        raise HubProtocolError(f"{what}: the tree listing is not a list")
    out = []
    for e in entries:
        if not isinstance(e, dict) or e.get("type") != "file":
            continue
        path, size = e.get("path"), e.get("size")
        if not isinstance(path, str) or type(size) is not int or size < 0:
            raise HubProtocolError(f"{what}: a tree entry without path or size: {str(e)[:120]}")
        lfs = e.get("lfs") if isinstance(e.get("lfs"), dict) else None
        sha = None
        if lfs is not None:
            sha = lfs.get("oid") or lfs.get("sha256")
            if not isinstance(sha, str) or not _HEX64.match(sha):
                raise HubProtocolError(f"{what}: {path}: LFS entry without a sha256")
            sha = sha.lower()
        oid = e.get("oid")
        git = oid.lower() if lfs is None and isinstance(oid, str) and _HEX40.match(oid) else None
        out.append(TreeFile(path, size, sha, git))
    return out


# ------------------------------------------------------------- the cache


def cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    from .tokens import hf_home

    return hf_home(env) / "hub"


def repo_folder(kind: str, repo: str) -> str:
    """``models--org--name``, as huggingface_hub names a repo's folder."""
    return f"{kind}--{repo.replace('/', '--')}"


def blob_path(folder: str, etag: str) -> str:
    return f"{folder}/blobs/{etag}"


def snapshot_path(folder: str, commit: str, path: str) -> str:
    return f"{folder}/snapshots/{commit}/{path}"


def blob_link(path: str, etag: str) -> str:
    """The relative symlink target from ``snapshots/{commit}/{path}`` to
    ``blobs/{etag}``."""
    depth = len(PurePosixPath(path).parts) + 1  # the path's folders and the commit's
    return "/".join([".."] * depth + ["blobs", etag])
