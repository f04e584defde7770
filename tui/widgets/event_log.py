"""The Train screen's event log: every line wrapped inside the box, whatever its width.

Textual's RichLog wraps a line once, when it is written, and never narrower than its
``min_width`` (78 columns by default). The Train screen's log is 43 columns wide at 80×24, so the
middle of every line lay outside the box and the final "completed … adapters: …" line was cut.
This log wraps at the width it has, keeps the plain lines (bounded) to wrap them again when its
width changes, and follows new lines only while the reader is at the end, so scrolling back to
read an older line is not undone by the next step's line.
"""

from __future__ import annotations

from collections import deque

from textual.events import Resize
from textual.widgets import RichLog


class EventLog(RichLog):
    """A RichLog of plain lines, written with :meth:`add`."""

    DEFAULT_CSS = """
    EventLog {
        scrollbar-gutter: stable;  /* the wrap width stays the same when the scrollbar appears */
        overflow-x: hidden;
    }
    """

    def __init__(self, max_lines: int, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=max_lines, wrap=True, markup=False, min_width=1, auto_scroll=False)
        self.texts: deque[str] = deque(maxlen=max_lines)
        self._wrapped_at = 0  # the width the lines were wrapped at, 0 before the first layout

    def add(self, line: str) -> None:
        """Append one line; follow it only if the reader was at the end."""
        self.texts.append(line)
        self.write(line, scroll_end=self.is_vertical_scroll_end)

    def on_resize(self, event: Resize) -> None:
        """Wrap the kept lines again at a new width (RichLog's own handler then writes the lines
        that came before the first layout)."""
        width = event.size.width
        if self._wrapped_at and width != self._wrapped_at:
            at_end = self.is_vertical_scroll_end
            self.clear()
            for line in self.texts:
                self.write(line, scroll_end=False)
            if at_end:
                self.scroll_end(animate=False, immediate=False)
        self._wrapped_at = width
