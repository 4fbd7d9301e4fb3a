"""Response validation and header parsing: pure, fuzzed."""

import pickle
from pathlib import Path

from hypothesis import given, strategies as st

from segdl.engine.values import errors, messages
from segdl.engine.rules.http import ResponseHead, check_response, parse_content_range, remote_from_probe
from segdl.engine.values.messages import Expect


def head(status, **headers):
    h = ResponseHead()
    h.feed(f"HTTP/1.1 {status} X\r\n".encode())
    for k, v in headers.items():
        h.feed(f"{k.replace('_', '-')}: {v}\r\n".encode())
    return h


EXP = Expect(1000, '"abc"', "Mon, 01 Jan 2024 00:00:00 GMT", True)


def test_good_206_passes():
    h = head(206, content_range="bytes 100-199/1000", content_length=100, etag='"abc"')
    assert check_response(h, 100, 200, EXP) is None


def test_wrong_range_total_validators_and_status_are_caught():
    assert isinstance(check_response(head(206, content_range="bytes 101-199/1000"), 100, 200, EXP), errors.BadResponseError)
    assert isinstance(check_response(head(206, content_range="bytes 100-199/1001"), 100, 200, EXP), errors.RemoteChangedError)
    assert isinstance(check_response(head(206, content_range="bytes 100-199/1000", etag='"zzz"'), 100, 200, EXP), errors.RemoteChangedError)
    assert isinstance(check_response(head(200, content_length=1000), 100, 200, EXP), errors.RangeIgnoredError)
    assert isinstance(check_response(head(206), 100, 200, EXP), errors.BadResponseError)
    assert isinstance(check_response(head(206, content_range="bytes 100-199/1000", content_length=5), 100, 200, EXP), errors.BadResponseError)
    e = check_response(head(503, retry_after="4"), 100, 200, EXP)
    assert isinstance(e, errors.TransientError) and e.retry_after == 4
    e = check_response(head(404), 100, 200, EXP)
    assert isinstance(e, errors.HttpError) and not e.retryable and e.exit_code == errors.EXIT_DOWNLOAD_FAILED
    assert isinstance(check_response(head(403), 0, 10, EXP, redirected=True), errors.AccessExpiredError)


def test_redirect_resets_headers():
    h = head(302, location="/x", etag='"old"')
    h.feed(b"HTTP/1.1 206 Partial Content\r\n")
    h.feed(b"Content-Range: bytes 0-9/1000\r\n")
    assert h.get("etag") is None and h.redirects == 1
    assert check_response(h, 0, 10, EXP) is None


def test_probe_interpretation():
    r = remote_from_probe("u", "u", head(206, content_range="bytes 0-0/77", etag='"e"'))
    assert (r.size, r.ranged, r.etag) == (77, True, '"e"')
    r = remote_from_probe("u", "u", head(416, content_range="bytes */0"))
    assert (r.size, r.ranged) == (0, True)
    r = remote_from_probe("u", "v", head(200, content_length=50))
    assert (r.size, r.ranged, r.redirected) == (50, False, True)
    r = remote_from_probe("u", "u", head(200, transfer_encoding="chunked"))
    assert r.size is None


@given(st.text(max_size=80))
def test_content_range_parser_never_crashes(s):
    cr = parse_content_range(s)
    if cr is not None and cr.start is not None:
        assert 0 <= cr.start < cr.end and (cr.total is None or cr.end <= cr.total)


@given(st.integers(0, 600), st.dictionaries(
    st.sampled_from(["content-range", "content-length", "etag", "last-modified", "retry-after", "transfer-encoding"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)),
    st.integers(0, 2000), st.integers(1, 2000))
def test_validation_never_crashes_and_never_accepts_wrong_range(status, headers, pos, length):
    h = head(status, **{k.replace("-", "_"): v for k, v in headers.items()})
    err = check_response(h, pos, pos + length, Expect(None, None, None, True))
    if err is None:
        cr = parse_content_range(h.get("content-range"))
        assert status == 206 and cr.start == pos and cr.end == pos + length
    else:
        assert isinstance(err, errors.SegdlError) and err.message


def test_messages_pickle_round_trip():
    exp = Expect(10, '"e"', None, True)
    for m in [
        messages.Fetch(1, 2, "http://127.0.0.1/x", "/tmp/x", 0, 10, exp),
        messages.Shrink(1, 5), messages.Cancel(1), messages.Release(2), messages.Stop(),
        messages.Written(0, {1: 5}), messages.Durable(0, {1: 5}), messages.Shrunk(0, 1, None),
        messages.Finished(0, 1, 5, "error", errors.TransientError("x", retry_after=1.0)),
        messages.WorkerCrashed(0, "boom"),
        messages.Finalize(7, ((("/tmp/d", (5, 6)), Path("/tmp/d/x.segdl-part"), Path("/tmp/d/x"), 3, (1, 2), b"abc"),)),
        messages.Finalized(1, 7, ((1.5, 3), errors.UnsafePathError("no"))),
    ]:
        back = pickle.loads(pickle.dumps(m))
        assert type(back) is type(m)
        if isinstance(m, messages.Finished):
            assert type(back.error) is errors.TransientError and back.error.retry_after == 1.0
        elif isinstance(m, messages.Finalized):
            assert back.results[0] == (1.5, 3) and type(back.results[1]) is errors.UnsafePathError
        else:
            assert back == m


def _head(*lines: str) -> ResponseHead:
    h = ResponseHead()
    for line in lines:
        h.feed(line.encode("latin-1") + b"\r\n")
    return h


def test_published_sha256_from_repr_digest_digest_and_linked_etag():
    import base64
    import hashlib

    from segdl.engine.rules.http import published_sha256

    d = hashlib.sha256(b"abc").digest()
    b64 = base64.b64encode(d).decode()
    hexd = d.hex()
    assert published_sha256(_head("HTTP/1.1 206 x", f"Repr-Digest: sha-512=:AAAA:, sha-256=:{b64}:")) == hexd
    assert published_sha256(_head("HTTP/2 206", f"repr-digest: SHA-256=:{b64}:")) == hexd
    assert published_sha256(_head("HTTP/1.1 206 x", f"Digest: MD5=abc, SHA-256={b64}")) == hexd
    # A hub's X-Linked-ETag on the redirect, kept past it; quoted, maybe weak.
    assert published_sha256(_head("HTTP/1.1 302 x", f'X-Linked-ETag: W/"{hexd.upper()}"',
                                  "HTTP/1.1 206 x", 'ETag: "other"')) == hexd
    # Not a sha256 of the whole file: ignored.
    assert published_sha256(_head("HTTP/1.1 206 x", f"Content-Digest: sha-256=:{b64}:")) is None
    assert published_sha256(_head("HTTP/1.1 206 x", 'X-Linked-ETag: "abc123"')) is None
    assert published_sha256(_head("HTTP/1.1 206 x", "Repr-Digest: sha-256=:not base64!:")) is None
    assert published_sha256(_head("HTTP/1.1 206 x", "Repr-Digest: sha-256=:QUJD:")) is None  # 3 bytes
    assert published_sha256(_head("HTTP/1.1 206 x")) is None


@given(st.text(alphabet=st.characters(max_codepoint=255), max_size=200))
def test_published_sha256_never_raises(value):
    from segdl.engine.rules.http import published_sha256

    for name in ("Repr-Digest", "Digest", "X-Linked-ETag"):
        got = published_sha256(_head("HTTP/1.1 206 x", f"{name}: {value}".replace("\r", "").replace("\n", "")))
        assert got is None or (len(got) == 64 and all(c in "0123456789abcdef" for c in got))
