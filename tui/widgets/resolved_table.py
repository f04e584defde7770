"""Every resolved config value with where it came from, fitted to the width it is given.

Where the panel is wide enough the table shows key, value and source; where it is not (80
columns) it shows key and value, or key and source (``show_sources``, ctrl+r on the Config
screen), so the source can always be read rather than cut to nothing. Sources name files
without their folders: the file name and line are what a reader needs.
"""

from __future__ import annotations

import re

from textual.widgets import DataTable

FOLDERS = re.compile(r"[^\s(]*/")
MIN_VALUE_WIDTH = 10  # the three columns show where the value column gets this much


def _cut(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


class ResolvedTable(DataTable):
    """(key, value, source) rows, refilled by ``fill`` for the width available."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.rows_shown: list[tuple[str, str, str]] = []
        self.show_sources = False  # the narrow layout: sources instead of values

    def show(self, rows: list[tuple[str, str, str]], width: int) -> None:
        self.rows_shown = [(key, value, FOLDERS.sub("", source)) for key, value, source in rows]
        self.fill(width)

    def toggle_sources(self, width: int) -> None:
        self.show_sources = not self.show_sources
        self.fill(width)

    def fill(self, width: int) -> None:
        """Lay the rows out in ``width`` cells (2 cells of padding per column)."""
        rows = self.rows_shown
        key_w = min(22, max((len(k) for k, _, _ in rows), default=3), max(12, width - 18))
        from_room = width - key_w - 6 - MIN_VALUE_WIDTH
        three = from_room >= 10
        from_w = min(from_room, max((len(s) for _, _, s in rows), default=4)) if three else 0
        value_w = width - key_w - from_w - 6 if three else max(6, width - key_w - 4)
        if three:
            shown = [("value", value_w, 1), ("from", from_w, 2)]
        else:
            shown = [("from", value_w, 2)] if self.show_sources else [("value", value_w, 1)]
        self.clear(columns=True)
        self.add_column("key", width=key_w, key="key")
        for label, size, _ in shown:
            self.add_column(label, width=size, key=label)
        for row in rows:
            self.add_row(_cut(row[0], key_w), *(_cut(row[i], size) for _, size, i in shown), key=row[0])
