"""How a job ended: one record per file, never an exception per file."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .errors import EXIT_OK, SegdlError
from ..rules.lifecycle import FAILURES, FINAL

FINAL_STATES = FINAL  # (a name of the API; the states are lifecycle.py's)


@dataclass(frozen=True, slots=True)
class FileResult:
    url: str
    path: str
    status: str  # done | skipped | failed | hash_mismatch | removed (cancelled)
    size: int | None = None
    blake3: str | None = None
    sha256: str | None = None
    error: str | None = None
    exit_code: int = EXIT_OK
    seconds: float = 0.0
    downloaded: int = 0  # bytes taken off the wire in this run
    # How its ranges travelled in this run (not counting the probe): TCP
    # connections that carried them, the HTTP versions spoken, and the
    # milliseconds spent opening those connections (TCP, then TLS).
    connections: int = 0
    protocol: str | None = None
    connect_ms: float = 0.0
    tls_ms: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def failed(cls, url: str, path: str, error: SegdlError, **kw) -> "FileResult":
        return cls(url, path, error.status, error=error.message, exit_code=error.exit_code, **kw)


class Results(list):
    """A list of :class:`FileResult`, in the order the files were asked for."""

    @property
    def errors(self) -> list[FileResult]:
        return [r for r in self if r.status in FAILURES]

    @property
    def exit_code(self) -> int:
        """0 when every file is done or skipped, else the largest exit code
        among the files that are not (see the README's table)."""
        code = EXIT_OK
        for r in self:
            if r.status in FAILURES:
                code = max(code, r.exit_code)
        return code


__all__ = ["FileResult", "Results", "FINAL_STATES"]
