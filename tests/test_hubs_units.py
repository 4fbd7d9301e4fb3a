"""The hubs' pure rules, without servers: references, globs, selection,
layouts, the HF cache's paths, error mapping, tokens."""

from __future__ import annotations

import hashlib
import pickle
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segdl.engine.values import errors as E
from segdl.engine.inputs.hubs import civitai, hf, is_hub_ref
from segdl.engine.inputs.hubs.errors import civitai_error, hf_error
from segdl.engine.inputs.hubs.fetch import next_link
from segdl.engine.inputs.hubs.tokens import auth_header, hf_token
from segdl.engine.inputs.manifest import check_path
from segdl.engine.rules.retry import parse_ratelimit
from segdl.engine.disk.verify import digest_file

# ------------------------------------------------------------- references


@pytest.mark.parametrize("text, kind, repo, rev, sub", [
    ("hf://org/name", "models", "org/name", "main", ""),
    ("hf://org/name@v1.0", "models", "org/name", "v1.0", ""),
    ("hf://datasets/org/data@abc/sub/dir", "datasets", "org/data", "abc", "sub/dir"),
    ("hf://spaces/org/app", "spaces", "org/app", "main", ""),
    ("hf://org/name@refs%2Fpr%2F1/x", "models", "org/name", "refs/pr/1", "x"),
    ("hf://org/name/onnx/", "models", "org/name", "main", "onnx"),
])
def test_hf_references(text, kind, repo, rev, sub):
    r = hf.parse_ref(text)
    assert (r.kind, r.repo, r.revision, r.subdir) == (kind, repo, rev, sub)
    assert hf.parse_ref(r.text) == r  # the canonical text reads back the same


@pytest.mark.parametrize("text", ["hf://name", "hf://org/na me", "hf://org/name@", "hf://../x", "hf://org/x/../y",
                                  "hf://org/name@a/../b"])
def test_bad_hf_references_are_usage_errors(text):
    with pytest.raises(E.UsageError):
        hf.parse_ref(text)


def test_hf_urls():
    r = hf.parse_ref("hf://datasets/org/data@refs%2Fpr%2F1/sub")
    assert hf.info_url("http://h", r) == "http://h/api/datasets/org/data/revision/refs%2Fpr%2F1"
    assert hf.tree_url("http://h", r, "a" * 40) == f"http://h/api/datasets/org/data/tree/{'a' * 40}/sub?recursive=true&expand=false"
    assert hf.resolve_url("http://h", "datasets", "org/data", "c" * 40, "a b/c.json") == \
        f"http://h/datasets/org/data/resolve/{'c' * 40}/a%20b/c.json"
    assert hf.resolve_url("http://h", "models", "org/m", "c" * 40, "x") == f"http://h/org/m/resolve/{'c' * 40}/x"


_paths = st.lists(st.text(alphabet="ab/.*_X", min_size=1, max_size=8), min_size=1, max_size=6)
_globs = st.lists(st.text(alphabet="ab/.*?[]!X", min_size=1, max_size=6), max_size=3)


@settings(max_examples=300, deadline=None)
@given(_paths, _globs, _globs)
def test_globs_match_huggingface_hub(paths, include, exclude):
    """--include/--exclude select exactly what huggingface_hub's own
    filter_repo_objects (allow_patterns/ignore_patterns) selects."""
    from huggingface_hub.utils import filter_repo_objects

    want = list(filter_repo_objects(paths, allow_patterns=include or None, ignore_patterns=exclude or None))
    assert [p for p in paths if hf.selected(p, include, exclude)] == want


def test_globs_examples():
    assert hf.selected("onnx/model.onnx", ["onnx/"])
    assert not hf.selected("model.onnx", ["onnx/"])
    assert hf.selected("a/b/c.json", ["*.json"])  # * crosses folders, as in huggingface_hub
    assert not hf.selected("A.JSON", ["*.json"])  # case-sensitive
    assert not hf.selected("x.bin", [], ["*.bin"])


