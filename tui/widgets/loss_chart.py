"""Losses against step, drawn by plotext, with a y axis whose labels sit on evenly spaced rows
and a legend kept out of the plot (:func:`legend`, a line for the screen to show above it)."""

from __future__ import annotations

import math
from typing import Sequence

from textual_plotext import PlotextPlot

from ..plot_points import thinned

# (series, plotext colour, Rich colour) of the chart; the legend is a line of its own above the
# plot, since plotext's legend box covers the first points
SERIES = (("train loss", "cyan", "cyan"), ("valid completion", "green", "green"),
          ("valid prompt", "magenta", "magenta"))


class LossChart(PlotextPlot):
    """Losses against step for one run, with y labels on evenly spaced rows."""

    _series: dict[str, Sequence[tuple[int, float]]] | None = None

    def show(self, series: dict[str, Sequence[tuple[int, float]]]) -> None:
        """Draw ``series`` (name -> (step, value) points, in the order of SERIES)."""
        self._series = series
        plt = self.plt
        plt.clear_data()  # plotext keeps old series until cleared, and a crowded figure takes seconds to build
        plt.xlabel("step")
        values = []
        for (_, color, _), points in zip(SERIES, series.values()):
            if points:
                steps, ys = zip(*thinned(points, self.size.width))
                values += ys
                plt.plot(steps, ys, marker="braille", color=color)
        if values:
            limits, ticks, labels = y_axis(min(values), max(values), self.size.height - 4)  # less the frame and x axis
            plt.ylim(*limits)
            plt.yticks(ticks, labels)
        self.refresh()

    def on_resize(self) -> None:
        if self._series is not None:  # the ticks depend on the height
            self.show(self._series)


def y_axis(low: float, high: float, rows: int) -> tuple[tuple[float, float], list[float], list[str]]:
    """The y limits, and ticks on rows equally far apart in a plot ``rows`` high, labelled with
    equal decimals: plotext's own ticks land on whichever rows they round to, unevenly.

    The limits are the data's, so the bottom row is ``low`` and the top row ``high``; a tick
    every ``spacing`` rows from the bottom, the top one too where the rows divide evenly.
    """
    if high - low < 1e-12:
        pad = max(abs(high) * 0.05, 1e-3)
        low, high = low - pad, high + pad
    gaps = max(rows - 1, 1)
    spacing = next((gaps // parts for parts in (4, 3, 5, 2) if gaps % parts == 0 and gaps // parts >= 2),
                   max(2, -(-gaps // 4)))
    per_row = (high - low) / gaps
    ticks = [low + row * per_row for row in range(0, gaps + 1, min(spacing, gaps))]
    decimals = max(0, min(6, 1 - math.floor(math.log10(per_row * spacing))))
    return (low, high), ticks, [f"{t:.{decimals}f}" for t in ticks]


def legend() -> str:
    return "   ".join(f"[{rich}]━━[/] {label}" for label, _, rich in SERIES)
