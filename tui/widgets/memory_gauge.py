"""A titled memory gauge: a reading such as ``MLX active  1.2 / 24.0 GB  5%`` above a bar.

Running out of unified memory is the commonest way a fine-tuning run on a Mac dies, so the
gauge makes "close to the limit" visible at a glance: it gets the ``-warn`` class above 75%
of the total and ``-danger`` above 90%, and the stylesheet colours the bar from those.
The bar is drawn from line characters at whole-cell steps, so it renders the same way on
every terminal and in snapshot tests.
"""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

WARN_ABOVE = 0.75
DANGER_ABOVE = 0.90
FILLED = "━"
TRACK = "─"  # a thinner line, so the fill still reads without colour


class MemoryGauge(Widget):
    """A reading line and a bar line, both redrawn by :meth:`update_gauge`."""

    COMPONENT_CLASSES = {"memory-gauge--title", "memory-gauge--bar", "memory-gauge--track"}

    DEFAULT_CSS = """
    MemoryGauge {
        height: 2;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, title: str, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.used = 0.0
        self.total = 0.0
        self.unit = "GB"
        self.detail = ""
        self._has_reading = False

    @property
    def fraction(self) -> float:
        """Used over total, or 0 when the total is unknown."""
        return self.used / self.total if self.total > 0 else 0.0

    def update_gauge(self, used: float, total: float, unit: str = "GB", detail: str = "") -> None:
        """Show a new reading; ``detail`` is extra text for the end of the line (e.g. a peak)."""
        self.used, self.total, self.unit, self.detail = used, total, unit, detail
        self._has_reading = True
        self.set_class(WARN_ABOVE < self.fraction <= DANGER_ABOVE, "-warn")
        self.set_class(self.fraction > DANGER_ABOVE, "-danger")
        self.refresh()

    def reading(self) -> str:
        """The numbers part of the top line, e.g. ``1.2 / 24.0 GB  5%``."""
        if not self._has_reading:
            return "—"
        if self.total <= 0:
            text = f"{self.used:.1f} {self.unit}"
        else:
            text = f"{self.used:.1f} / {self.total:.1f} {self.unit}  {self.fraction:.0%}"
        return f"{text}  {self.detail}" if self.detail else text

    def render(self) -> Content:
        width = self.content_size.width
        filled = round(width * min(self.fraction, 1.0))
        return Content.assemble(
            (self.title, self.get_visual_style("memory-gauge--title")),
            "  ",
            self.reading(),
            "\n",
            (FILLED * filled, self.get_visual_style("memory-gauge--bar")),
            (TRACK * (width - filled), self.get_visual_style("memory-gauge--track")),
        )
