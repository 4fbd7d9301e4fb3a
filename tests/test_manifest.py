"""Input files for ``segdl get -i``: JSON manifests and aria2 input files.
Pure, no server."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from segdl.engine.values.errors import EXIT_USAGE, UsageError
from segdl.engine.inputs.checks import Problem, _check_relative, check_relative, check_url
from segdl.engine.inputs.manifest import Manifest, load_input, parse_aria2_input, parse_input, parse_json_manifest
from segdl.engine.inputs.naming import inside
from segdl.engine.values.request import Request

H1 = "0123456789abcdef" * 4
H2 = "fedcba9876543210" * 4


def usage(text: str, *, source: str = "m", match: str | None = None) -> str:
    with pytest.raises(UsageError) as info:
        parse_input(text, source=source)
    assert info.value.exit_code == EXIT_USAGE
    msg = info.value.message
    assert msg.startswith(source), msg
    if match is not None:
        assert re.search(match, msg), msg
    return msg


def js(doc) -> str:
    return json.dumps(doc)


# ---------------------------------------------------------------------------
# JSON manifests


def test_json_full_example():
    m = parse_input(js({
        "collection": "llama-3-8b",
        "x-generator": {"anything": [1, 2]},
        "files": [
            {
                "url": "https://hf.co/a/model.safetensors",
                "mirrors": ["https://mirror/a/model.safetensors", "https://hf.co/a/model.safetensors"],
                "path": "sub//./dir/model.safetensors",
                "size": 123,
                "blake3": H1.upper(),
                "sha256": H2,
                "headers": {"Authorization": "Bearer xyz", "X-Trace": " 1 "},
                "x-note": "ignored",
            },
            {"url": "http://example.org/b.bin"},
            {"url": "http://example.org/c.bin", "path": None, "size": None, "mirrors": None},
        ],
    }), source="manifest.json")
    assert m == Manifest("llama-3-8b", (
        Request(
            url="https://hf.co/a/model.safetensors",
            path="sub/dir/model.safetensors",
            blake3=H1, sha256=H2, size=123,
            mirrors=("https://mirror/a/model.safetensors",),  # the copy of the primary is dropped
            headers=("Authorization: Bearer xyz", "X-Trace: 1"),
        ),
        Request("http://example.org/b.bin"),
        Request("http://example.org/c.bin"),
    ))


def test_json_minimal_bom_and_whitespace():
    m = parse_input("\ufeff \r\n {\"files\": []}\r\n")
    assert m == Manifest(None, ())
    assert parse_json_manifest('{"files": [{"url": "https://h/x"}]}', "m").requests == (Request("https://h/x"),)


def test_json_non_ascii_url_is_encoded():
    [r] = parse_input(js({"files": [{"url": "https://bücher.example/ä b?q=é".replace(" ", "%20")}]})).requests
    assert r.url == "https://xn--bcher-kva.example/%C3%A4%20b?q=%C3%A9"
    assert r.url.isascii()


@pytest.mark.parametrize("entry, match", [
    ({"url": "h", "size": -1}, r"files\[1\]\.size: must be a non-negative integer"),
    ({"url": "h", "size": 1.0}, r"files\[1\]\.size: must be a non-negative integer"),
    ({"url": "h", "size": True}, r"files\[1\]\.size: must be a non-negative integer"),
    ({"url": "h", "size": "12"}, r"files\[1\]\.size: must be a non-negative integer"),
    ({"url": "h", "size": 2**63}, r"files\[1\]\.size"),
    ({"url": "h", "blake3": "abc"}, r"files\[1\]\.blake3: must be a blake3 digest"),
    ({"url": "h", "blake3": H1 + "0"}, r"files\[1\]\.blake3"),
    ({"url": "h", "sha256": "g" * 64}, r"files\[1\]\.sha256: must be a sha256 digest"),
    ({"url": "h", "sha256": 5}, r"files\[1\]\.sha256"),
    ({"url": "h", "sizee": 5}, r"files\[1\]: unknown key 'sizee'"),
    ({"url": "h", "mirrors": "https://m/x"}, r"files\[1\]\.mirrors: must be a list"),
    ({"url": "h", "mirrors": ["ftp://m/x"]}, r"files\[1\]\.mirrors\[0\]: .*only http"),
    ({"url": "h", "headers": ["A: b"]}, r"files\[1\]\.headers: must be an object"),
    ({"url": "h", "headers": {"A": "b\r\nEvil: 1"}}, r"files\[1\]\.headers: header A: .*CR or LF"),
    ({"url": "h", "headers": {"A": "x\ny"}}, r"CR or LF"),
    ({"url": "h", "headers": {"Bad Name": "v"}}, r"not a valid HTTP header name"),
    ({"url": "h", "headers": {"A": 1}}, r"must be a string"),
    ({"url": "h", "headers": {"Range": "bytes=0-"}}, r"segdl sets this header itself"),
    ({"url": "h", "headers": {"A": ""}}, r"must not be empty"),
    ({"url": "h", "headers": {"A": "é"}}, r"must be ASCII"),
    ({"url": "h", "path": 3}, r"files\[1\]\.path: must be a string"),
    ({"url": "h", "path": ""}, r"files\[1\]\.path: must not be empty"),
    ({"url": "ftp://h/x"}, r"files\[1\]\.url: .*only http:// and https://"),
    ({"url": "https:///x"}, r"files\[1\]\.url: .*has no host"),
    ({"url": "http://h:99999/x"}, r"files\[1\]\.url: .*not valid"),
    ({"url": "http://h/a b"}, r"files\[1\]\.url: .*whitespace"),
    ({"url": "x"}, r"files\[1\]\.url"),
    ({"url": 7}, r"files\[1\]\.url: must be a string"),
    ({"path": "a"}, r"files\[1\]: missing \"url\""),
])
def test_json_entry_refusals(entry, match):
    if entry.get("url") == "h":
        entry = {**entry, "url": "https://h/x"}
    msg = usage(js({"files": [{"url": "https://h/ok"}, entry]}), source="manifest.json", match=match)
    assert msg.startswith("manifest.json: files[1]")


def test_json_size_error_names_index_and_field():
    files = [{"url": f"https://h/{i}"} for i in range(3)] + [{"url": "https://h/3", "size": -5}]
    assert usage(js({"files": files}), source="manifest.json") == \
        "manifest.json: files[3].size: must be a non-negative integer"


def test_json_header_errors_do_not_echo_the_value():
    msg = usage(js({"files": [{"url": "https://h/x", "headers": {"Authorization": "Bearer s3cret\r\n"}}]}))
    assert "s3cret" not in msg


@pytest.mark.parametrize("doc, match", [
    ({"files": [], "colection": "x"}, r"^m: unknown key 'colection'"),
    ({"collection": "x"}, r'^m: missing "files"'),
    ({"files": {}}, r"^m: files: must be a list"),
    ({"files": ["https://h/x"]}, r"^m: files\[0\]: must be an object"),
    ({"files": [], "collection": 3}, r"^m: collection: must be a string"),
    ({"files": [], "collection": " "}, r"^m: collection: must not be empty"),
    ({"files": [], "collection": "a\x1bb"}, r"^m: collection: .*control"),
])
def test_json_document_refusals(doc, match):
    usage(js(doc), match=match)


@pytest.mark.parametrize("text, match", [
    ('{"files": [', r"^m:1:12: invalid JSON: Expecting value"),
    ('{"files": []}\n}', r"^m:2:1: invalid JSON: Extra data"),
    ('{"files": [], "files": []}', r"^m: invalid JSON: duplicate key 'files'"),
    ('{"files": [{"url": "https://h/x", "size": NaN}]}', r"^m: invalid JSON: NaN is not a JSON number"),
    ('{"files": [{"url": "https://h/x", "size": 1e999}]}', r"files\[0\]\.size: must be a non-negative integer"),
    ('{"files": [{"url": "https://h/x", "size": ' + "9" * 5000 + "}]}", r"^m: invalid JSON"),
    ('{"files": ' + "[" * 100_000 + "]" * 100_000 + "}", r"^m: "),
    ('[{"url": "https://h/x"}]', r"must be an object"),
])
def test_json_syntax_errors(text, match):
    usage(text, match=match)


# ---------------------------------------------------------------------------
# aria2 input files

ARIA2 = (
    "\ufeff# models for tonight\r\n"
    "https://a.example/m.bin\thttps://b.example/m.bin\t\thttps://a.example/m.bin\r\n"
    "  dir=sub\r\n"
    "\tout=model.bin\r\n"
    "  checksum=SHA-256=" + H1.upper() + "\r\n"
    "  blake3=" + H2 + "\r\n"
    "  header=Authorization: Bearer tok\r\n"
    "  header=X-A:b\r\n"
    "  split=16\r\n"
    "  max-connection-per-server=8\r\n"
    "  index-out=1=foo\r\n"
    "  # an indented comment\r\n"
    "\r\n"
    "# a comment between downloads\r\n"
    "http://c.example/plain.bin\r\n"
    "   \t \r\n"
    "http://c.example/other.bin\n"
    "  out = spaced name.bin \n"
    "  checksum=sha256=" + H2 + "\n"
)


def test_aria2_full_example():
    m = parse_input(ARIA2, source="list.txt")
    assert m == Manifest(None, (
        Request(
            url="https://a.example/m.bin",
            path="sub/model.bin",
            sha256=H1,
            blake3=H2,
            mirrors=("https://b.example/m.bin",),
            headers=("Authorization: Bearer tok", "X-A: b"),
        ),
        Request("http://c.example/plain.bin"),
        Request("http://c.example/other.bin", path="spaced name.bin", sha256=H2),
    ))
    assert parse_aria2_input(ARIA2, "list.txt") == m


def test_aria2_empty_and_comment_only():
    assert parse_input("") == Manifest(None, ())
    assert parse_input("# nothing\n\n   \n") == Manifest(None, ())


@pytest.mark.parametrize("text, match", [
    ("  out=x\nhttp://h/x\n", r"^m:1: option line before any URI line"),
    ("# c\n\n\tsplit=2\n", r"^m:3: option line before any URI line"),
    ("http://h/x\n  out\n", r"^m:2: malformed option line 'out'; expected key=value"),
    ("http://h/x\n  =x\n", r"^m:2: malformed option line"),
    ("http://h/x\n  ot=x\n", r"^m:2: unknown option 'ot'"),
    ("http://h/x\n  --out=x\n", r"^m:2: unknown option '--out' \(write option names without the leading --\)"),
    ("http://h/x\n  checksum=md5=" + "0" * 32 + "\n", r"^m:2: checksum: checksum type 'md5' is not supported"),
    ("http://h/x\n  checksum=sha-1=" + "0" * 40 + "\n", r"^m:2: checksum: checksum type 'sha-1' is not supported"),
    ("http://h/x\n  checksum=sha-512=" + "0" * 128 + "\n", r"not supported"),
    ("http://h/x\n  checksum=crc=1\n", r"^m:2: checksum: unknown checksum type 'crc'"),
    ("http://h/x\n  checksum=" + H1 + "\n", r"^m:2: checksum: expected checksum=sha-256=HEX"),
    ("http://h/x\n  checksum=sha-256=abc\n", r"^m:2: checksum: must be a sha-256 digest"),
    ("http://h/x\n  blake3=xyz\n", r"^m:2: blake3: must be a blake3 digest"),
    ("http://h/x\n  header=NoColon\n", r"^m:2: header: expected header=Name: value"),
    ("http://h/x\n  header=A: b\rc\n", r"^m:2: header: header A: .*CR or LF"),
    ("http://h/x\n  out=a\n  out=b\n", r"^m:3: out= is given twice for this download \(first on line 2\)"),
    ("http://h/x\n  dir=d\n", r"^m:2: dir= without out= is not supported"),
    ("http://h/x\n  dir=\n  out=x\n", r"^m:2: dir: must not be empty"),
    ("http://h/x\n  out=\n", r"^m:2: out: must not be empty"),
    ("ftp://h/x\n", r"^m:1: .*only http:// and https://"),
    ("magnet:?xt=urn:btih:abc\n", r"^m:1: .*only http"),
    ("http://h/x http://m/x\n", r"^m:1: .*whitespace .*separate mirror URLs with a TAB"),
    ("http://h/x\thttps://\n", r"^m:1: .*has no host"),
    ("http://h/\x00x\n", r"^m:1: .*control character"),
    ("http://h/x\rhttp://m/x\n", r"^m:1: .*control character"),
])
def test_aria2_refusals(text, match):
    usage(text, match=match)


def test_aria2_unknown_option_vs_tolerated():
    tolerated = "".join(f"  {k}={v}\n" for k, v in [
        ("split", "16"), ("max-connection-per-server", "16"), ("min-split-size", "1M"),
        ("continue", "true"), ("allow-overwrite", "true"), ("user-agent", "x"), ("referer", "*"),
        ("gid", "2089b05ecca3d829"), ("select-file", "1-3"), ("http-user", "u"), ("http-passwd", "p"),
    ])
    [r] = parse_input("http://h/x\n" + tolerated).requests
    assert r == Request("http://h/x")


# ---------------------------------------------------------------------------
# path safety (both formats)

UNSAFE_PATHS = [
    ("../x", r"'\.\.' part"),
    ("a/../../b", r"'\.\.' part"),
    ("a/..", r"'\.\.' part"),
    ("a\\..\\..\\b", r"'\.\.' part"),
    ("/abs", r"absolute"),
    ("/etc/passwd", r"absolute"),
    ("\\\\server\\share\\x", r"absolute"),
    ("\\x", r"absolute"),
    ("C:\\x", r"drive letter"),
    ("c:x", r"drive letter"),
    ("./C:/x", r"drive letter"),
    ("a\x00b", r"control character"),
    ("a\nb", r"control character"),
    ("a\x1b[31mb", r"control character"),
    ("a\x7fb", r"control character"),
    ("a\x85b", r"control character"),
    ("dir/", r"does not end in a file name"),
    ("dir/.", r"does not end in a file name"),
    (".", r"does not end in a file name"),
    ("//", r"absolute"),
    ("x" * 256, r"longer than 255 bytes"),
]


@pytest.mark.parametrize("path, match", UNSAFE_PATHS)
def test_unsafe_json_paths(path, match):
    usage(js({"files": [{"url": "https://h/x", "path": path}]}), match=r"^m: files\[0\]\.path: .*" + match)


@pytest.mark.parametrize("path, match", [(p, m) for p, m in UNSAFE_PATHS if "\n" not in p])
def test_unsafe_aria2_paths(path, match):
    usage(f"https://h/x\n  out={path}\n", match=r"^m:2: out: .*" + match)
    if "file name" not in match:
        usage(f"https://h/x\n  dir={path}\n  out=f\n", match=r"^m:2: dir: .*" + match)


@pytest.mark.parametrize("folder, path", [(".", "f"), ("./", "f"), ("sub/", "sub/f"), ("a/./b/.", "a/b/f"), ("a\\b", "a/b/f")])
def test_aria2_dir_spellings(folder, path):
    [r] = parse_input(f"https://h/x\n  dir={folder}\n  out=f\n").requests
    assert r.path == path


@pytest.mark.parametrize("raw, normal", [
    ("a", "a"),
    ("./a", "a"),
    ("a//b", "a/b"),
    ("a/./b/", None),
    ("./x/./y.bin", "x/y.bin"),
    ("a\\b", "a/b"),
    ("...", "..."),
    ("..a/b..", "..a/b.."),
    ("ä/ö.bin", "ä/ö.bin"),
    ("~/x", "~/x"),
])
def test_check_relative_normalises(raw, normal):
    if normal is None:
        with pytest.raises(Problem, match="does not end in a file name"):
            check_relative(raw)
    else:
        assert check_relative(raw) == normal


@pytest.mark.parametrize("paths, match", [
    (["a/b.bin", "a//./b.bin"], r"^m: files\[1\]\.path: path 'a/b\.bin' is already used by files\[0\]"),
    (["a\\b.bin", "a/b.bin"], r"files\[1\]\.path: .*already used by files\[0\]"),
    (["a/b", "a"], r"files\[1\]\.path: path 'a' is a folder of the path of files\[0\]"),
    (["a", "a/b"], r"files\[1\]\.path: .*needs 'a' as a folder, but files\[0\] writes a file there"),
    (["\u00e9.bin", "e\u0301.bin"], r"already used"),  # NFC and NFD spellings of the same name
])
def test_json_duplicate_paths(paths, match):
    files = [{"url": f"https://h/{i}", "path": p} for i, p in enumerate(paths)]
    usage(js({"files": files}), match=match)


def test_aria2_duplicate_paths_and_urls():
    usage("http://h/1\n  out=a.bin\nhttp://h/2\n  dir=.\n  out=./a.bin\n",
          match=r"^m:5: path 'a\.bin' is already used by the download on line 1")
    usage("http://h/1\nhttp://h/1\n", match=r"^m:2: URL 'http://h/1' is already downloaded by the download on line 1")
    # a path under another's, at any depth, either way round
    usage("http://h/1\n  out=x/y/z.bin\nhttp://h/2\n  out=x/y\n",
          match=r"^m:4: path 'x/y' is a folder of the path of the download on line 1$")
    usage("http://h/1\n  out=x/y\nhttp://h/2\n  out=x/y/z.bin\n",
          match=r"^m:4: path 'x/y/z\.bin' needs 'x/y' as a folder, but the download on line 1 writes a file there$")
    # the same URL twice is fine when each gets its own name
    m = parse_input("http://h/1\n  out=a\nhttp://h/1\n  out=b\n")
    assert [r.path for r in m.requests] == ["a", "b"]


# ---------------------------------------------------------------------------
# load_input: files on disk


def test_load_input_formats(tmp_path: Path):
    (tmp_path / "m.json").write_text(js({"files": [{"url": "https://h/x", "path": "x"}]}))
    (tmp_path / "l.txt").write_bytes(b"\xef\xbb\xbfhttps://h/y\r\n  out=y\r\n")
    (tmp_path / "l.txt.gz").write_bytes(gzip.compress(b"https://h/z\n"))
    assert load_input(tmp_path / "m.json").requests == (Request("https://h/x", path="x"),)
    assert load_input(str(tmp_path / "l.txt")).requests == (Request("https://h/y", path="y"),)
    assert load_input(tmp_path / "l.txt.gz").requests == (Request("https://h/z"),)


def test_load_input_errors(tmp_path: Path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"http://h/x\n  out=caf\xe9\n")
    with pytest.raises(UsageError, match=r"latin1\.txt:2: not UTF-8 text \(byte 0xe9 at offset 20\)"):
        load_input(bad)
    utf16 = tmp_path / "u16.txt"
    utf16.write_bytes("http://h/x\n".encode("utf-16"))
    with pytest.raises(UsageError, match="UTF-16"):
        load_input(utf16)
    with pytest.raises(UsageError, match="cannot read .*missing"):
        load_input(tmp_path / "missing")
    with pytest.raises(UsageError, match="cannot read"):
        load_input(tmp_path)
    with pytest.raises(UsageError, match="cannot read"):
        load_input("a\x00b")
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"http://h/x\n")[:-6])
    with pytest.raises(UsageError, match=r"broken\.gz: not a valid gzip file"):
        load_input(broken)
    json_err = tmp_path / "m.json"
    json_err.write_text('{\n  "files": [\n    {"url": "https://h/x",}\n  ]\n}\n')
    with pytest.raises(UsageError, match=r"m\.json:3:27: invalid JSON: Expecting property name"):
        load_input(json_err)


# ---------------------------------------------------------------------------
# properties: any input gives a safe Manifest or a UsageError, nothing else


def assert_safe(m: Manifest) -> None:
    assert isinstance(m, Manifest)
    assert m.collection is None or isinstance(m.collection, str)
    seen = set()
    for r in m.requests:
        assert isinstance(r, Request)
        for u in (r.url, *r.mirrors):
            assert u.isascii() and re.match(r"(?i)https?://", u) and not re.search(r"\s", u)
        for h in r.headers:
            assert h.isascii() and "\r" not in h and "\n" not in h and ": " in h
        for d in (r.blake3, r.sha256):
            assert d is None or re.fullmatch(r"[0-9a-f]{64}", d)
        assert r.size is None or (type(r.size) is int and r.size >= 0)
        if r.path is None:
            continue
        p = r.path
        assert p and not p.startswith("/") and "\\" not in p and not re.match(r"[A-Za-z]:", p)
        parts = PurePosixPath(p).parts
        assert ".." not in parts and not PurePosixPath(p).is_absolute()
        assert not any(ord(c) < 32 or ord(c) == 127 for c in p)
        assert check_relative(p) == p  # already normal
        inside(Path("/dest"), p)  # the engine's own guard agrees
        assert p not in seen
        seen.add(p)


def parses_safely(text: str) -> None:
    try:
        m = parse_input(text, source="prop")
    except UsageError as e:
        assert e.message.startswith("prop")
        assert e.exit_code == EXIT_USAGE
        return
    assert_safe(m)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRICKY_PATHS = ["a", "a/b", "../x", "a/../b", "/abs", "C:\\x", "c:", "\\\\s\\x", ".", "./a", "a//b",
                "a/", "", "a\x00", "\x1b", "é", "e\u0301", "x/./y", "...", "..", "a\\..\\b", "~"]
TRICKY_URLS = ["https://h/x", "http://h/y", "HTTP://H/z", "ftp://h/x", "https://", "http://h:0/",
               "http://h:99999/", "http://[::1/", "http://ü.example/ä", "http://h/a b", "x", "",
               "http://\udc80/", "https://h/\x00"]
HEXES = [H1, H1.upper(), "abc", "", "g" * 64]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
field_values = {
    "url": st.sampled_from(TRICKY_URLS) | json_values,
    "mirrors": st.lists(st.sampled_from(TRICKY_URLS), max_size=3) | json_values,
    "path": st.sampled_from(TRICKY_PATHS) | st.text(max_size=10) | json_values,
    "size": st.integers(min_value=-2, max_value=2**64) | json_values,
    "blake3": st.sampled_from(HEXES) | json_values,
    "sha256": st.sampled_from(HEXES) | json_values,
    "headers": st.dictionaries(st.sampled_from(["A", "Bad Name", "Range", ""]),
                               st.sampled_from(["v", "a\r\nb", "", " é"]), max_size=2) | json_values,
    "x-extra": json_values,
    "typo": json_values,
}
file_entries = st.fixed_dictionaries({}, optional={k: v for k, v in field_values.items()}) | json_values
# well-typed entries, so that many documents parse and the checks on accepted
# paths get exercised: only the path (and which URL) is adversarial
VALID_URLS = ["https://h/1", "https://h/2", "http://m/3"]
typed_entries = st.fixed_dictionaries(
    {"url": st.sampled_from(VALID_URLS)},
    optional={
        "path": st.sampled_from(TRICKY_PATHS) | st.lists(st.sampled_from(TRICKY_PATHS), max_size=3).map("/".join)
        | st.text(alphabet="ab./\\:C\x00", max_size=8),
        "mirrors": st.lists(st.sampled_from(VALID_URLS), max_size=2),
        "blake3": st.just(H1),
        "size": st.integers(min_value=0, max_value=10),
        "headers": st.just({"A": "b"}),
    },
)
manifest_docs = st.fixed_dictionaries(
    {"files": st.lists(file_entries, max_size=5)},
    optional={"collection": st.text(max_size=5) | json_values, "x-meta": json_values, "extra": json_values},
) | st.fixed_dictionaries({"files": st.lists(typed_entries, max_size=5)}) | json_values


@FAST
@given(st.text())
def test_property_arbitrary_text(text):
    parses_safely(text)
    parses_safely("{" + text)


@FAST
@given(manifest_docs)
def test_property_json_values(doc):
    parses_safely(json.dumps(doc))


aria2_fragments = st.sampled_from([
    *TRICKY_URLS, "\t", " ", "  ", "#", "\r", "=", "out=", "dir=", "checksum=", "sha-256=", "md5=",
    "blake3=", "header=", "split=4", "A: b", ":", H1, *TRICKY_PATHS,
])
aria2_soup = st.lists(aria2_fragments, max_size=5).map("".join)
# shaped like real files: URI lines, option lines, comments, blank lines
aria2_shaped = st.one_of(
    st.lists(st.sampled_from(VALID_URLS), min_size=1, max_size=3).map("\t".join),
    st.tuples(st.sampled_from([" ", "\t", "  "]), st.sampled_from(["out=", "dir=", "out=./", "dir=a/"]),
              st.sampled_from(TRICKY_PATHS)).map("".join),
    st.sampled_from(["", "# c", "  split=4", "  checksum=sha-256=" + H1, "  header=A: b", "  blake3=" + H2]),
)
aria2_lines = aria2_soup | aria2_shaped


@FAST
@given(st.lists(aria2_lines, max_size=10), st.sampled_from(["\n", "\r\n"]))
def test_property_aria2_line_soup(lines, eol):
    parses_safely(eol.join(lines))


@FAST
@given(st.lists(st.tuples(st.sampled_from(["https://h/1", "https://h/2", "http://m/3"]),
                          st.sampled_from(TRICKY_PATHS), st.sampled_from(TRICKY_PATHS)), max_size=6))
def test_property_aria2_dir_out(entries):
    text = "".join(f"{u}\n  dir={d}\n  out={o}\n" for u, d, o in entries)
    parses_safely(text)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from("ab.-_/\\:1~ \u00e9\x00"), max_size=12), st.booleans())
def test_plain_paths_take_a_short_cut_to_the_same_answer(path, folder):
    """check_relative's fast path (already normal paths) answers what the
    general rules answer, for paths made of the characters that matter."""
    def answer(f):
        try:
            return f()
        except Problem as e:
            return ("problem", str(e))
    assert answer(lambda: check_relative(path, folder=folder)) == answer(lambda: _check_relative(path, folder))


def test_an_origin_seen_before_does_not_let_a_bad_url_through():
    assert check_url("http://127.0.0.1:8080/a") == "http://127.0.0.1:8080/a"
    assert check_url("http://127.0.0.1:8080/b?x=1") == "http://127.0.0.1:8080/b?x=1"  # the cached origin
    for bad in ("http://127.0.0.1:80800/a", "http://127.0.0.1:0/a", "ftp://127.0.0.1:8080/a", "http:///a",
                "http://127.0.0.1:8080/a b", "http://127.0.0.1:8080/\x01"):
        with pytest.raises(Problem):
            check_url(bad)
