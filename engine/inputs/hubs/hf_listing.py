"""A Hugging Face reference to a :class:`~segdl.engine.inputs.hubs.listing.Listing`.

Two kinds of call, as huggingface_hub makes them: the repo info at the
revision (its commit sha, which every file URL then pins), then the
recursive tree at that commit, page by page.  No request per file: the
tree gives each file's size and hash (sha256 for LFS files, the git blob
sha1 for the others), so the engine needs no probe of its own to know
what to expect, and the file's one request to the hub is its download.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ...values.errors import UsageError
from ..manifest import check_path
from ...values.messages import TransferOptions
from ...values.request import Request
from . import hf
from .listing import HubOptions, Listing, Problem
from .fetch import Client
from .tokens import HF, auth_header


def list_hf(text: str, opts: HubOptions, on_message: Callable[[str], None]) -> Listing:
    ref = hf.parse_ref(text)
    base = hf.endpoint()
    client = Client("hf", base, opts.transfer or TransferOptions(), auth_header(HF), on_message)
    what = ref.text
    info, _ = client.get(hf.info_url(base, ref), what)
    commit, canonical = hf.commit_of(info, what)
    repo = canonical or ref.repo  # a renamed repo answers under its new name
    files = []
    for page in client.pages(hf.tree_url(base, replace(ref, repo=repo), commit), what):
        files += hf.tree_files(page, what)
    chosen = [f for f in files if hf.selected(f.path, opts.include, opts.exclude)]

    requests: list[Request] = []
    problems: list[Problem] = []
    links: list[list[str]] = []
    folder = hf.repo_folder(ref.kind, ref.repo)  # as the user names it, as huggingface_hub does
    blobs: set[str] = set()
    for f in chosen:
        url = hf.resolve_url(base, ref.kind, repo, commit, f.path)
        try:
            repo_path = check_path(f.path, f"{what}: {f.path!r}")
        except UsageError as e:
            problems.append(Problem(f.path, e))
            continue
        if opts.hf_cache is not None:
            if not f.etag:
                problems.append(Problem(f.path, UsageError(f"{what}: {f.path}: the tree gives no hash to name its blob")))
                continue
            links.append([repo_path, f.etag])
            path = hf.blob_path(folder, f.etag)
            if path in blobs:
                continue  # the same content under two names: one blob
            blobs.add(path)
        else:
            path = repo_path
        requests.append(Request(url, path, size=f.size, sha256=f.sha256, git_sha1=f.git_sha1,
                                credential=HF, hub="hf"))
    source = {"hub": "hf", "ref": text, "key": f"hf:{base}/{ref.kind}/{ref.repo}@{ref.revision}",
              "repo": repo, "revision": ref.revision, "commit": commit}
    dest = opts.dest
    if opts.hf_cache is not None:
        dest = opts.hf_cache
        source["hf_cache"] = {"folder": folder, "links": links}
    notes = () if chosen or not files else (f"{what}: no file matches --include/--exclude ({len(files)} in the repo)",)
    return Listing(text, "hf", dest, f"hf:{ref.repo}", tuple(requests), tuple(problems), notes, source,
                   client.calls)
