"""The one door to the terminal.

Every rich console segdl prints through is made here, with markup and
highlighting off: a file name, a URL, a collection name or a server's
words is data and goes out as it is (``style [v2].safetensors`` stays
whole).  Style is given to pieces segdl wrote (``say``'s prefix, a
``cell``), never by formatting text into a markup string.

``shown`` makes text from outside safe for a terminal: its control
characters are written visibly (ESC as ``\\x1b``), so a name cannot move
the cursor, clear the screen or colour what follows.  The Textual UI uses
it too, with widgets that do not read markup.

rich loads on first use: a command that prints nothing does not load it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# C0 and C1 controls and DEL, and the characters that reorder or break a
# line as a terminal shows it (bidirectional overrides and isolates, the
# Unicode line and paragraph separators).  Compiled on first use (re keeps
# it), not at start-up.
_CONTROL = "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"


def _visible(m: re.Match) -> str:
    n = ord(m.group())
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def shown(text: object) -> str:
    """``text`` as a terminal should show it: every control character
    escaped (``\\x1b``, ``\\x0a``, ``\\u202e``), the rest as it is."""
    return re.sub(_CONTROL, _visible, str(text))


def make_console(*, stderr: bool = False, **kw) -> "Console":
    """A new console on stdout (or stderr) that reads no markup and
    highlights nothing; ``kw`` as rich's (``width``)."""
    from rich.console import Console

    return Console(stderr=stderr, markup=False, highlight=False, **kw)


class LazyConsole:
    """stderr's console for segdl's messages, made on first use.  It never
    breaks a message into lines itself (the terminal wraps it for show):
    a path or a URL in one must stay whole to be copied."""

    _console: "Console | None" = None

    def __getattr__(self, name: str):
        if self._console is None:
            self._console = make_console(stderr=True, soft_wrap=True)
        return getattr(self._console, name)


err = LazyConsole()


def line(*pieces: "str | tuple[str, str]") -> "Text":
    """One line of ``pieces``: a str is text from outside (shown as it
    is), a ``(text, style)`` pair a piece segdl styles."""
    from rich.text import Text

    return Text.assemble(*((shown(p[0]), p[1]) if isinstance(p, tuple) else shown(p) for p in pieces))


def say(message: str, colour: str | None = "yellow") -> None:
    """``segdl: message`` on stderr, the prefix in ``colour`` (None: plain)."""
    err.print(line(("segdl:", colour or ""), " ", message))


def cell(text: str, style: str = "") -> "Text":
    """A table cell or title of text from outside, in ``style``."""
    from rich.text import Text

    return Text(shown(text), style=style)
