"""How the queues between segdl's processes pickle: with the C pickler.

``multiprocess`` queues pickle with dill, whose pure-Python pickler costs
about 40 us a message however small (a ``Release``: 3 us with
``pickle``), in a feeder thread of the sending process.  In the
coordinator those threads compete for the GIL with the loop and the
probe thread, and many small files send several messages each.  So the
queues' pickler (``multiprocess.queues._ForkingPickler``, one name for
every queue of the process) becomes :class:`QueuePickler`: ``pickle``
first, dill for what ``pickle`` cannot take (``pickle`` reads what dill
wrote, and dill what ``pickle`` wrote).  Pickling stays in the feeder
thread, off the loop's path: done by the caller it was slower, though
cheaper (it overlapped the loop's waits there).
"""

from __future__ import annotations

import pickle

from multiprocess import queues
from multiprocess.reduction import ForkingPickler


class QueuePickler:
    """``dumps`` and ``loads`` as ``multiprocess.queues`` calls them."""

    @staticmethod
    def dumps(obj, protocol=None):
        try:
            return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError):
            return ForkingPickler.dumps(obj, protocol)

    loads = staticmethod(pickle.loads)


def use_c_pickler() -> None:
    """Make every ``multiprocess`` queue of this process (and of the
    processes it forks from now on) pickle with :class:`QueuePickler`;
    left as it is if ``multiprocess`` no longer has that name."""
    if getattr(queues, "_ForkingPickler", None) is ForkingPickler:
        queues._ForkingPickler = QueuePickler
