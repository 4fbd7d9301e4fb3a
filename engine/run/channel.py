"""How the queues between segdl's processes pickle segdl's messages: with
the C pickler.

``multiprocess`` queues pickle with dill, whose pure-Python pickler costs
about 40 us a message however small (a ``Release``: 3 us with
``pickle``), in a feeder thread of the sending process.  In the
coordinator those threads compete for the GIL with the loop and the
probe thread, and many small files send several messages each.  So the
queues' pickler (``multiprocess.queues._ForkingPickler``, one name for
every queue of the process) becomes :class:`QueuePickler`: a message
of segdl's own goes through ``pickle``; anything else (another part of
a program that embeds segdl may use ``multiprocess`` too), and a
message ``pickle`` refuses, through dill as before.  ``pickle`` reads
what dill wrote, and dill what ``pickle`` wrote.  Pickling stays in the
feeder threads, off the loop's path: done by the caller it was slower,
though cheaper (it had overlapped the loop's waits there).
"""

from __future__ import annotations

import pickle

from multiprocess import queues
from multiprocess.reduction import ForkingPickler

#: The modules whose objects are pickled by ``pickle`` (segdl's messages
#: and the values in them).
OURS = "segdl."


class QueuePickler:
    """``dumps`` and ``loads`` as ``multiprocess.queues`` calls them."""

    @staticmethod
    def dumps(obj, protocol=None):
        if type(obj).__module__.startswith(OURS):
            try:
                return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
            except Exception:  # (TypeError, AttributeError, PicklingError, ValueError...): dill may
                pass           # take it, or raises its own error as the queue always did
        return ForkingPickler.dumps(obj, protocol)

    loads = staticmethod(pickle.loads)


def use_c_pickler() -> None:
    """Make the ``multiprocess`` queues of this process (and of the
    processes it forks from now on) pickle segdl's messages with
    ``pickle`` (see :class:`QueuePickler`); left as it is if
    ``multiprocess`` no longer has that name."""
    if getattr(queues, "_ForkingPickler", None) is ForkingPickler:
        queues._ForkingPickler = QueuePickler
