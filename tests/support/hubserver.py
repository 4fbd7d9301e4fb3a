"""A local model hub for the tests: one server that plays Hugging Face and
CivitAI (their API, resolve and download endpoints), and a second server,
the "CDN", on another port and host name (``localhost`` against
``127.0.0.1``) that the hub redirects file downloads to.

Stdlib only; both bind 127.0.0.1 and nothing else is ever contacted.
Every request is logged (server, method, path, query, Authorization,
Range, User-Agent) so tests count what each host saw.  HEAD answers as GET
without the body.

Hugging Face (what huggingface_hub reads):

* ``GET /api/{models|datasets|spaces}/{repo}/revision/{rev}``: repo info
  (``id``, ``sha``, ``siblings[]`` with ``lfs.sha256``).
* ``GET /api/{kind}/{repo}/tree/{sha}[/{path}]?recursive=true``: entries
  (``type``, ``path``, ``size``, ``oid``, ``lfs{oid,size}``), ``page_size``
  a page, ``Link: <...>; rel="next"``.
* ``GET /[datasets/|spaces/]{repo}/resolve/{rev}/{path}``: LFS files 302 to
  the CDN with ``X-Linked-Etag``, ``X-Linked-Size``, ``X-Repo-Commit``; the
  others are served with their git blob sha1 as ETag.
* A renamed repo answers every old-name path with a relative 307.
* ``X-Error-Code`` RepoNotFound (401), RevisionNotFound (404),
  EntryNotFound (404), GatedRepo (403 without the accepted token).
* ``rate_limit_once``: paths answered once with 429 and
  ``RateLimit: "api";r=0;t=1``; ``rate_limit_always``: every time (t=0).

CivitAI:

* ``/api/v1/models/{id}``, ``/api/v1/model-versions/{id}``,
  ``/api/v1/collections/{id}``; JSON 404 for unknown ids.
* ``/api/trpc/model.getAll?input={"json":{"collectionId":N,"cursor":C}}``:
  ``result.data.json.{items,nextCursor}``, ``trpc_page`` items a page;
  401 "Please use the public API instead" without a valid Bearer key.
* ``/api/download/models/{version}?type=&format=&fileId=``: 307 to a
  signed CDN URL that answers 403 after its TTL (``signed_ttls``: the TTL
  of the first, second, ... URL issued for a file, the last one repeating);
  or, by ``download_rules[version]``: "login" (401 unless the Bearer key),
  "early" (403 with a deadline), "missing" (404), "gone" (410),
  "limited" (429 with Retry-After: 1, once).  Error bodies are JSON only
  for a User-Agent without "Mozilla" (a browser gets HTML), as CivitAI.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

HOST = "127.0.0.1"


@functools.lru_cache(maxsize=256)
def sha256_hex(data: bytes) -> str:
    """A blob's sha256, computed once: every listing and resolve names the
    sha256 of each LFS file, and a benchmark's are hundreds of MiB."""
    return hashlib.sha256(data).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _flip(data: bytes) -> bytes:
    """The same bytes but the last one, which is flipped."""
    return data[:-1] + bytes([data[-1] ^ 0xFF]) if data else data


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256_hex(data)}\n"
            f"size {len(data)}\n").encode()


