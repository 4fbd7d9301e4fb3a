"""CivitAI references against the local hub (tests/support/hubserver.py): models,
versions, pasted page URLs, collections through the unofficial tRPC
listing, selection flags, layouts, per-file errors, signed URLs that
expire, and the token seen by the hub only."""

from __future__ import annotations

import hashlib
from pathlib import Path

import blake3
import pytest

from helpers import json_lines, run_segdl
from hubserver import HubServer

KEY = "civitai-secret-token"  # hubserver's accepted API key
MiB = 1024 * 1024


def _data(n: int, seed: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(b"civitai%d" % seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


CONTENT = {fid: _data(size, fid) for fid, size in {
    121: 300_000, 122: 120_000, 123: 50_000, 111: 70_000, 311: 10_000, 411: 10_000, 511: 10_000,
    611: 10_000, 711: 20_000, 811: 5_000, 911: 12 * MiB}.items()}


def _file(fid, name, ftype="Model", primary=False, fmt="SafeTensor", blake=True):
    data = CONTENT[fid]
    hashes = {"SHA256": hashlib.sha256(data).hexdigest().upper(), "AutoV2": "ABCDEF0123", "CRC32": "0BADF00D"}
    if blake:
        hashes["BLAKE3"] = blake3.blake3(data).hexdigest().upper()
    f = {"id": fid, "name": name, "type": ftype, "sizeKB": len(data) / 1024,
         "metadata": {"format": fmt, "size": "pruned", "fp": "fp16"}, "hashes": hashes}
    if primary:
        f["primary"] = True
    return f


def _model(mid, name, versions, **kw):
    return {"id": mid, "name": name, "type": "LORA", "modelVersions": [
        {"id": vid, "name": vname, "baseModel": "SDXL 1.0", "files": files} for vid, vname, files in versions], **kw}


@pytest.fixture
def hub():
    with HubServer() as srv:
        srv.add_model(_model(1, "Cute LoRA", [
            (12, "v2", [_file(121, "cute-v2.safetensors", primary=True), _file(122, "cute-v2.pt", fmt="PickleTensor", blake=False),
                        _file(123, "cute-vae.safetensors", "VAE")]),
            (11, "v1", [_file(111, "cute-v1.safetensors", primary=True)])]), CONTENT)
        srv.add_model(_model(2, "Archived Thing", [(21, "v1", [])], mode="Archived"), {})
        for mid, name, rule in ((3, "Login Needed", "login"), (4, "Early Bird", "early"), (5, "Gone Away", "gone"),
                                (6, "Lost File", "missing"), (7, "Busy", "limited")):
            srv.add_model(_model(mid, name, [(mid * 10 + 1, "v1", [_file(mid * 100 + 11, f"m{mid}.safetensors", primary=True)])]),
                          CONTENT)
            srv.download_rules[mid * 10 + 1] = rule
        srv.add_model(_model(8, "../../Evil/Name", [(81, "v1", [_file(811, "../../x.safetensors", primary=True)])]), CONTENT)
        srv.add_model(_model(9, "Big One", [(91, "v1", [_file(911, "big.safetensors", primary=True)])]), CONTENT)
        srv.collections[100] = ("My Set", [1, 2, 3, 4, 5, 6, 7, 8, 999])
        yield srv


def _env(hub, **extra):
    # (COLUMNS: messages are checked whole, not as rich wraps them at 80)
    return {"CIVITAI_ENDPOINT": hub.hub_url, "CIVITAI_TOKEN": KEY, "COLUMNS": "400", **extra}


def _ls(hub, tmp_path, ref, *args, env=None):
    p = run_segdl(["ls", ref, *args, "--json"], tmp_path / "j.sqlite", env=env or _env(hub))
    return p, json_lines(p)


def _no_key_anywhere(tmp_path: Path, *procs):
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert KEY.encode() not in p.read_bytes(), p
    for proc in procs:
        assert KEY not in proc.stdout and KEY not in proc.stderr


@pytest.mark.parametrize("args, paths", [
    ([], ["Cute LoRA/cute-v2.safetensors"]),
    (["--all-files"], ["Cute LoRA/cute-v2.safetensors", "Cute LoRA/cute-v2.pt", "Cute LoRA/cute-vae.safetensors"]),
    (["--all-versions"], ["Cute LoRA/v2/cute-v2.safetensors", "Cute LoRA/v1/cute-v1.safetensors"]),
    (["--type", "VAE"], ["Cute LoRA/cute-vae.safetensors"]),
    (["--format", "PickleTensor"], ["Cute LoRA/cute-v2.pt"]),
    (["--layout", "{type}/{base_model}/{model_id}-{version_id}-{file}"], ["LORA/SDXL 1.0/1-12-cute-v2.safetensors"]),
    (["--collection", "Mine"], ["Mine/Cute LoRA/cute-v2.safetensors"]),
])
def test_selection_and_layout(hub, tmp_path, args, paths):
    p, rows = _ls(hub, tmp_path, "civitai://model/1", *args)
    assert p.returncode == 0, p.stderr
    assert [r["path"] for r in rows] == paths
    assert {r["state"] for r in rows} == {"missing"}


def test_version_refs_and_pasted_page_urls_resolve_against_the_endpoint(hub, tmp_path):
    for ref in ("civitai://version/11", "civitai://model/1@11", "https://civitai.com/models/1/cute-lora?modelVersionId=11"):
        p, rows = _ls(hub, tmp_path, ref)
        assert p.returncode == 0, p.stderr
        assert [r["path"] for r in rows] == ["Cute LoRA/cute-v1.safetensors"]
        assert rows[0]["hash"] == "blake3:" + blake3.blake3(CONTENT[111]).hexdigest()
    p, rows = _ls(hub, tmp_path, "https://civitai.com/collections/100")
    assert p.returncode == 12  # model 2 is archived, 999 not found: the others list
    unavailable = {r["url"]: r["exit_code"] for r in rows if r["state"] == "unavailable"}
    assert unavailable == {"civitai://model/2": 12, "civitai://model/999": 8}
    files = [r for r in rows if r["state"] != "unavailable"]
    assert len(files) == 7 and all(r["path"].startswith("My Set/") for r in files)
    p, _ = _ls(hub, tmp_path, "civitai://model/1", "--layout", "{model}/{nope}")
    assert p.returncode == 2 and "unknown field {nope}" in p.stderr
    p, _ = _ls(hub, tmp_path, "civitai://model/1@99")
    assert p.returncode == 9 and "no version 99" in p.stdout


def test_model_files_verified_token_on_the_hub_only(hub, tmp_path):
    out = tmp_path / "out"
    p = run_segdl(["get", "civitai://model/1", "--all-files", "-d", out, "--json"], tmp_path / "j.sqlite", env=_env(hub))
    assert p.returncode == 0, p.stderr
    rows = {Path(r["path"]).name: r for r in json_lines(p)}
    assert {r["status"] for r in rows.values()} == {"done"}
    assert (out / "Cute LoRA" / "cute-v2.safetensors").read_bytes() == CONTENT[121]
    assert (out / "Cute LoRA" / "cute-v2.pt").read_bytes() == CONTENT[122]
    assert rows["cute-v2.pt"]["sha256"] == hashlib.sha256(CONTENT[122]).hexdigest()  # no BLAKE3 listed: SHA256
    assert rows["cute-v2.safetensors"]["blake3"] == blake3.blake3(CONTENT[121]).hexdigest()
    hub_reqs, cdn_reqs = hub.requests("hub"), hub.requests("cdn")
    assert hub_reqs and all(r["auth"] == f"Bearer {KEY}" for r in hub_reqs)
    assert cdn_reqs and all(r["auth"] is None for r in cdn_reqs)
    assert all("Mozilla" not in r["ua"] for r in hub_reqs)
    _no_key_anywhere(tmp_path, p)
    hub.reset_log()
    again = run_segdl(["get", "civitai://model/1", "--all-files", "-d", out, "--json"], tmp_path / "j.sqlite", env=_env(hub))
    assert again.returncode == 0 and {r["status"] for r in json_lines(again)} == {"skipped"}
    assert not hub.requests("cdn") and not hub.requests("hub", "/api/download/")


def test_signed_url_that_expires_is_resolved_again(hub, tmp_path):
    # The first URL expires while the file downloads: its third segment
    # (of 4 MiB, two at a time) asks for it seconds after it was signed.
    hub.signed_ttls = [0.3, 60.0]
    hub.cdn_rate = 2 * MiB
    out = tmp_path / "out"
    p = run_segdl(["get", "civitai://model/9", "-d", out, "-x", "2", "--json"], tmp_path / "j.sqlite", env=_env(hub))
    assert p.returncode == 0, p.stderr
    assert (out / "Big One" / "big.safetensors").read_bytes() == CONTENT[911]
    assert "expired; resolving it again" in p.stderr
    assert len(hub.requests("hub", "/api/download/models/91")) >= 2
    assert any(r["range"] and not r["range"].startswith("bytes=0-") for r in hub.requests("cdn"))
    _no_key_anywhere(tmp_path, p)


def test_collection_one_failing_model_never_stops_the_others(hub, tmp_path):
    journal, out = tmp_path / "j.sqlite", tmp_path / "out"
    # One model is here already under another path: the collection links it.
    single = run_segdl(["get", "civitai://model/1", "-d", out / "single", "-q"], journal, env=_env(hub))
    assert single.returncode == 0, single.stderr
    p0, before = _ls(hub, tmp_path, "civitai://collection/100", "-d", out / "coll")
    before = [r for r in before if r["path"]]
    assert {r["path"]: r["state"] for r in before}["My Set/Cute LoRA/cute-v2.safetensors"] == "here"
    assert {r["state"] for r in before if "Cute" not in r["path"]} == {"missing"}
    hub.reset_log()
    p = run_segdl(["get", "civitai://collection/100", "-d", out / "coll", "--json"], journal, env=_env(hub))
    assert p.returncode == 12, p.stderr  # the largest: archived (12) > access (11) > not found (8)
    lines = json_lines(p)
    by = {(Path(r["path"]).relative_to(out / "coll").as_posix() if r["path"] else r["url"]): r for r in lines}
    assert by["civitai://model/2"]["exit_code"] == 12 and "Archived" in by["civitai://model/2"]["error"]
    assert by["civitai://model/999"]["exit_code"] == 8
    assert by["My Set/Cute LoRA/cute-v2.safetensors"]["status"] == "done"
    assert by["My Set/Login Needed/m3.safetensors"]["status"] == "done"  # the key logs us in
    assert by["My Set/Busy/m7.safetensors"]["status"] == "done"  # after waiting out its 429
    early = by["My Set/Early Bird/m4.safetensors"]
    assert early["exit_code"] == 11 and "until 2026-12-24" in early["error"] and "Buzz" in early["error"]
    assert by["My Set/Gone Away/m5.safetensors"]["exit_code"] == 12
    assert by["My Set/Lost File/m6.safetensors"]["exit_code"] == 8
    evil = [k for k in by if "x.safetensors" in k]
    assert evil == ["My Set/_.._Evil_Name/x.safetensors"] and by[evil[0]]["status"] == "done"
    assert (out / "coll" / evil[0]).read_bytes() == CONTENT[811]
    # The model already here was linked, not downloaded again.
    assert "linked, not downloaded" in p.stderr
    assert not hub.requests("hub", "/api/download/models/12")
    # The tRPC listing, page by page (9 items, 2 a page), with the key.
    trpc = hub.requests("hub", "/api/trpc/model.getAll")
    assert len(trpc) == 5 and all(r["auth"] == f"Bearer {KEY}" for r in trpc)
    limited = hub.requests("hub", "/api/download/models/71")
    assert len(limited) == 2 and limited[1]["time"] - limited[0]["time"] >= 0.9  # Retry-After: 1
    assert all(r["auth"] is None for r in hub.requests("cdn"))
    _no_key_anywhere(tmp_path, p, single, p0)
    _, after = _ls(hub, tmp_path, "civitai://collection/100", "-d", out / "coll")
    states = {r["path"]: r["state"] for r in after if r["path"]}
    assert states["My Set/Busy/m7.safetensors"] == "here" and states["My Set/Early Bird/m4.safetensors"] == "missing"


def test_collection_without_a_key_and_token_env(hub, tmp_path):
    env = _env(hub, CIVITAI_TOKEN="")
    p = run_segdl(["get", "civitai://collection/100", "-d", tmp_path / "out"], tmp_path / "j.sqlite", env=env)
    assert p.returncode == 11, p.stderr
    assert "Please use the public API instead" in p.stderr and "CIVITAI_TOKEN" in p.stderr
    p = run_segdl(["get", "civitai://model/3", "-d", tmp_path / "out", "--json"], tmp_path / "j.sqlite", env=env)
    assert p.returncode == 11 and "logged in" in json_lines(p)[0]["error"]  # the hub's JSON words
    p = run_segdl(["get", "civitai://model/3", "-d", tmp_path / "out", "--token-env", "MY_KEY", "--json"],
                  tmp_path / "j.sqlite", env={**env, "MY_KEY": KEY})
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out" / "Login Needed" / "m3.safetensors").read_bytes() == CONTENT[311]
    p = run_segdl(["get", "civitai://model/3", "--token-env", "not-a-name!"], tmp_path / "j.sqlite", env=env)
    assert p.returncode == 2
