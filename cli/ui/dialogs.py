"""The small dialogs of the live screen: a speed limit (for the file or
the whole job), a URL to add, a yes/no before dropping a file."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from ..console import shown

CSS = """
ModalScreen { align: center middle; }
ModalScreen > Vertical { width: 64; height: auto; border: thick $accent; padding: 1 2; background: $surface; }
ModalScreen Horizontal { height: auto; margin-top: 1; }
ModalScreen Button { margin-right: 2; }
ModalScreen .error { color: $error; }
"""


class LimitDialog(ModalScreen):
    """``40M``, ``500K``, ``0`` (none), 1024-based.  Enter or "file" sets
    the file's limit, "job" the whole job's.  Dismisses with
    ``(scope, bytes_per_second)`` or None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = CSS

    def __init__(self, name: str) -> None:
        super().__init__()
        self.file_name = name

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Speed limit, e.g. 40M or 500K (0: none), for {shown(self.file_name)} or the whole job",
                        markup=False)
            yield Input(placeholder="40M", id="rate")
            yield Label("", id="problem", classes="error", markup=False)
            with Horizontal():
                yield Button("This file", id="file", variant="primary")
                yield Button("Whole job", id="job")
                yield Button("Cancel", id="cancel")

    def _answer(self, scope: str) -> None:
        from segdl.engine.rules.bandwidth import parse_rate

        try:
            value = parse_rate(self.query_one("#rate", Input).value or "")
        except ValueError as e:
            self.query_one("#problem", Label).update(shown(e))
            return
        self.dismiss((scope, value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._answer("file")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self._answer(event.button.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class UrlDialog(ModalScreen):
    """A URL to add as a job of its own; dismisses with it or None."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]
    DEFAULT_CSS = CSS

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("URL to add (enter adds it, escape cancels)")
            yield Input(placeholder="https://...", id="url")
            yield Label("", id="problem", classes="error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        url = event.value.strip()
        if not url.startswith(("http://", "https://")):
            self.query_one("#problem", Label).update("an http:// or https:// URL")
            return
        self.dismiss(url)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen):
    """y or enter: True; n or escape: False."""

    BINDINGS = [Binding("y,enter", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]
    DEFAULT_CSS = CSS

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(shown(self.question), markup=False)
            yield Label("y: yes   n: no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
