"""The web page's pure parts, without servers (issue 20): login codes and
sessions with an injected clock, the cookie rule, a bulk request's checks,
which finished files ``segdl verify`` picks and what it finds on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from segdl.cli.webauth import CODE_TTL, MAX_SESSIONS, SESSION_TTL, Sessions, from_this_origin
from segdl.engine.doors import bulk, reverify
from segdl.engine.values.errors import UsageError
from segdl.engine.doors.validation import FieldError
from segdl.engine.disk.verify import digest_file


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_code_opens_one_session_once_and_expires():
    clock = Clock()
    s = Sessions("8765", clock=clock)
    code = s.new_code()
    session = s.redeem(code)
    assert session and s.valid(session)
    assert s.redeem(code) is None  # used up
    assert not s.valid(code)  # a code is not a session
    late = s.new_code()
    clock.now += CODE_TTL + 1
    assert s.redeem(late) is None
    assert s.valid(session)
    clock.now += SESSION_TTL
    assert not s.valid(session)
    for bad in ("", "x" * 500, None):
        assert s.redeem(bad or "") is None and not s.valid(bad)


def test_sessions_end_and_the_oldest_goes_past_the_cap():
    clock = Clock()
    s = Sessions("1", clock=clock)
    first = s.redeem(s.new_code())
    others = []
    for _ in range(MAX_SESSIONS):
        clock.now += 1
        others.append(s.redeem(s.new_code()))
    assert not s.valid(first) and all(s.valid(o) for o in others)
    s.end(others[0])
    assert not s.valid(others[0]) and s.valid(others[1])


def test_the_cookie_is_this_ports_own_and_is_read_only_by_its_name():
    s = Sessions("8765")
    session = s.redeem(s.new_code())
    header = s.set_cookie(session)
    assert header.startswith(f"segdl_session_8765={session};")
    for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in header
    assert s.session_of(f"a=b; segdl_session_8765={session}; c=d".encode()) == session
    assert s.session_of(f"segdl_session_9999={session}".encode()) is None  # another port's service
    assert s.session_of(None) is None
    # A cookie of the same name planted by a page on another port (sent
    # first, for its longer Path) does not push the real session out.
    assert s.session_of(f"segdl_session_8765=planted; segdl_session_8765={session}".encode()) == session
    assert "Max-Age=0" in s.clear_cookie()


def test_only_the_own_origin_or_a_typed_address_may_use_the_cookie():
    assert from_this_origin({"sec-fetch-site": b"same-origin"})
    assert from_this_origin({"sec-fetch-site": b"none"})
    for other in (b"same-site", b"cross-site", b"", None):
        assert not from_this_origin({} if other is None else {"sec-fetch-site": other})


def test_a_bulk_request_is_checked_whole():
    assert bulk.plan({"ids": [3, 1, 3], "paused": True}) == ([3, 1], {"paused": True}, False, False)
    assert bulk.plan({"ids": [1], "cancel": True, "keep_partial": True}) == ([1], {}, True, True)
    assert bulk.plan({"ids": [1], "priority": -2, "max_speed": 0})[1] == {"priority": -2, "max_speed": 0}
    for body, field in (({"ids": []}, "ids"), ({"ids": [1], "paused": 1}, "paused"), ({"ids": ["1"]}, "ids[0]"),
                        ({"ids": [1], "speed": 5}, "speed"), ({"ids": list(range(1, 10002)), "paused": True}, "ids")):
        with pytest.raises(FieldError) as e:
            bulk.plan(body)
        assert e.value.field == field
    for body in ({"ids": [1]}, {"ids": [1], "cancel": True, "paused": True}, {"ids": [1], "cancel": False},
                 {"ids": [1], "paused": True, "keep_partial": False}, [1]):
        with pytest.raises(UsageError):
            bulk.plan(body)


def _row(i: int, path: Path, state: str = "done", collection: str | None = "c", digest: bool = True) -> dict:
    return {"id": i, "path": str(path), "state": state, "collection": collection,
            "size": path.stat().st_size if path.exists() else 5,
            "blake3": digest_file(path).blake3 if digest and path.exists() else None}


def test_verify_picks_by_collection_file_or_folder_and_finds_what_changed(tmp_path):
    (tmp_path / "m").mkdir()
    a, b, c, d = (tmp_path / "m" / "a.bin", tmp_path / "m" / "b.bin", tmp_path / "c.bin", tmp_path / "d.bin")
    for p in (a, b, c, d):
        p.write_bytes(os.urandom(70_000))
    rows = [_row(1, a), _row(2, b), _row(3, c, collection="other"), _row(4, d, collection=None, digest=False),
            _row(5, tmp_path / "x.bin", state="failed")]
    assert [r["id"] for r in reverify.choose(rows, [])] == [1, 2, 3, 4]  # finished files only
    assert [r["id"] for r in reverify.choose(rows, ["c"])] == [1, 2]
    assert [r["id"] for r in reverify.choose(rows, [str(tmp_path / "m")])] == [1, 2]
    assert [r["id"] for r in reverify.choose(rows, [str(c), "c"])] == [1, 2, 3]
    with pytest.raises(LookupError, match="nope"):
        reverify.choose(rows, ["nope"])

    data = bytearray(b.read_bytes())
    data[-1] ^= 1
    b.write_bytes(bytes(data))
    c.unlink()
    got = {o.id: o.result for o in map(reverify.check, reverify.choose(rows, []))}
    assert got == {1: "ok", 2: "corrupt", 3: "missing", 4: "unchecked"}
    assert reverify.summary([reverify.check(r) for r in rows[:4]]) == {"ok": 1, "corrupt": 1, "missing": 1,
                                                                      "unchecked": 1}


def test_a_corrupt_file_is_moved_aside_only_under_its_jobs_folder(tmp_path):
    """verify's rename goes from the job's folder down: a folder swapped for
    a symlink to elsewhere since the download moves nothing there."""
    from segdl.engine.doors.reverify import _move_aside

    dest, outside = tmp_path / "dest", tmp_path / "outside"
    (dest / "sub").mkdir(parents=True)
    outside.mkdir()
    (dest / "sub" / "f.bin").write_bytes(b"bad")
    assert "moved aside to f.bin.corrupt" in _move_aside(str(dest / "sub" / "f.bin"), str(dest))
    assert (dest / "sub" / "f.bin.corrupt").read_bytes() == b"bad"
    (dest / "sub" / "f.bin").write_bytes(b"bad again")
    assert "f.bin.corrupt.1" in _move_aside(str(dest / "sub" / "f.bin"), str(dest))

    (outside / "f.bin").write_bytes(b"someone else's")
    (dest / "sub").rename(dest / "old")
    (dest / "sub").symlink_to(outside)
    note = _move_aside(str(dest / "sub" / "f.bin"), str(dest))
    assert note.startswith("; left in place"), note
    assert sorted(p.name for p in outside.iterdir()) == ["f.bin"]
