"""A split's examples in a table, one row each, sorted by a chosen column.

Textual's DataTable measures every cell it is given (about 0.3 s per 2,000 rows), so the table
shows the first :data:`ROW_LIMIT` rows of the sorted split; the sort itself always covers every row
and runs in the Data screen's worker, off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

from .split_overview import rg_text

if TYPE_CHECKING:
    from engine.data.stats import ExampleRow

# sort column -> ExampleRow attribute, in the order ``next_sort`` cycles through them
SORTS = {
    "index": "index", "total": "total_tokens", "prompt": "prompt_tokens", "completion": "completion_tokens", "Rg": "rg",
}
COLUMNS = ("index", "prompt", "completion", "total", "Rg", "flags", "origin")  # origin: file name and line
ROW_LIMIT = 2_000


def sorted_rows(rows: Sequence[ExampleRow], sort: str, descending: bool) -> list[ExampleRow]:
    """Rows in the chosen order; rows without a value (Rg of a prompt-less example) always go last."""
    key = attrgetter(SORTS[sort])
    known = [row for row in rows if not math.isnan(key(row))]
    unknown = [row for row in rows if math.isnan(key(row))]
    return sorted(known, key=key, reverse=descending) + unknown


def _flags(row: ExampleRow) -> str:
    """The worst thing ``max_seq_length`` does to the example."""
    if row.zero_completion:
        return "no completion"
    if row.completion_cut:
        return "completion cut"
    return "cut" if row.truncated else ""


def row_cells(row: ExampleRow) -> tuple:
    numbers = (row.index, row.prompt_tokens, row.completion_tokens, row.total_tokens)
    right = [Text(f"{n:,}", justify="right") for n in numbers]
    return (*right, Text(rg_text(row.rg), justify="right"), _flags(row), row.origin.rsplit("/", 1)[-1])


class ExampleTable(DataTable):
    """The examples of one split; it keeps the selected example selected through sorts."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)
        self.sort_column = "index"
        self.descending = False
        self.examples: list[ExampleRow] = []  # the rows shown, in table order
        self._split = ""

    def next_sort(self) -> None:
        names = list(SORTS)
        self.sort_column = names[(names.index(self.sort_column) + 1) % len(names)]

    def flip_order(self) -> None:
        self.descending = not self.descending

    def example_at(self, row: int) -> int | None:
        """The example index shown in table row ``row``."""
        return self.examples[row].index if 0 <= row < len(self.examples) else None

    def show_split(self, split: str, shown: Sequence[ExampleRow], total: int) -> str:
        """Show the first rows of a split in the chosen order (:func:`sorted_rows`, cut to
        :data:`ROW_LIMIT`; ``total`` rows in all), with the example selected before still selected
        (the first one otherwise); returns the line that says what is shown."""
        shown = list(shown)
        selected = self.example_at(self.cursor_row) if self._split == split else None
        self.examples, self._split = shown, split
        arrow = " ↓" if self.descending else " ↑"
        self.clear(columns=True)
        for column in COLUMNS:
            self.add_column(column + (arrow if column == self.sort_column else ""), key=column)
        self.add_rows(row_cells(row) for row in shown)
        if shown:
            self.move_cursor(row=next((i for i, row in enumerate(shown) if row.index == selected), 0))
        order = "descending" if self.descending else "ascending"
        limit = f"the first {len(shown):,} of {total:,}" if len(shown) < total else f"all {total:,}"
        return f"{split}: {limit} examples, sorted by {self.sort_column} {order} · s sort column · o order · n/p step"
