"""stderr through rich, made on first use: a command that prints nothing
there does not load rich."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    _console: "Console | None" = None

    def __getattr__(self, name: str):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return getattr(self._console, name)


err = LazyConsole()
