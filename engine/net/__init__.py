"""The network side: the only code that imports libcurl (pycurl).

* :mod:`.curl`: handle setup, the connection policy, errors translated.
* :mod:`.probe`: :class:`Prober` learns what many URLs are at once.
* :mod:`.transfer` and :mod:`.multi`: a worker's segment transfers on one
  ``CurlMulti``.
* :mod:`.fetch`: one small GET for a hub's listings.
"""

from .curl import curl_error, follows_itself
from .fetch import Answer, http_get
from .multi import MultiDriver, Outcome
from .probe import PROBE_DATA, ProbeFeed, ProbeOrder, Prober, probe_many
from .transfer import Transfer, WriteGate

__all__ = ["Answer", "MultiDriver", "Outcome", "PROBE_DATA", "ProbeFeed", "ProbeOrder", "Prober", "Transfer", "WriteGate", "curl_error",
           "follows_itself", "http_get", "probe_many"]
