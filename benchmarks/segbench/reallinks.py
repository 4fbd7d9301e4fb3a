"""Real-link cases (issue 17): what Hugging Face, CivitAI, GitHub releases
and most mirrors look like from a client, on loopback.

* **TLS, ALPN.**  nginx with a local CA (``tests/support/tlsca.py``), either
  offering h2 and http/1.1 (``alpn="h2"``) or http/1.1 only (``"h1"``).
  The tools get the CA by their own flag (``command()`` in ``cases.py``);
  huggingface_hub by ``SSL_CERT_FILE`` (httpx2 reads it; the requests and
  curl variables are set too).
* **A cap per TCP connection, no burst, no CPU.**  ``Nginx(pace=)``: the
  listening socket carries ``SO_MAX_PACING_RATE`` and nginx inherits it
  (``NGINX="fd;"``); every accepted connection inherits the rate and the
  kernel paces it.  On h2 the cap is the connection's, shared by all its
  streams, as a window- or policer-limited link is.  (nginx's
  ``limit_rate`` is per request, i.e. per stream, and could not do this.)
* **Latency**: the echo module's ``echo_sleep`` before every response.
* **A hub**: ``tests/support/hubserver.py`` (the Hugging Face API) behind a TLS +
  h2 nginx front, whose LFS files redirect to a second host, a paced TLS
  nginx "CDN" with 20 ms before every response.  The hub publishes each
  LFS file's sha256 (``lfs.oid``, ``X-Linked-Etag``), so segdl verifies it.

Every case's servers run for all its rounds; making the CA, the data and
the servers, and stopping them, are outside every timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import blake3

from .cases import ARIA2C_SPLIT, Case, ToolSpec
from .datasets import GiB, MiB, Dataset

KiB = 1 << 10
RATE = "5m"  # per connection, unless a case says otherwise
#: A paced connection's send buffer: with the default (autotuned to MBs) a
#: response cut short is logged with megabytes "sent" that sat in the
#: buffer and never crossed the link; with this the log's bytes are what
#: left, give or take ~0.4 MB, at no cost in rate (a curl at 5 MiB/s: 5.00
#: MiB/s either way).
PACED_SNDBUF = "128k"


# --------------------------------------------------------------------------- TLS mirrors


def _rate(text: str | None) -> int | None:
    if not text:
        return None
    from segdl.engine.rules.bandwidth import parse_rate

    return parse_rate(text)


def _mib(rate: str) -> str:
    return f"{_rate(rate) / MiB:g} MiB/s"


def _ca(ctx):
    """The run's CA and server certificate (127.0.0.1 and localhost), made
    once per run (``run.py`` empties the work folder at its start)."""
    from tlsca import TestCA, make_test_ca

    d = ctx.work_root / "tls-ca"
    if not (d / "server.pem").exists():
        return make_test_ca(d)
    return TestCA(d, d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key")


@dataclass(frozen=True)
class TlsMirror:
    """nginx over TLS serving the case's dataset."""

    alpn: str = "h2"  # "h2": offers h2 and http/1.1; "h1": http/1.1 only
    pace: str | None = None  # per TCP connection, paced by the kernel
    echo_sleep_ms: int | None = None  # before every response

    def describe(self) -> str:
        parts = ["TLS, ALPN " + ("h2 + http/1.1" if self.alpn == "h2" else "http/1.1 only")]
        if self.pace:
            parts.append(f"paced {_mib(self.pace)} per TCP connection by the kernel (no burst)")
        else:
            parts.append("unthrottled")
        if self.echo_sleep_ms:
            parts.append(f"{self.echo_sleep_ms} ms before every response")
        return ", ".join(parts)

    def open(self, case: Case, ctx):
        """One TLS nginx serving the dataset; the tools get the CA by flag."""
        from servers import Nginx

        from .runner import OneServerSite

        ca = _ca(ctx)
        server = Nginx(ctx.src_root, tls=ca.server_pair, http2=self.alpn == "h2",
                       pace=_rate(self.pace), echo_sleep_ms=self.echo_sleep_ms,
                       sndbuf=PACED_SNDBUF if self.pace else None)
        return OneServerSite(server, case.dataset.url_paths(), ca.ca_cert)


# --------------------------------------------------------------------------- the hub


@dataclass(frozen=True)
class RepoFile:
    path: str  # in the repo; base names are unique (they key the content)
    size: int
    lfs: bool


_MANIFEST = ".manifest.json"


