"""A histogram of counts that the engine has already binned, drawn with plotext.

The engine bins a split once (it may hold 100k examples), so this widget only draws one bar
per bin and stays fast whatever the dataset size. plotext keeps every series it was given
until told otherwise, and a figure holding old data can take seconds to build on the event
loop, so every ``show`` starts from a cleared figure.

Two things plotext's own ``bar`` gets wrong are done here instead. It draws an empty bin as a
rectangle of blanks along the bottom row, which erases its neighbours' bottom cells (the bottom
row looked narrower than the one above), so each non-empty bin is drawn as a filled rectangle and
empty ones not at all. And it places y ticks on the nearest row, so round ticks land unevenly
spaced; here the y range is chosen for the plot's height so that every tick falls on a row the
same number of rows apart (:func:`even_ticks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.color import Color
from textual_plotext import PlotextPlot

MAX_TICKS = 6
CHROME_ROWS = 4  # the title, the frame's top and bottom lines and the x labels: the rest is plot rows


class Histogram(PlotextPlot):
    """Bars over bin edges, with an optional vertical marker such as ``max_seq_length``.

    The x axis spans the bins only: a marker beyond them is not drawn, because stretching the
    axis to reach it would squeeze the bars into a corner.

    With ``log_x`` the edges are log10 values (as the engine bins ratios) and the axis is
    labelled in plain numbers at round values; the marker is always given in plain numbers.
    Bar and marker colours follow the app theme, so the plot is redrawn when it changes.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._shown: tuple | None = None
        self._label_width = 1  # of the widest count on the y axis, which plotext keeps from the title
        self._y_for: tuple[int, int] | None = None  # (highest count, plot rows) the y axis was laid out for

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._draw())

    def show(
        self,
        bin_edges: Sequence[float],
        bin_counts: Sequence[int],
        title: str,
        marker: float | None = None,
        log_x: bool = False,
    ) -> None:
        self._shown = (tuple(bin_edges), tuple(bin_counts), title, marker, log_x)
        self._draw()

    def _draw(self) -> None:
        if self._shown is None:
            return
        edges, counts, _title, marker, log_x = self._shown
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        self._y_for = None
        if marker is not None and log_x:
            marker = math.log10(marker) if marker > 0 else None
        if sum(counts) and len(edges) == len(counts) + 1:
            colour = self._colour("primary")
            for low, high, count in zip(edges, edges[1:], counts):
                if count:
                    plt.rectangle([low, high], [0, count], marker="sd", color=colour, fill=True)
            low, high = edges[0], edges[-1]
            if marker is not None and low <= marker <= high:
                plt.vline(marker, self._colour("error"))
            plt.xlim(low, high)
            plt.xticks(*(_log_ticks if log_x else _ticks)(low, high))
        self.refresh()

    def render(self):
        """plotext leaves out a title wider than its plot area, so a long one is shortened; the
        y axis is laid out here because it depends on the height."""
        if self._shown is not None:
            self._lay_out_y(max(self._shown[1], default=0))
            title, room = self._shown[2], max(1, self.size.width - self._label_width)
            self.plt.title(title if len(title) <= room else title[: room - 1] + "…")
        return super().render()

    def _lay_out_y(self, highest: int) -> None:
        rows = self.size.height - CHROME_ROWS
        if highest <= 0 or rows < 2 or self._y_for == (highest, rows):
            return
        self._y_for = (highest, rows)
        ticks = even_ticks(highest, rows - 1)
        self.plt.ylim(0, ticks[-1])
        self.plt.yticks(ticks, [f"{tick:,}" for tick in ticks])
        self._label_width = len(f"{ticks[-1]:,}")

    def _colour(self, variable: str) -> tuple[int, int, int]:
        return Color.parse(self.app.theme_variables[variable]).rgb


def even_ticks(highest: int, steps: int) -> list[int]:
    """Whole-number y ticks from 0 to at least ``highest`` for a plot of ``steps`` + 1 rows, each
    on a row and the same number of rows apart.

    The number of intervals divides ``steps`` (at most ``MAX_TICKS`` - 1 of them, the most that
    fit), and the step is rounded up to two significant digits, so the labels stay short while the
    tallest bar still reaches most of the height.
    """
    intervals = max((k for k in range(1, min(steps, MAX_TICKS - 1) + 1) if steps % k == 0), default=1)
    intervals = min(intervals, highest)  # no more ticks than counts: 0, 1, 2 rather than 0, 0.5, 1
    while steps % intervals:
        intervals -= 1
    step = math.ceil(highest / intervals)
    power = 10 ** max(0, len(str(step)) - 2)
    step = math.ceil(step / power) * power
    return [k * step for k in range(intervals + 1)]


def _ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Round ticks (multiples of 1, 2 or 5 times a power of ten), at most ``MAX_TICKS`` of them."""
    span = high - low
    if span <= 0:
        return [low], [f"{low:g}"]
    power = 10 ** math.floor(math.log10(span / MAX_TICKS))
    step = next(power * m for m in (1, 2, 5, 10) if span / (power * m) <= MAX_TICKS)
    ticks = [k * step for k in range(math.ceil(low / step), math.floor(high / step) + 1)]
    return ticks, [f"{tick:g}" for tick in ticks]


def _log_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Ticks at 1, 2 and 5 times the powers of ten inside a log10 range, or at the powers alone
    when those would be too many; the range's ends join in when fewer than two fall inside."""
    for factors in ((1, 2, 5), (1,)):
        values = [m * 10.0**k for k in range(math.floor(low), math.ceil(high) + 1) for m in factors]
        ticks = [math.log10(v) for v in values if low <= math.log10(v) <= high]
        if len(ticks) <= MAX_TICKS:
            break
    if len(ticks) < 2:
        ticks = sorted({low, *ticks, high})
    return ticks, [f"{float(f'{10**tick:.2g}'):g}" for tick in ticks]