def test_tree_entries():
    sha, oid = "ab" * 32, "cd" * 20
    files = hf.tree_files([
        {"type": "directory", "path": "sub", "oid": "0" * 40, "size": 0},
        {"type": "file", "path": "sub/w.safetensors", "size": 10, "oid": "ee" * 20, "lfs": {"oid": sha.upper(), "size": 10}},
        {"type": "file", "path": "config.json", "size": 3, "oid": oid},
    ], "t")
    assert files == [hf.TreeFile("sub/w.safetensors", 10, sha, None), hf.TreeFile("config.json", 3, None, oid)]
    assert [f.etag for f in files] == [sha, oid]
    with pytest.raises(E.HubProtocolError):
        hf.tree_files({"not": "a list"}, "t")
    with pytest.raises(E.HubProtocolError):
        hf.tree_files([{"type": "file", "path": "x"}], "t")
    with pytest.raises(E.HubProtocolError):
        hf.tree_files([{"type": "file", "path": "x", "size": 1, "lfs": {"oid": "short"}}], "t")
    with pytest.raises(E.HubProtocolError):
        hf.commit_of({"id": "o/n"}, "t")
    assert hf.commit_of({"id": "new/name", "sha": "f" * 40}, "t") == ("f" * 40, "new/name")


def test_hf_cache_paths(tmp_path):
    assert hf.repo_folder("models", "org/name") == "models--org--name"
    assert hf.repo_folder("datasets", "o/d") == "datasets--o--d"
    assert hf.blob_link("a.json", "e") == "../../blobs/e"
    assert hf.blob_link("x/y/a.json", "e") == "../../../../blobs/e"
    # The link resolves to the blob from where the snapshot file is.
    link = tmp_path / hf.snapshot_path("m", "c" * 40, "x/y/a.json")
    assert (link.parent / hf.blob_link("x/y/a.json", "e")).resolve() == (tmp_path / hf.blob_path("m", "e")).resolve()
    assert hf.cache_dir({"HF_HUB_CACHE": "/c"}).as_posix() == "/c"
    assert hf.cache_dir({"HF_HOME": "/h"}).as_posix() == "/h/hub"
    assert hf.cache_dir({"XDG_CACHE_HOME": "/x"}).as_posix() == "/x/huggingface/hub"


def test_git_blob_sha1_is_gits(tmp_path):
    data = b"hello\x00world\n" * 1000
    f = tmp_path / "f"
    f.write_bytes(data)
    want = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    assert digest_file(f, git_sha1=True).git_sha1 == want
    assert digest_file(f).git_sha1 is None
    if shutil.which("git"):
        assert subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True).stdout.strip() == want


@pytest.mark.parametrize("text, ref", [
    ("civitai://model/12", civitai.CivitaiRef("model", 12)),
    ("civitai://model/12@34", civitai.CivitaiRef("model", 12, 34)),
    ("civitai://version/34", civitai.CivitaiRef("version", 34)),
    ("civitai://collection/5", civitai.CivitaiRef("collection", 5)),
    ("https://civitai.com/models/12", civitai.CivitaiRef("model", 12)),
    ("https://civitai.com/models/12/some-lora-name?modelVersionId=34", civitai.CivitaiRef("model", 12, 34)),
    ("https://www.civitai.com/collections/5", civitai.CivitaiRef("collection", 5)),
    ("http://127.0.0.1:9/models/7", civitai.CivitaiRef("model", 7)),  # the endpoint's own host
])
def test_civitai_references(text, ref):
    env = {"CIVITAI_ENDPOINT": "http://127.0.0.1:9"}
    assert is_hub_ref(text, env)
    assert civitai.parse_ref(text, env) == ref


@pytest.mark.parametrize("text", ["civitai://model/x", "civitai://version/3@4", "civitai://user/3",
                                  "https://civitai.com/models/12?modelVersionId=x"])
