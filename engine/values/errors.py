"""segdl's error tree.

Foreign errors (``pycurl.error``, ``OSError`` from the disk, ``sqlite3``) are
translated into these classes at one boundary each (transport, storage,
journal).  Every class carries

* ``retryable``: whether trying the same request again may succeed, and
* ``exit_code``: the process exit code when this is why a file failed.

Exit codes are part of the public interface; see the README.  They never
change meaning once released.

All errors pickle (they cross process boundaries from the workers).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DOWNLOAD_FAILED = 3
EXIT_HASH_MISMATCH = 4
EXIT_EXISTS = 5
EXIT_STORAGE = 6
EXIT_JOURNAL = 7
# A model hub (Hugging Face, CivitAI) said why it does not give a file.
EXIT_HUB_NOT_FOUND = 8  # no such repo, model, version or collection (or private)
EXIT_HUB_REVISION = 9  # the repo has no such revision (branch, tag, commit)
EXIT_HUB_ENTRY = 10  # the repo has no such file at that revision
EXIT_HUB_ACCESS = 11  # gated, login required, downloads disabled, early access
EXIT_HUB_GONE = 12  # archived or removed: no files to download
EXIT_HUB_RATE_LIMIT = 13  # still rate-limited after the waits the hub asked for
EXIT_HUB_PROTOCOL = 14  # the hub answered in a shape segdl does not understand
EXIT_CLUSTER = 15  # --ray: the cluster cannot be reached or used
EXIT_INTERRUPTED = 130


class SegdlError(Exception):
    """Base class.  ``message`` is meant for a person to read."""

    retryable = False
    exit_code = EXIT_INTERNAL
    status = "failed"  # the file's final state when this error ends it

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def __reduce__(self):  # keep subclass + retry_after across pickling
        return (_rebuild, (type(self), self.message, self.retry_after))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls, message, retry_after):
    return cls(message, retry_after=retry_after)


class UsageError(SegdlError):
    """Bad input from the user: a malformed URL, a bad option, a bad manifest."""

    exit_code = EXIT_USAGE


class UnsafePathError(UsageError):
    """A path that would put a file outside its target folder: a symbolic
    link in place of the file or of a folder on the way that leads out, or
    something that is not a regular file where segdl writes one.  That file
    fails; the others go on."""


class DownloadError(SegdlError):
    """The remote side did not give us the file."""

    exit_code = EXIT_DOWNLOAD_FAILED


class TransientError(DownloadError):
    """Reset, timeout, short body, 408/429/5xx: worth retrying."""

    retryable = True


class StalledError(TransientError):
    """No progress for longer than the stall timeout."""


class HttpError(DownloadError):
    """A hard HTTP failure (404, 410, 401/403 from the original URL...)."""

    def __init__(self, message: str, *, status_code: int = 0, retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.status_code = status_code

    def __reduce__(self):
        return (_rebuild_http, (type(self), self.message, self.status_code, self.retry_after))


def _rebuild_http(cls, message, status_code, retry_after):
    return cls(message, status_code=status_code, retry_after=retry_after)


class AccessExpiredError(HttpError):
    """401/403/410 on a URL that worked before: a signed URL has expired.

    Retryable after resolving the original URL again.
    """

    retryable = True


class RemoteChangedError(DownloadError):
    """The remote file changed (size, ETag or Last-Modified) under us."""

    retryable = True  # the file restarts from zero


class BadResponseError(DownloadError):
    """The server answered something we did not ask for (wrong range...)."""

    retryable = True


class RangeIgnoredError(BadResponseError):
    """A ranged request was answered with 200 and the whole body."""


class HashMismatchError(SegdlError):
    exit_code = EXIT_HASH_MISMATCH
    status = "hash_mismatch"


class ExistsError(SegdlError):
    """The target exists and differs; segdl never overwrites it without --force."""

    exit_code = EXIT_EXISTS


class BusyError(ExistsError):
    """Another segdl process is downloading the same target right now."""


class StorageError(SegdlError):
    """The local disk failed us (full, read-only, permission denied...)."""

    exit_code = EXIT_STORAGE


class JournalError(SegdlError):
    """The journal is unreadable, truncated, or from a newer segdl."""

    exit_code = EXIT_JOURNAL


class ConflictError(SegdlError):
    """A change the engine refuses in a file's present state: it is not
    running, or it is being renamed into place (409 from segdl serve)."""

    exit_code = EXIT_USAGE


# ------------------------------------------------------------------ hubs


class HubError(HttpError):
    """A model hub refused a listing or a file, and said why (an
    ``X-Error-Code``, a JSON error body).  ``message`` names the repo,
    model or file."""


class HubNotFoundError(HubError):
    """Hugging Face RepoNotFound; a CivitAI model, version or collection 404."""

    exit_code = EXIT_HUB_NOT_FOUND


class RevisionNotFoundError(HubError):
    exit_code = EXIT_HUB_REVISION


class EntryNotFoundError(HubError):
    exit_code = EXIT_HUB_ENTRY


class HubAccessError(HubError):
    """Gated repo, login required, downloads disabled, early access."""

    exit_code = EXIT_HUB_ACCESS


class HubGoneError(HubError):
    """Archived (no files left) or removed (HTTP 410)."""

    exit_code = EXIT_HUB_GONE


class HubRateLimitError(HubError):
    """429 from a hub: retryable, after the wait it asks for."""

    retryable = True
    exit_code = EXIT_HUB_RATE_LIMIT


class HubProtocolError(HubError):
    """The hub's answer is not the shape segdl reads (an unofficial API
    that changed, a body that is not JSON)."""

    exit_code = EXIT_HUB_PROTOCOL


# ------------------------------------------------------------------ cluster


class ClusterError(SegdlError):
    """``--ray``: the cluster cannot be reached or used (no Ray installed is
    a usage error, exit 2)."""

    exit_code = EXIT_CLUSTER
