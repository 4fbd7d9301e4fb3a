"""segdl's download engine.  The public API is :func:`download`.

Its names load on first use (PEP 562), so importing one small module of
the engine (``segdl.engine.values.errors``) does not load the whole of it: each
CLI command imports only what it uses."""

__all__ = ["FileResult", "Request", "Results", "Settings", "download"]


def __getattr__(name: str):
    if name in __all__:
        from .doors import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