def test_bad_civitai_references(text):
    with pytest.raises(E.UsageError):
        civitai.parse_ref(text, {})


def test_not_hub_refs():
    for text in ("https://example.org/models/1", "https://civitai.com/images/3", "https://civitai.com/api/download/models/3",
                 "file.json", "http://huggingface.co/org/name"):
        assert not is_hub_ref(text, {})


# -------------------------------------------------------------- selection

def _file(fid, name, ftype="Model", primary=None, fmt="SafeTensor"):
    f = {"id": fid, "name": name, "type": ftype, "sizeKB": 1.5, "metadata": {"format": fmt},
         "hashes": {"SHA256": "AB" * 32}, "downloadUrl": f"https://civitai.com/api/download/models/1?fileId={fid}"}
    if primary:
        f["primary"] = True
    return f


MODEL = {"id": 1, "name": "Some LoRA", "type": "LORA", "modelVersions": [
    {"id": 20, "name": "v2", "files": [_file(201, "a-v2.safetensors", primary=True), _file(202, "a-v2.pt", fmt="PickleTensor"),
                                      _file(203, "vae.safetensors", "VAE")]},
    {"id": 10, "name": "v1", "files": [_file(101, "a-v1.safetensors")]},  # none marked primary
]}


def _names(sel, version=None):
    files, notes = civitai.model_files(MODEL, version, sel, "m")
    return [f.name for f in files], notes


def test_default_is_the_primary_file_of_the_latest_version():
    assert _names(civitai.Selection()) == (["a-v2.safetensors"], [])
    assert _names(civitai.Selection(), version=10) == (["a-v1.safetensors"], [])  # the first when none is primary


def test_selection_flags_widen_and_narrow():
    assert _names(civitai.Selection(all_files=True))[0] == ["a-v2.safetensors", "a-v2.pt", "vae.safetensors"]
    assert _names(civitai.Selection(all_versions=True))[0] == ["a-v2.safetensors", "a-v1.safetensors"]
    assert _names(civitai.Selection(types=("vae",)))[0] == ["vae.safetensors"]
    assert _names(civitai.Selection(formats=("PickleTensor",)))[0] == ["a-v2.pt"]
    assert _names(civitai.Selection(all_files=True, types=("Model",), formats=("safetensor",)))[0] == ["a-v2.safetensors"]
    names, notes = _names(civitai.Selection(all_versions=True, types=("VAE",)))
    assert names == ["vae.safetensors"] and len(notes) == 1 and "v1" in notes[0]


def test_file_facts():
    f = civitai.model_files(MODEL, None, civitai.Selection(), "m")[0][0]
    assert f.size == 1536 and f.sha256 == "ab" * 32 and f.blake3 is None
    blake = {**MODEL, "modelVersions": [{"id": 5, "name": "v", "files": [
        {**_file(1, "x"), "sizeKB": 0.3330078125, "hashes": {"blake3": "CD" * 32, "SHA256": "AB" * 32}}]}]}
    f = civitai.model_files(blake, None, civitai.Selection(), "m")[0][0]
    assert f.size == 341 and f.blake3 == "cd" * 32
    assert civitai._size(1.2345) is None  # not bytes / 1024: no size rather than a wrong one


def test_archived_and_unknown_versions():
    archived = {"id": 2, "name": "Gone", "mode": "Archived", "modelVersions": [{"id": 3, "name": "v", "files": []}]}
    with pytest.raises(E.HubGoneError, match="Archived"):
        civitai.model_files(archived, None, civitai.Selection(), "civitai://model/2")
    with pytest.raises(E.HubGoneError):
        civitai.model_files({"id": 2, "name": "x", "modelVersions": []}, None, civitai.Selection(), "m")
    with pytest.raises(E.RevisionNotFoundError):
        civitai.model_files(MODEL, 999, civitai.Selection(), "m")
    with pytest.raises(E.HubProtocolError):
        civitai.model_files({"id": 1}, None, civitai.Selection(), "m")


