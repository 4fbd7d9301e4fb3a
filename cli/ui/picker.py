"""The picker: every file of a collection with its size and whether it is
here, partly here or missing; the user takes or leaves each, then starts."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ..console import shown
from . import fmt
from .sources import Collection

COLOURS = {"here": "green", "partial": "yellow", "missing": "red"}


class PickerScreen(Screen):
    """Dismisses with the chosen entries' indexes, or None (quit)."""

    BINDINGS = [
        Binding("space", "toggle", "take/leave"),
        Binding("a", "take_all", "all"),
        Binding("n", "take_none", "none"),
        Binding("m", "take_missing", "not here"),
        Binding("enter", "start", "start", priority=True),
        Binding("q", "quit", "quit"),
    ]
    DEFAULT_CSS = """
    PickerScreen #title { height: 1; padding: 0 1; text-style: bold; }
    PickerScreen #summary { height: 1; padding: 0 1; }
    PickerScreen .note { height: auto; padding: 0 1; color: $warning; }
    PickerScreen DataTable { height: 1fr; }
    """

    def __init__(self, collection: Collection) -> None:
        super().__init__()
        self.collection = collection
        self.chosen = {e.index for e in collection.entries if e.state != "here"}

    def compose(self) -> ComposeResult:
        counts: dict[str, int] = {}
        for e in self.collection.entries:
            counts[e.state] = counts.get(e.state, 0) + 1
        states = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        yield Static(f"{shown(self.collection.title)}: {states}", id="title", markup=False)
        for note in self.collection.notes:
            yield Static(shown(note), classes="note", markup=False)
        yield DataTable(cursor_type="row", zebra_stripes=True)
        yield Static("", id="summary")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key in ("take", "path", "size", "state", "have"):
            table.add_column(key, key=key)
        for e in self.collection.entries:
            table.add_row(self._mark(e.index), Text(shown(e.path)), Text(fmt.size(e.size), justify="right"),
                          Text(e.state, style=COLOURS[e.state]),
                          Text(fmt.size(e.done) if e.state == "partial" else "", justify="right"),
                          key=str(e.index))
        self._summarise()

    def _mark(self, index: int) -> Text:
        return Text("[x]" if index in self.chosen else "[ ]")  # a Text: a str cell is markup

    def _summarise(self) -> None:
        chosen = [e for e in self.collection.entries if e.index in self.chosen]
        sizes = [e.size for e in chosen]
        total = "?" if any(s is None for s in sizes) else fmt.size(sum(sizes))
        self.query_one("#summary", Static).update(
            f"{len(chosen)} of {len(self.collection.entries)} chosen, {total}; enter starts")

    def _refresh_marks(self) -> None:
        table = self.query_one(DataTable)
        for e in self.collection.entries:
            table.update_cell(str(e.index), "take", self._mark(e.index))
        self._summarise()

    def action_toggle(self) -> None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return
        index = int(table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0)).row_key.value)
        self.chosen ^= {index}
        self._refresh_marks()
        table.move_cursor(row=min(table.cursor_row + 1, table.row_count - 1))

    def action_take_all(self) -> None:
        self.chosen = {e.index for e in self.collection.entries}
        self._refresh_marks()

    def action_take_none(self) -> None:
        self.chosen = set()
        self._refresh_marks()

    def action_take_missing(self) -> None:
        self.chosen = {e.index for e in self.collection.entries if e.state != "here"}
        self._refresh_marks()

    def action_start(self) -> None:
        if not self.chosen:
            self.notify("nothing chosen: space takes a file", severity="warning")
            return
        self.dismiss(sorted(self.chosen))

    def action_quit(self) -> None:
        self.dismiss(None)