@dataclass(frozen=True)
class RepoDataset:
    """A Hugging Face style repo, generated under ``root/<name>/``
    (content: blake3 XOF keyed by the file's base name, as ``datasets``)."""

    name: str
    files: tuple[RepoFile, ...]
    size = None  # not one size for all files

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def _manifest(self, root: Path) -> dict:
        try:
            return json.loads((root / self.name / _MANIFEST).read_text())
        except (OSError, ValueError):
            return {}

    def _fresh(self, root: Path, known: dict, f: RepoFile) -> bool:
        entry = known.get(f.path)
        try:
            return bool(entry) and entry["size"] == f.size and \
                (root / self.name / f.path).stat().st_size == f.size
        except OSError:
            return False

    def digests(self, root: Path, log=print) -> dict[str, dict]:
        """Generate what is missing; ``{path: {size, blake3, sha256}}``."""
        known = self._manifest(root)
        todo = [f for f in self.files if not self._fresh(root, known, f)]
        if todo:
            log(f"  generating {len(todo)} file(s) of the hub repo in {root / self.name}")
        for f in todo:
            known[f.path] = _generate(root / self.name / f.path, self.name, f.size)
            tmp = root / self.name / (_MANIFEST + ".tmp")
            tmp.write_text(json.dumps(known, indent=0, sort_keys=True))
            os.replace(tmp, root / self.name / _MANIFEST)
        return {f.path: known[f.path] for f in self.files}

    def expected(self, root: Path, log=print) -> dict[str, tuple[int, str]]:
        return {p: (d["size"], d["blake3"]) for p, d in self.digests(root, log).items()}

    def missing(self, root: Path) -> int:
        known = self._manifest(root)
        return sum(f.size for f in self.files if not self._fresh(root, known, f))

    def warm(self, root: Path) -> float:
        """Read the LFS files (the CDN's) once; seconds taken."""
        return _read_all([root / self.name / f.path for f in self.files if f.lfs])


