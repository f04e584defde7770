"""Several runs' curves of one series on one plot, one colour per run, linear or log y.

The screen hands over ready (x, y) lines; this widget only thins them to its width and draws.
A log y axis is drawn as log10 of the values with the ticks labelled in the values themselves,
so the ticks stay on evenly spaced rows as the loss chart's do.
"""

from __future__ import annotations

import math
from typing import Sequence

from rich.color import Color
from textual_plotext import PlotextPlot

from ..plot_points import thinned
from .loss_chart import y_axis

# one xterm-256 colour per run, in the order the runs were opened, so a run keeps its colour;
# plotext takes the number, Rich styles its hex value. (plotext's named "orange" is ANSI yellow.)
COLOURS = (51, 208, 46, 201, 226, 33, 196, 255, 141, 118, 87, 205, 172, 39, 250, 229)


def rich_colour(run: int) -> str:
    return Color.from_ansi(COLOURS[run % len(COLOURS)]).get_truecolor().hex


class CompareChart(PlotextPlot):
    """One line per run; ``show`` again redraws."""

    _lines: list[Sequence[tuple[float, float]]] | None = None
    _log = False
    _x_label = "step"

    def show(self, lines: list[Sequence[tuple[float, float]]], log: bool = False, x_label: str = "step") -> None:
        """Draw ``lines`` (per run, in run order: (x, y) points in x order); non-positive values
        are left out of a log plot."""
        self._lines, self._log, self._x_label = lines, log, x_label
        plt = self.plt
        plt.clear_data()
        plt.xlabel(x_label)
        values: list[float] = []
        for i, points in enumerate(lines):
            if log:
                points = [(x, math.log10(y)) for x, y in points if y > 0]
            if not points:
                continue
            xs, ys = zip(*thinned(points, self.size.width))
            values += ys
            plt.plot(xs, ys, marker="braille", color=COLOURS[i % len(COLOURS)])
        if values:
            limits, ticks, labels = y_axis(min(values), max(values), self.size.height - 4)
            if log:
                labels = [f"{10 ** t:.3g}" for t in ticks]
            plt.ylim(*limits)
            plt.yticks(ticks, labels)
        self.refresh()

    def on_resize(self) -> None:
        if self._lines is not None:
            self.show(self._lines, self._log, self._x_label)
