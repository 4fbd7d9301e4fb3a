"""segdl's download engine.  The public API is :func:`download`."""

from .api import FileResult, Request, Results, Settings, download

__all__ = ["FileResult", "Request", "Results", "Settings", "download"]
