"""The queues between segdl's processes pickle segdl's messages with the C
pickler (engine/run/channel.py): every message and error arrives as it
was sent, through a real queue to a forked process; what ``pickle``
cannot take still goes (by dill); and what is not segdl's is left to
dill, as before."""

from __future__ import annotations

import pickle
import threading

import multiprocess
import pytest
from multiprocess import queues
from multiprocess.reduction import ForkingPickler

import segdl.engine.doors.validation  # noqa: F401  (its FieldError is among the errors below)
from segdl.engine.rules.http import RemoteInfo
from segdl.engine.run.channel import QueuePickler, use_c_pickler
from segdl.engine.run.worker import WorkerSettings
from segdl.engine.run.workers import Workers
from segdl.engine.values import errors
from segdl.engine.values.messages import (
    Finalize, Finalized, Finished, LinkStats, Notice, Probed, Release, TransferOptions,
)


@pytest.fixture
def stock(monkeypatch):
    """The queues' pickler as multiprocess ships it, restored after."""
    monkeypatch.setattr(queues, "_ForkingPickler", ForkingPickler)


def _error_classes(base=errors.SegdlError):
    out = [base]
    for sub in base.__subclasses__():
        out += _error_classes(sub)
    return out


ERRORS = sorted(set(_error_classes()), key=lambda c: c.__name__)


def _error(cls):
    if cls.__name__ == "FieldError":
        return cls("priority", "must be an integer")
    try:
        return cls("it broke", retry_after=2.5, status_code=503)
    except TypeError:
        try:
            return cls("it broke", retry_after=2.5)
        except TypeError:
            return cls("it broke")


def _fields(e) -> tuple:
    return (type(e), str(e), e.exit_code, getattr(e, "retry_after", None), getattr(e, "status_code", None),
            getattr(e, "field", None))


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_survives_both_picklers(cls):
    e = _error(cls)
    for dumps, loads in ((QueuePickler.dumps, QueuePickler.loads),  # ours both ways
                         (QueuePickler.dumps, ForkingPickler.loads),  # a reader still on dill
                         (ForkingPickler.dumps, QueuePickler.loads)):  # a writer still on dill
        assert _fields(loads(dumps(e))) == _fields(e)


def _messages():
    info = RemoteInfo("http://127.0.0.1:1/a", "http://127.0.0.1:1/b", 4096, True, '"e"', None, "a.bin",
                      redirected=True, sha256="ab" * 32, first_bytes=b"\x00\x01" * 2048, latency=0.05)
    return [
        Release(7),
        Finalize(3, ((("/tmp/dest", (1, 2)), "/tmp/dest/a.part", "/tmp/dest/a", 4096, None, b"x" * 4096, True),)),
        Finalized(1, 3, ((1.5, 4096), errors.StorageError("no space left on the device"))),
        Finished(0, 9, 1 << 20, "error", errors.TransientError("reset", retry_after=1.0), None, None,
                 LinkStats(frozenset({1, 2}), "HTTP/2", 1.0, 2.0, 3)),
        Probed(1, 42, {"http://127.0.0.1:1/a": info,
                       "http://127.0.0.1:1/m": errors.HttpError("404 Not Found", status_code=404)}),
        TransferOptions(stall_timeout=10.0, headers=("Authorization: Bearer t",)),
    ]


def _same(sent, back) -> None:
    assert type(back) is type(sent)
    assert repr(back) == repr(sent)
    # An error's repr leaves out its other fields: compare them too.
    if isinstance(sent, Finished):
        assert _fields(back.error) == _fields(sent.error)
    if isinstance(sent, Probed):
        assert _fields(back.found["http://127.0.0.1:1/m"]) == _fields(sent.found["http://127.0.0.1:1/m"])


def _send_from_child(q, items) -> None:
    # (no use_c_pickler() here: a forked process keeps its parent's)
    for item in items:
        q.put(item)
    q.put(Notice(0, queues._ForkingPickler.__name__))

    def local():  # pickle refuses a local function (AttributeError): dill takes it
        return "sent by dill"

    q.put(Probed(0, 1, {"f": local}))
    q.put(Probed(0, 2, {"lock": threading.Lock()}))  # pickle refuses a lock (TypeError)
    q.close()
    q.join_thread()


def test_messages_cross_a_real_queue_between_processes(stock):
    use_c_pickler()
    assert queues._ForkingPickler is QueuePickler
    ctx = multiprocess.get_context("fork")
    q = ctx.Queue()
    items = _messages()
    p = ctx.Process(target=_send_from_child, args=(q, items))
    p.start()
    try:
        got = [q.get(timeout=20) for _ in range(len(items) + 3)]
    finally:
        p.join(timeout=20)
    for sent, back in zip(items, got):
        _same(sent, back)
    assert got[len(items)] == Notice(0, "QueuePickler")  # the forked child pickled with it
    assert got[len(items) + 1].found["f"]() == "sent by dill"
    assert hasattr(got[len(items) + 2].found["lock"], "acquire")
    assert p.exitcode == 0


def test_a_segdl_message_is_pickled_by_pickle_and_anything_else_by_dill():
    for message in _messages():
        assert QueuePickler.dumps(message) == pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    # Not segdl's (another part of the program that uses multiprocess): as before.
    for other in ({"a": 1}, ("x", 2), b"bytes"):
        assert bytes(QueuePickler.dumps(other)) == bytes(ForkingPickler.dumps(other))


def test_the_workers_queues_use_it(stock):
    assert queues._ForkingPickler is ForkingPickler
    Workers(multiprocess.get_context("fork"), 0, WorkerSettings())  # (no worker process)
    assert queues._ForkingPickler is QueuePickler