def test_version_answers_read_as_a_model():
    model, vid = civitai.version_as_model({"id": 20, "modelId": 1, "name": "v2", "model": {"name": "M", "type": "LORA"},
                                           "files": [_file(1, "f")]}, "v")
    assert vid == 20 and model["name"] == "M" and model["modelVersions"][0]["id"] == 20


def test_trpc_pages_and_changed_shape():
    doc = {"result": {"data": {"json": {"items": [{"id": 3, "name": "a"}, {"id": 4}], "nextCursor": 7}}}}
    assert civitai.trpc_page(doc, "c") == ([(3, "a"), (4, "4")], 7)
    for bad in ({"result": {"data": {"items": []}}}, {"result": {"data": {"json": {"items": [{"name": "x"}]}}}}, [1]):
        with pytest.raises(E.HubProtocolError, match="unofficial"):
            civitai.trpc_page(bad, "c")
    assert '"collectionId":5' in __import__("urllib.parse").parse.unquote(civitai.trpc_url("http://h", 5, None))


# ----------------------------------------------------------------- layout


def test_layout_sanitizes_every_field():
    fields = (("collection", "My LoRAs"), ("model", "../../etc"), ("file", "a/b\x1b[31m.safetensors"),
              ("version", ""), ("type", "LORA"))
    path = check_path(civitai.layout_path(civitai.DEFAULT_LAYOUT, fields), "t")
    assert path == "My LoRAs/_.._etc/b_[31m.safetensors"
    assert civitai.layout_path("{type}/{version}/{file}", fields).split("/")[0] == "LORA"
    assert civitai.layout_path(civitai.DEFAULT_LAYOUT, (("collection", ""), ("model", "M"), ("file", "f"))) == "M/f"
    assert civitai.layout_path("{model}/{file}", (("model", ".."), ("file", "f"))) == "_/f"
    assert civitai.layout_path("{model}/{file}", (("model", "SDXL / Pony"), ("file", "f"))) == "SDXL _ Pony/f"


def test_bad_layouts_are_usage_errors():
    for bad in ("{model}/{nope}/{file}", "{model}", "{file"):
        with pytest.raises(E.UsageError):
            civitai.check_layout(bad)
    assert civitai.check_layout("{base_model}/{model}/{file_id}-{file}")


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("code, status, cls, exit_code", [
    ("RepoNotFound", 401, E.HubNotFoundError, 8),
    ("RevisionNotFound", 404, E.RevisionNotFoundError, 9),
    ("EntryNotFound", 404, E.EntryNotFoundError, 10),
    ("GatedRepo", 403, E.HubAccessError, 11),
])
def test_hf_error_codes(code, status, cls, exit_code):
    e = hf_error(status, {"x-error-code": code, "x-error-message": "said\x1b[2J so"}, "hf://o/n@main", None)
    assert type(e) is cls and e.exit_code == exit_code and "hf://o/n@main" in e.message
    assert "\x1b" not in e.message and "said" in e.message


def test_hub_rate_limit_and_plain_statuses():
    e = hf_error(429, {}, "w", 55.0)
    assert isinstance(e, E.HubRateLimitError) and e.retryable and e.retry_after == 55.0 and e.exit_code == 13
    assert hf_error(500, {}, "w", None) is None  # left to the generic mapping (transient)


def test_civitai_errors_say_what_the_hub_says():
    e = civitai_error(403, b'{"error": "Early Access", "deadline": "2026-12-24T00:00:00.000Z", "message": "Buzz"}', "f", None)
    assert isinstance(e, E.HubAccessError) and "until 2026-12-24" in e.message and "Buzz" in e.message
    assert "logged in" in civitai_error(401, b'{"message": "logged in please"}', "f", None).message
    assert civitai_error(410, b"", "f", None).exit_code == E.EXIT_HUB_GONE
    assert civitai_error(404, b"<html>", "f", None).exit_code == E.EXIT_HUB_NOT_FOUND
    trpc = b'{"error": {"json": {"message": "Please use the public API instead"}}}'
    assert "public API" in civitai_error(401, trpc, "c", None).message
    assert civitai_error(429, b"{}", "f", 1.0).retry_after == 1.0


