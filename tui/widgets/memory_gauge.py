"""A titled memory gauge: a reading such as ``MLX active  1.2 / 24.0 GB  5%`` above a bar.

Running out of unified memory is the commonest way a fine-tuning run on a Mac dies, so the
gauge makes "close to the limit" visible at a glance: it gets the ``-warn`` class above 75%
of the total and ``-danger`` above 90%, and the stylesheet colours the bar from those.
The bar is drawn from line characters at whole-cell steps, so it renders the same way on
every terminal and in snapshot tests.

A small run's own memory is a sliver of the machine's (30 MB of 24 GB), which reads "0.0 GB 0%"
and never moves the bar. So readings under 1 GB are given in MB with the share of the machine
beside them, and a ``zoom`` gauge (the process' own figures) draws its bar against a round scale
just above the largest reading so far (1, 2, 5 × 10ⁿ MB, marked at the bar's end), so a user sees
it move; the warning colours still follow the share of the total.
"""

from __future__ import annotations

import math

from textual.content import Content
from textual.widget import Widget

WARN_ABOVE = 0.75
DANGER_ABOVE = 0.90
FILLED = "━"
TRACK = "─"  # a thinner line, so the fill still reads without colour
SCALE_TICK = "│"  # the end of a zoomed bar, before its scale


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 × 10ⁿ at or above ``value`` (> 0)."""
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value * (1 - 1e-12))


def amount(value: float, unit: str) -> str:
    """``31 MB`` or ``3.4 MB`` below one GB (MiB below one GiB), else ``1.2 GB``."""
    small = {"GB": "MB", "GiB": "MiB"}.get(unit)
    if small and value < 1:
        mb = value * 1024
        return f"{mb:.1f} {small}" if 0 < mb < 10 else f"{mb:.0f} {small}"
    return f"{value:.1f} {unit}"


def share(fraction: float) -> str:
    """``5%``, ``0.4%`` or ``<0.1%``: a small share still shows it is not nothing."""
    if 0 < fraction < 0.001:
        return "<0.1%"
    return f"{fraction:.1%}" if 0 < fraction < 0.01 else f"{fraction:.0%}"


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

    def __init__(self, title: str, *, zoom: bool = False, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.zoom = zoom  # the bar against a round scale above the largest reading, not the total
        self.largest = 0.0  # the largest reading since the last reset, for the zoomed scale
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
        self.largest = max(self.largest, used)
        self._has_reading = True
        self.set_class(WARN_ABOVE < self.fraction <= DANGER_ABOVE, "-warn")
        self.set_class(self.fraction > DANGER_ABOVE, "-danger")
        self.refresh()

    def reset(self) -> None:
        """Forget the readings, e.g. when a new run starts (its zoomed scale starts afresh)."""
        self.used = self.largest = 0.0
        self._has_reading = False
        self.remove_class("-warn", "-danger")
        self.refresh()

    def reading(self) -> str:
        """The numbers part of the top line, e.g. ``1.2 / 24.0 GB  5%`` or ``31 MB / 24.0 GB  0.1%``."""
        if not self._has_reading:
            return "—"
        used = amount(self.used, self.unit)
        if self.total <= 0:
            text = used
        else:  # the unit once where both figures are in it: 1.2 / 24.0 GB
            text = f"{used.removesuffix(' ' + self.unit)} / {self.total:.1f} {self.unit}  {share(self.fraction)}"
        return f"{text}  {self.detail}" if self.detail else text

    def scale(self) -> float:
        """What a full bar stands for: the total, or for a zoom gauge a round amount above the
        largest reading (never more than the total)."""
        if not self.zoom or self.largest <= 0:
            return self.total
        ceiling = nice_ceiling(self.largest * 1024) / 1024  # round in MB, so 50 MB, not 0.05 GB
        return min(ceiling, self.total) if self.total > 0 else ceiling

    def render(self) -> Content:
        width = self.content_size.width
        scale = self.scale()
        label = f"{SCALE_TICK}{amount(scale, self.unit)}" if scale != self.total else ""
        bar_width = max(width - len(label), 0)
        filled = round(bar_width * min(self.used / scale, 1.0)) if scale > 0 else 0
        return Content.assemble(
            (self.title, self.get_visual_style("memory-gauge--title")),
            "  ",
            self.reading(),
            "\n",
            (FILLED * filled, self.get_visual_style("memory-gauge--bar")),
            (TRACK * (bar_width - filled), self.get_visual_style("memory-gauge--track")),
            (label, self.get_visual_style("memory-gauge--title")),
        )