@dataclass
class HfRepo:
    kind: str  # models | datasets | spaces
    branches: dict[str, str] = field(default_factory=dict)  # revision -> commit
    commits: dict[str, dict[str, tuple[bytes, bool]]] = field(default_factory=dict)  # commit -> path -> (data, lfs)
    gated_token: str | None = None  # resolve needs "Bearer <this>"

    def commit(self, files: dict[str, tuple[bytes, bool]], branch: str = "main") -> str:
        sha = hashlib.sha1(repr(sorted((p, sha256_hex(d), lfs)
                                       for p, (d, lfs) in files.items())).encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            return  # a client closing its connection is business as usual
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "segdl-hubserver"
    sys_version = ""
    timeout = 30

    def log_message(self, *a):
        pass

    def do_HEAD(self):
        """As GET without the body (huggingface_hub asks for a file's
        metadata this way before it downloads)."""
        self.do_GET()

    def do_GET(self):
        owner: HubServer = self.server.owner  # type: ignore[attr-defined]
        split = urllib.parse.urlsplit(self.path)
        rec = {"server": self.server.role, "method": self.command,  # type: ignore[attr-defined]
               "path": urllib.parse.unquote(split.path), "query": split.query,
               "auth": self.headers.get("Authorization"), "range": self.headers.get("Range"),
               "ua": self.headers.get("User-Agent") or "", "time": time.monotonic()}
        with owner.lock:
            owner.log.append(rec)
        try:
            if self.server.role == "cdn":  # type: ignore[attr-defined]
                owner.cdn(self, rec)
            else:
                owner.hub(self, rec)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ---------------------------------------------------------- answers

    def send(self, status: int, body: bytes = b"", headers=(), ctype: str = "application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, str(v))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, doc, headers=()):
        self.send(status, json.dumps(doc).encode(), headers)

    def serve_bytes(self, data: bytes, etag: str, headers=(), ignore_range: bool = False, rate: int = 0):
        rng = self.headers.get("Range")
        start, end = 0, len(data)
        status = 200
        if rng and not ignore_range and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a)
            end = min(len(data), int(b) + 1) if b else len(data)
            if start >= len(data):
                self.send(416, b"", [("Content-Range", f"bytes */{len(data)}")])
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        for k, v in headers:
            self.send_header(k, str(v))
        self.end_headers()
        if self.command == "HEAD":
            return
        step = 64 * 1024
        began = time.monotonic()
        for pos in range(start, end, step):
            self.wfile.write(data[pos:min(end, pos + step)])
            if rate:  # paced: bytes sent so far at ``rate`` bytes/s
                ahead = (pos + step - start) / rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(min(ahead, 1.0))


class HubServer:
    """Both hubs on :attr:`hub_url`, their CDN on :attr:`cdn_url`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[dict] = []
        # Hugging Face
        self.repos: dict[str, HfRepo] = {}
        self.renamed: dict[str, str] = {}  # old repo id -> new
        self.page_size = 2
        self.rate_limit_once: set[str] = set()
        self.rate_limit_always: set[str] = set()
        self.range200_once: set[str] = set()  # sha256 of LFS blobs: one ranged request (start > 0) gets 200
        self.vanished: set[str] = set()  # repo paths listed in the tree whose resolve says EntryNotFound
        self.corrupt: set[str] = set()  # repo paths (git) and sha256s (LFS) served with one byte flipped
        # CivitAI
        self.models: dict[int, dict] = {}
        self.collections: dict[int, tuple[str, list[int]]] = {}
        self.files: dict[int, bytes] = {}  # file id -> content
        self.download_rules: dict[int, str] = {}
        self.civitai_token = "civitai-secret-token"
        self.trpc_page = 2
        self.signed_ttls = [3600.0]
        self.cdn_rate = 0  # bytes/s per response on the CDN (0: unpaced)
        self._issued: dict[int, int] = {}
        self._limited: set[int] = set()
        self.hub_srv = self._start("hub")
        self.cdn_srv = self._start("cdn")
        self.hub_url = f"http://{HOST}:{self.hub_srv.server_address[1]}"
        self.cdn_url = f"http://localhost:{self.cdn_srv.server_address[1]}"

    def _start(self, role: str) -> _Server:
        srv = _Server((HOST, 0), _Handler)
        srv.role = role  # type: ignore[attr-defined]
        srv.owner = self  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return srv

    def stop(self) -> None:
        for srv in (self.hub_srv, self.cdn_srv):
            srv.shutdown()
            srv.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def requests(self, server: str | None = None, path_part: str = "") -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.log if (server is None or r["server"] == server) and path_part in r["path"]]

    def reset_log(self) -> None:
        with self.lock:
            self.log.clear()

    # ------------------------------------------------------ Hugging Face

    def add_repo(self, repo_id: str, files: dict[str, tuple[bytes, bool]], kind: str = "models") -> HfRepo:
        r = self.repos.setdefault(repo_id, HfRepo(kind))
        r.commit(files)
        return r

    def hub(self, h: _Handler, rec: dict) -> None:
        path = rec["path"]
        if path.startswith("/api/v1/") or path.startswith("/api/trpc/") or path.startswith("/api/download/"):
            return self.civitai(h, rec)
        if path in self.rate_limit_always or path in self.rate_limit_once:
            t = 0 if path in self.rate_limit_always else 1
            self.rate_limit_once.discard(path)
            return h.send_json(429, {"error": "rate limited"}, [
                ("RateLimit", f'"api";r=0;t={t}'), ("RateLimit-Policy", '"fixed window";"api";q=500;w=300'),
                ("X-Error-Message", "You have exceeded the rate limit")])
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 5 and parts[1] in ("models", "datasets", "spaces"):
            return self._hf_api(h, rec, parts[1], f"{parts[2]}/{parts[3]}", parts[4:])
        prefix = parts[0] if parts[0] in ("datasets", "spaces") else ""
        rest = parts[1:] if prefix else parts
        if len(rest) >= 5 and rest[2] == "resolve":
            return self._hf_resolve(h, rec, prefix, f"{rest[0]}/{rest[1]}", rest[3], "/".join(rest[4:]))
        h.send_json(404, {"error": "no such endpoint"})

    def _moved(self, h: _Handler, repo: str, old_path: str) -> bool:
        new = self.renamed.get(repo)
        if new is None:
            return False
        loc = urllib.parse.quote(old_path.replace(repo, new, 1))
        q = urllib.parse.urlsplit(h.path).query
        h.send(307, b"", [("Location", loc + (f"?{q}" if q else ""))])  # relative, as the Hub does
        return True

    def _repo_or_error(self, h: _Handler, kind: str, repo: str) -> HfRepo | None:
        r = self.repos.get(repo)
        if r is None or r.kind != kind:
            h.send_json(401, {"error": "Repository Not Found"}, [
                ("X-Error-Code", "RepoNotFound"), ("X-Error-Message", "Repository not found")])
            return None
        return r

    def _hf_api(self, h, rec, kind, repo, rest) -> None:
        if self._moved(h, repo, rec["path"]):
            return
        r = self._repo_or_error(h, kind, repo)
        if r is None:
            return
        if rest[0] == "revision" and len(rest) >= 2:
            rev = urllib.parse.unquote("/".join(rest[1:]))
            sha = r.branches.get(rev, rev if rev in r.commits else None)
            if sha is None:
                return h.send_json(404, {"error": "Invalid rev id"}, [
                    ("X-Error-Code", "RevisionNotFound"), ("X-Error-Message", f"Invalid rev id: {rev}")])
            siblings = [{"rfilename": p, "size": len(d),
                         **({"lfs": {"sha256": sha256_hex(d), "size": len(d),
                                     "pointerSize": len(lfs_pointer(d))}} if lfs else {})}
                        for p, (d, lfs) in sorted(r.commits[sha].items())]
            return h.send_json(200, {"id": repo, "sha": sha, "siblings": siblings, "private": False})
        if rest[0] == "tree" and len(rest) >= 2:
            sha, sub = rest[1], "/".join(rest[2:])
            if sha not in r.commits:
                return h.send_json(404, {"error": "Invalid rev id"}, [
                    ("X-Error-Code", "RevisionNotFound"), ("X-Error-Message", f"Invalid rev id: {sha}")])
            entries = self._tree(r.commits[sha], sub)
            if entries is None:
                return h.send_json(404, {"error": "not found"}, [
                    ("X-Error-Code", "EntryNotFound"), ("X-Error-Message", f"{sub} does not exist on \"{sha}\"")])
            q = urllib.parse.parse_qs(rec["query"])
            start = int(q.get("cursor", ["0"])[0])
            page = entries[start:start + self.page_size]
            headers = []
            if start + self.page_size < len(entries):
                nq = dict((k, v[-1]) for k, v in q.items())
                nq["cursor"] = str(start + self.page_size)
                headers.append(("Link", f'<{self.hub_url}{urllib.parse.quote(rec["path"])}?'
                                        f'{urllib.parse.urlencode(nq)}>; rel="next"'))
            return h.send_json(200, page, headers)
        h.send_json(404, {"error": "no such endpoint"})

    @staticmethod
    def _tree(files: dict[str, tuple[bytes, bool]], sub: str) -> list[dict] | None:
        out, dirs = [], set()
        for p, (d, lfs) in sorted(files.items()):
            if sub and not p.startswith(sub.rstrip("/") + "/"):
                continue
            parts = p.split("/")
            for i in range(1, len(parts)):
                dirs.add("/".join(parts[:i]))
            e = {"type": "file", "oid": git_blob_sha1(lfs_pointer(d) if lfs else d), "size": len(d), "path": p}
            if lfs:
                e["lfs"] = {"oid": sha256_hex(d), "size": len(d), "pointerSize": len(lfs_pointer(d))}
            out.append(e)
        if sub and not out:
            return None
        out += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": x} for x in sorted(dirs)
                if not sub or x.startswith(sub)]
        return sorted(out, key=lambda e: e["path"])

    def _hf_resolve(self, h, rec, prefix, repo, rev, fpath) -> None:
        if self._moved(h, repo, rec["path"]):
            return
        kind = prefix or "models"
        r = self._repo_or_error(h, kind, repo)
        if r is None:
            return
        sha = r.branches.get(rev, rev if rev in r.commits else None)
        if sha is None:
            return h.send_json(404, {"error": "Invalid rev id"}, [
                ("X-Error-Code", "RevisionNotFound"), ("X-Error-Message", f"Invalid rev id: {rev}")])
        if r.gated_token and rec["auth"] != f"Bearer {r.gated_token}":
            return h.send_json(403 if rec["auth"] else 401, {"error": "gated"}, [
                ("X-Error-Code", "GatedRepo"),
                ("X-Error-Message", f"Access to model {repo} is restricted. You must have access to it.")])
        if fpath not in r.commits[sha] or fpath in self.vanished:
            return h.send_json(404, {"error": "Entry not found"}, [
                ("X-Error-Code", "EntryNotFound"), ("X-Error-Message", "Entry not found")])
        data, lfs = r.commits[sha][fpath]
        common = [("X-Repo-Commit", sha)]
        if lfs:
            digest = sha256_hex(data)
            with self.lock:
                self._blobs_by_sha = getattr(self, "_blobs_by_sha", {})
                self._blobs_by_sha[digest] = data
            h.send(302, b"", [("Location", f"{self.cdn_url}/lfs/{digest}?X-Amz-Signature=abc&X-Amz-Expires=3600"),
                              ("X-Linked-Etag", f'"{digest}"'), ("X-Linked-Size", len(data)),
                              ("ETag", f'"{git_blob_sha1(lfs_pointer(data))}"'), *common])
            return
        h.serve_bytes(_flip(data) if fpath in self.corrupt else data, f'"{git_blob_sha1(data)}"', common)

    # ----------------------------------------------------------- CivitAI

    def add_model(self, model: dict, contents: dict[int, bytes]) -> None:
        """``model`` as /api/v1/models answers it (downloadUrl filled in
        here); ``contents``: file id -> bytes."""
        self.files.update(contents)
        for v in model.get("modelVersions", []):
            for f in v.get("files", []):
                f.setdefault("downloadUrl", f"{self.hub_url}/api/download/models/{v['id']}"
                                            f"?type={urllib.parse.quote(f.get('type', 'Model'))}&fileId={f['id']}")
        self.models[model["id"]] = model

    def _error(self, h: _Handler, rec: dict, status: int, doc: dict, headers=()) -> None:
        if "Mozilla" in rec["ua"]:  # a browser gets the site's page, not JSON
            return h.send(status, b"<html><body>Error</body></html>", headers, "text/html")
        h.send_json(status, doc, headers)

    def _authed(self, rec: dict) -> bool:
        return rec["auth"] == f"Bearer {self.civitai_token}"

    def civitai(self, h: _Handler, rec: dict) -> None:
        parts = rec["path"].strip("/").split("/")
        if parts[:3] == ["api", "v1", "models"] and len(parts) == 4:
            m = self.models.get(int(parts[3]))
            return h.send_json(200, m) if m else self._error(h, rec, 404, {"error": f"No model with id {parts[3]}"})
        if parts[:3] == ["api", "v1", "model-versions"] and len(parts) == 4:
            vid = int(parts[3])
            for m in self.models.values():
                for v in m.get("modelVersions", []):
                    if v["id"] == vid:
                        return h.send_json(200, {**v, "modelId": m["id"], "model": {
                            "name": m["name"], "type": m.get("type"), "mode": m.get("mode")}})
            return self._error(h, rec, 404, {"error": f"No version with id {vid}"})
        if parts[:3] == ["api", "v1", "collections"] and len(parts) == 4:
            c = self.collections.get(int(parts[3]))
            return h.send_json(200, {"id": int(parts[3]), "name": c[0], "type": "Model"}) if c else \
                self._error(h, rec, 404, {"error": "Collection not found"})
        if parts[:3] == ["api", "trpc", "model.getAll"]:
            if not self._authed(rec):
                return h.send_json(401, {"error": {"json": {
                    "message": "Please use the public API instead: https://github.com/civitai/civitai/wiki/REST-API-Reference",
                    "code": -32001, "data": {"code": "UNAUTHORIZED", "httpStatus": 401, "path": "model.getAll"}}}})
            args = json.loads(urllib.parse.parse_qs(rec["query"])["input"][0])["json"]
            name, ids = self.collections.get(args["collectionId"], ("", []))
            start = int(args.get("cursor") or 0)
            page = ids[start:start + self.trpc_page]
            nxt = start + self.trpc_page if start + self.trpc_page < len(ids) else None
            items = [{"id": i, "name": self.models[i]["name"] if i in self.models else f"gone {i}", "type": "LORA"}
                     for i in page]
            return h.send_json(200, {"result": {"data": {"json": {"items": items, "nextCursor": nxt},
                                                         "meta": {"values": {}}}}})
        if parts[:3] == ["api", "download", "models"] and len(parts) == 4:
            return self._download(h, rec, int(parts[3]))
        self._error(h, rec, 404, {"error": "no such endpoint"})

    def _download(self, h: _Handler, rec: dict, vid: int) -> None:
        rule = self.download_rules.get(vid)
        if rule == "login" and not self._authed(rec):
            return self._error(h, rec, 401, {"error": "Unauthorized",
                                             "message": "The creator of this asset requires you to be logged in to download it"})
        if rule == "early":
            return self._error(h, rec, 403, {"error": "Early Access", "deadline": "2026-12-24T00:00:00.000Z",
                                             "message": "This asset is in Early Access. You can use Buzz access it now!"})
        if rule == "missing":
            return self._error(h, rec, 404, {"error": "Model file not found"})
        if rule == "gone":
            return self._error(h, rec, 410, {"error": "Model archived", "message": "This model has been archived"})
        if rule == "limited" and vid not in self._limited:
            self._limited.add(vid)
            return self._error(h, rec, 429, {"error": "Too many requests"}, [("Retry-After", "1")])
        fid = int(urllib.parse.parse_qs(rec["query"]).get("fileId", ["0"])[0])
        if fid not in self.files:
            return self._error(h, rec, 404, {"error": "Model file not found"})
        with self.lock:
            n = self._issued.get(fid, 0)
            self._issued[fid] = n + 1
        ttl = self.signed_ttls[min(n, len(self.signed_ttls) - 1)]
        exp = time.time() + ttl
        sig = hashlib.sha256(f"{fid}:{exp}".encode()).hexdigest()[:16]
        h.send(307, b"", [("Location", f"{self.cdn_url}/signed/{fid}?exp={exp:.3f}&sig={sig}")])

    # --------------------------------------------------------------- CDN

    def cdn(self, h: _Handler, rec: dict) -> None:
        parts = rec["path"].strip("/").split("/")
        if parts[0] == "lfs" and len(parts) == 2:
            data = getattr(self, "_blobs_by_sha", {}).get(parts[1])
            if data is None:
                return h.send(404, b"NoSuchKey", ctype="text/plain")
            rng = rec["range"] or ""
            ignore = False
            if parts[1] in self.range200_once and rng.startswith("bytes=") and not rng.startswith("bytes=0-"):
                self.range200_once.discard(parts[1])
                ignore = True
            if parts[1] in self.corrupt:
                data = _flip(data)
            return h.serve_bytes(data, f'"cdn-{parts[1][:16]}"', ignore_range=ignore, rate=self.cdn_rate)
        if parts[0] == "signed" and len(parts) == 2:
            q = urllib.parse.parse_qs(rec["query"])
            if time.time() > float(q.get("exp", ["0"])[0]):
                return h.send(403, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
                              ctype="application/xml")
            data = self.files.get(int(parts[1]))
            if data is None:
                return h.send(404, b"NoSuchKey", ctype="text/plain")
            return h.serve_bytes(data, f'"f{parts[1]}-{len(data)}"', rate=self.cdn_rate)
        h.send(404, b"not found", ctype="text/plain")