def _read_all(paths: list[Path]) -> float:
    """Read files once (page cache); seconds taken."""
    import time

    t0 = time.perf_counter()
    buf = bytearray(8 * MiB)
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            for _ in range(p.stat().st_size // len(buf) + 2):
                if not fh.readinto(buf):
                    break
    return time.perf_counter() - t0


def _generate(path: Path, dataset: str, size: int) -> dict:
    """Write one file; its size, blake3 and sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = blake3.blake3(f"segdl-bench/{dataset}/{path.name}".encode()).digest()
    xof, b3, sha = blake3.blake3(key=key), blake3.blake3(), hashlib.sha256()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        for offset in range(0, size, 8 * MiB):
            block = xof.digest(length=min(8 * MiB, size - offset), seek=offset)
            b3.update(block)
            sha.update(block)
            fh.write(block)
    os.replace(tmp, path)
    return {"size": size, "blake3": b3.hexdigest(), "sha256": sha.hexdigest()}


def hf_repo(big: int) -> RepoDataset:
    """Two ``big``-byte safetensors shards, 10 small LFS files (tokenizer and
    the like) and 20 small files kept in git (configs, README)."""
    files = [RepoFile(f"model-0000{i}-of-00002.safetensors", big, True) for i in (1, 2)]
    files += [RepoFile("tokenizer.json", 1800 * KiB + 311, True),
              RepoFile("spiece.model", 760 * KiB + 7, True)]
    files += [RepoFile(f"assets/embedding-{i:02d}.bin", (96 + 83 * i) * KiB + i, True) for i in range(8)]
    small = ["config.json", "generation_config.json", "tokenizer_config.json",
             "special_tokens_map.json", "added_tokens.json", "preprocessor_config.json",
             "model.safetensors.index.json", "README.md", "LICENSE"]
    files += [RepoFile(n, 300 + 1711 * i, False) for i, n in enumerate(small)]
    files += [RepoFile(f"configs/variant-{i:02d}.json", 200 + 397 * i, False) for i in range(11)]
    return RepoDataset(f"hub-repo-{big // MiB}m", tuple(files))


@dataclass(frozen=True)
class HubMirror:
    """The hub stand-in behind a TLS + h2 nginx front; LFS files redirect
    to a paced TLS + h2 nginx CDN on another host name."""

    repo: str = "org/model"
    pace: str | None = RATE  # per TCP connection to the CDN
    cdn_sleep_ms: int = 20  # before every CDN response

    def describe(self) -> str:
        return (f"hub API over TLS + h2 (nginx proxying tests/support/hubserver.py), LFS files "
                f"redirected to a CDN on another host: TLS + h2, paced {_mib(self.pace)} per TCP "
                f"connection, {self.cdn_sleep_ms} ms before every response")

    def open(self, case: Case, ctx) -> "HubSite":
        return HubSite(self, case, ctx)


class HubSite:
    """The hub (Python, behind an nginx TLS front) and its CDN (nginx)."""

    def __init__(self, mirror: HubMirror, case: Case, ctx) -> None:
        self.mirror, self.case, self.ctx = mirror, case, ctx
        ca = _ca(ctx)
        self.ca, self.ca_cert = ca, ca.ca_cert
        self.urls = [f"hf://{mirror.repo}"]
        self.servers: dict = {}
        self.hub = None
        self.commit = ""
        self.lfs_sha256: set[str] = set()
        self.git_paths: set[str] = set()
        self.front_url = ""
        self._dirs = [ctx.work_root / "hub-cdn", ctx.work_root / "hub-front"]

    def __enter__(self) -> "HubSite":
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> "HubSite":
        from hubserver import HubServer
        from servers import Nginx

        ds: RepoDataset = self.case.dataset
        root = self.ctx.src_root / ds.name
        digests = ds.digests(self.ctx.src_root, log=self.ctx.log)
        cdn_root, front_root = self._dirs
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)
        (cdn_root / "lfs").mkdir(parents=True)
        front_root.mkdir(parents=True)
        files = {}
        for f in ds.files:
            files[f.path] = ((root / f.path).read_bytes(), f.lfs)
            if f.lfs:  # the CDN serves it by its sha256, as the hub names it
                (cdn_root / "lfs" / digests[f.path]["sha256"]).symlink_to(root / f.path)
                self.lfs_sha256.add(digests[f.path]["sha256"])
            else:
                self.git_paths.add(f.path)
        self.hub = HubServer()
        self.hub.page_size = 1000
        self.commit = self.hub.add_repo(self.mirror.repo, files).branches["main"]
        del files
        cdn = Nginx(cdn_root, tls=self.ca.server_pair, http2=True, pace=_rate(self.mirror.pace),
                    echo_sleep_ms=self.mirror.cdn_sleep_ms,
                    sndbuf=PACED_SNDBUF if self.mirror.pace else None)
        front = Nginx(front_root, tls=self.ca.server_pair, http2=True, proxy=self.hub.hub_url)
        for name, srv in (("hub", front), ("cdn", cdn)):
            srv.start()
            self.servers[name] = srv  # only started ones: __exit__ stops them
        self.front_url = front.base_url
        self.hub.hub_url = front.base_url  # its Link headers name the front
        self.hub.cdn_url = f"https://localhost:{cdn.port}"  # another host, as HF's CDN
        return self

    def __exit__(self, *exc) -> None:
        for srv in self.servers.values():
            srv.stop()
        if self.hub is not None:
            self.hub.stop()
        for d in self._dirs:
            shutil.rmtree(d, ignore_errors=True)

    def env(self, spec: ToolSpec, scratch: Path) -> dict:
        ca = str(self.ca_cert)
        return {**os.environ, "HF_ENDPOINT": self.front_url, "HF_HOME": str(scratch / "hf-home"),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "SSL_CERT_FILE": ca, "REQUESTS_CA_BUNDLE": ca, "CURL_CA_BUNDLE": ca}

    def output_root(self, spec: ToolSpec, dest: Path) -> Path:
        """Both tools write the HF cache layout; files are read through the snapshot."""
        return dest / ("models--" + self.mirror.repo.replace("/", "--")) / "snapshots" / self.commit

    def placeholders(self) -> dict[str, str]:
        return {str(self.ca_cert): "$CA"}

    def run_facts(self, spec: ToolSpec, stdout: Path, scratch: Path) -> dict:
        """segdl: how many LFS files its JSON lines report verified by the
        hub's sha256, and how many git files its journal has a git blob sha1
        for (checked against the hub's ETag)."""
        if spec.tool != "segdl":
            return {}
        done = set()
        try:
            for line in stdout.read_text().splitlines():
                rec = json.loads(line) if line.startswith("{") else {}
                if rec.get("status") == "done" and rec.get("sha256"):
                    done.add(rec["sha256"])
        except (OSError, ValueError):
            pass
        git = None
        try:
            with closing(sqlite3.connect(f"file:{scratch / 'journal.sqlite'}?mode=ro", uri=True)) as db:
                git = db.execute("SELECT COUNT(*) FROM files WHERE git_sha1 IS NOT NULL").fetchone()[0]
        except sqlite3.Error:
            pass  # no journal, or another schema: reported as not verified
        return {"hub_verified": {"lfs_sha256": len(done & self.lfs_sha256), "lfs_files": len(self.lfs_sha256),
                                 "git_sha1": git, "git_files": len(self.git_paths)}}


# --------------------------------------------------------------------------- cases


def _segdl(label: str, *args: str, layout: str = "flat") -> ToolSpec:
    return ToolSpec(label, "segdl", tuple(args), layout=layout)


ARIA2C = ToolSpec("aria2c", "aria2c", ARIA2C_SPLIT)


def build_real_cases(quick: bool) -> dict[str, Case]:
    """The real-link cases, keyed by name, in the order they run."""
    big = Dataset("big-256m", 1, 256 * MiB) if quick else Dataset("big-1g", 1, GiB)
    small = Dataset("small-256k", 100 if quick else 400, 256 * KiB)
    repo = hf_repo(64 * MiB if quick else 256 * MiB)
    mb = big.size // MiB
    x16 = (_segdl("segdl -x16", "-x", "16"), ARIA2C)
    cases = []
    for alpn in ("h2", "h1"):
        offer = "h2 offered" if alpn == "h2" else "HTTP/1.1 only"
        cases.append(Case(f"tls-{alpn}-x16", f"{mb} MiB over TLS ({offer}), {_mib(RATE)} per connection, "
                          "16 connections", big, TlsMirror(alpn, pace=RATE), x16))
    for alpn in ("h2", "h1"):
        offer = "h2 offered" if alpn == "h2" else "HTTP/1.1 only"
        cases.append(Case(f"tls-{alpn}-sleep50-x16", f"{mb} MiB over TLS ({offer}), {_mib(RATE)} per "
                          "connection, 50 ms before every response, 16 connections", big,
                          TlsMirror(alpn, pace=RATE, echo_sleep_ms=50), x16))
    cases.append(Case("tls-h2-x64", f"{mb} MiB over TLS (h2 offered), 3 MiB/s per connection, segdl 64 "
                      "connections vs aria2c 16 (its maximum)", big, TlsMirror("h2", pace="3m"),
                      (_segdl("segdl -x64", "-x", "64", "--max-connections", "64"), ARIA2C)))
    cases.append(Case("tls-h2-small400", f"{small.count} files x 256 KiB over TLS (h2 offered), "
                      f"{_mib(RATE)} per connection, 50 ms before every response", small,
                      TlsMirror("h2", pace=RATE, echo_sleep_ms=50),
                      (_segdl("segdl -j16", "-j", "16"),
                       ToolSpec("aria2c -j16 -i", "aria2c", ("-j", "16")),
                       ToolSpec("curl -Z", "curl-many", ("--parallel-max", "16"))),
                      ("curl -Z multiplexes its transfers over one h2 connection where it can "
                       "(its default); aria2c speaks HTTP/1.1 only.",)))
    cases.append(Case("tls-hub", f"HF-style repo: 2 x {repo.files[0].size // MiB} MiB safetensors + 30 small "
                      "files (10 LFS), hub over TLS + h2, LFS redirected to a CDN host paced "
                      f"{_mib(RATE)} per connection with 20 ms per response", repo, HubMirror(),
                      (_segdl("segdl get hf://", layout="hf-cache"),
                       ToolSpec("snapshot_download", "hf-snapshot", layout="hf-cache")),
                      ("Both write the Hugging Face cache layout (segdl --hf-cache=DIR, "
                       "snapshot_download(cache_dir=DIR) with its default max_workers); "
                       "environment: HF_ENDPOINT=the hub's TLS front, HF_HOME in the run's "
                       "scratch folder, SSL_CERT_FILE / REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE = the "
                       "local CA, progress bars and telemetry off.",)))
    cases.append(Case("tls-1g", f"{mb} MiB over TLS (h2 offered), unthrottled", big, TlsMirror("h2"),
                      (_segdl("segdl"), ToolSpec("curl", "curl"), ARIA2C)))
    return {c.name: c for c in cases}


REAL_CASE_NAMES = ("tls-h2-x16", "tls-h1-x16", "tls-h2-sleep50-x16", "tls-h1-sleep50-x16", "tls-h2-x64",
                   "tls-h2-small400", "tls-hub", "tls-1g")