def test_new_errors_pickle():
    for cls in (E.HubNotFoundError, E.RevisionNotFoundError, E.EntryNotFoundError, E.HubAccessError,
                E.HubGoneError, E.HubRateLimitError, E.HubProtocolError):
        e = cls("m", status_code=403, retry_after=2.0)
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is cls and back.message == "m" and back.status_code == 403 and back.retry_after == 2.0


def test_exit_codes_are_distinct_and_old_ones_unchanged():
    assert (E.EXIT_DOWNLOAD_FAILED, E.EXIT_HASH_MISMATCH, E.EXIT_EXISTS, E.EXIT_STORAGE, E.EXIT_JOURNAL) == (3, 4, 5, 6, 7)
    hub = [E.EXIT_HUB_NOT_FOUND, E.EXIT_HUB_REVISION, E.EXIT_HUB_ENTRY, E.EXIT_HUB_ACCESS, E.EXIT_HUB_GONE,
           E.EXIT_HUB_RATE_LIMIT, E.EXIT_HUB_PROTOCOL]
    assert hub == list(range(8, 15))


def test_ratelimit_and_link_headers():
    assert parse_ratelimit('"api";r=0;t=55') == 55.0
    assert parse_ratelimit('"api";r=3;t=55') is None
    assert parse_ratelimit('"a";r=1;t=5, "b";r=0;t=9') == 9.0
    assert parse_ratelimit("garbage") is None and parse_ratelimit(None) is None
    assert next_link('<https://h/api?cursor=2>; rel="next"') == "https://h/api?cursor=2"
    assert next_link('<https://h/p1>; rel="prev", </p3>; rel="next"') == "/p3"
    assert next_link('<https://h/p1>; rel="prev"') is None


# ----------------------------------------------------------------- tokens


def test_hf_token_order(tmp_path):
    (tmp_path / "token").write_text("from-file\n")
    assert hf_token({"HF_TOKEN": "a", "HUGGING_FACE_HUB_TOKEN": "b", "HF_HOME": str(tmp_path)}) == "a"
    assert hf_token({"HUGGING_FACE_HUB_TOKEN": "b", "HF_HOME": str(tmp_path)}) == "b"
    assert hf_token({"HF_HOME": str(tmp_path)}) == "from-file"
    assert hf_token({"HF_HOME": str(tmp_path / "none")}) is None
    assert auth_header("hf", {"HF_TOKEN": "t"}) == "Authorization: Bearer t"
    assert auth_header("env:MY_KEY", {"MY_KEY": "k"}) == "Authorization: Bearer k"
    assert auth_header("env:MY_KEY", {}) is None
    assert auth_header("env:MY_KEY", {"MY_KEY": "a\r\nX-Evil: 1"}) is None  # no header injection


def test_hf_cache_option_takes_an_optional_folder():
    from segdl.cli.main import _hf_cache_argv

    assert _hf_cache_argv(["get", "hf://o/n", "--hf-cache"]) == ["get", "hf://o/n", "--hf-cache="]
    assert _hf_cache_argv(["get", "--hf-cache", "hf://o/n"]) == ["get", "--hf-cache=", "hf://o/n"]
    assert _hf_cache_argv(["get", "--hf-cache", "/c", "hf://o/n"]) == ["get", "--hf-cache=/c", "hf://o/n"]
    assert _hf_cache_argv(["get", "--hf-cache", "-q", "hf://o/n"]) == ["get", "--hf-cache=", "-q", "hf://o/n"]
    assert _hf_cache_argv(["get", "--", "--hf-cache"]) == ["get", "--", "--hf-cache"]
