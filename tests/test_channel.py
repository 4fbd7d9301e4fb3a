"""The queues between segdl's processes pickle with the C pickler
(engine/run/channel.py): every message and error arrives as it was sent,
through a real queue to a forked process, and what ``pickle`` cannot
take still goes (by dill)."""

from __future__ import annotations

import pickle

import multiprocess
import pytest
from multiprocess import queues
from multiprocess.reduction import ForkingPickler

from segdl.engine.rules.http import RemoteInfo
from segdl.engine.run.channel import QueuePickler, use_c_pickler
from segdl.engine.values import errors
from segdl.engine.values.messages import Finalize, Finalized, Finished, LinkStats, Probed, Release, TransferOptions


def _error_classes(base=errors.SegdlError):
    out = [base]
    for sub in base.__subclasses__():
        out += _error_classes(sub)
    return out


ERRORS = sorted(set(_error_classes()), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_survives_both_picklers(cls):
    try:
        e = cls("it broke", retry_after=2.5)
    except TypeError:
        e = cls("it broke")
    for dumps, loads in ((QueuePickler.dumps, QueuePickler.loads),  # ours both ways
                         (QueuePickler.dumps, ForkingPickler.loads),  # a reader still on dill
                         (ForkingPickler.dumps, QueuePickler.loads)):  # a writer still on dill
        back = loads(dumps(e))
        assert type(back) is cls
        assert str(back) == str(e)
        assert back.exit_code == e.exit_code
        assert getattr(back, "retry_after", None) == getattr(e, "retry_after", None)


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


def _send_from_child(q, items) -> None:
    use_c_pickler()
    for item in items:
        q.put(item)
    q.put(("pickler", queues._ForkingPickler.__name__))
    q.put(lambda: "sent by dill")  # pickle refuses a lambda
    q.close()
    q.join_thread()


def test_messages_cross_a_real_queue_between_processes():
    use_c_pickler()
    assert queues._ForkingPickler is QueuePickler
    ctx = multiprocess.get_context("fork")
    q = ctx.Queue()
    items = _messages()
    p = ctx.Process(target=_send_from_child, args=(q, items))
    p.start()
    try:
        got = [q.get(timeout=20) for _ in range(len(items))]
        name = q.get(timeout=20)
        fn = q.get(timeout=20)
    finally:
        p.join(timeout=20)
    for sent, back in zip(items, got):
        assert type(back) is type(sent)
        assert repr(back) == repr(sent)  # (errors compare by identity: their repr says it all)
    assert name == ("pickler", "QueuePickler")  # a forked process keeps it
    assert fn() == "sent by dill"
    assert p.exitcode == 0


def test_an_ordinary_message_is_pickled_by_pickle_not_dill():
    for message in _messages():
        assert QueuePickler.dumps(message) == pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
