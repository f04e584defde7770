"""A large plotext chart of one series, picked from a list; Escape closes it.

The chart stays live while it is open: it holds the Train screen's own bounded histories (which
the event loop appends to, as this screen reads them, so nothing races) and redraws twice a
second when the series shown has a new point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual_plotext import PlotextPlot

from ..plot_points import thinned

REDRAW_SECONDS = 0.5  # at most this often: plotting thousands of points costs the event loop


class ChartScreen(ModalScreen):
    BINDINGS = [Binding("escape,c,q", "dismiss", "Close", id="chart-close")]

    def __init__(self, series: Mapping[str, Sequence[tuple[int, float]]]):
        super().__init__()
        self.series = series  # title -> (step, value) points, still growing while the run goes on
        self.shown: str | None = None
        self.drawn: tuple[int, tuple[int, float] | None] = (0, None)  # (points, last point) when drawn

    def compose(self) -> ComposeResult:
        with Horizontal(id="chart-box"):
            yield OptionList(*self.series, id="chart-series")
            yield PlotextPlot(id="chart-plot")

    def on_mount(self) -> None:
        self.query_one(OptionList).highlighted = 0
        self.query_one(OptionList).focus()
        self.set_interval(REDRAW_SECONDS, self.redraw_if_new)

    def on_option_list_option_highlighted(self, message: OptionList.OptionHighlighted) -> None:
        self.plot(str(message.option.prompt))

    def _state(self, name: str) -> tuple[int, tuple[int, float] | None]:
        points = self.series[name]
        return len(points), (points[-1] if points else None)

    def redraw_if_new(self) -> None:
        """Plot the shown series again if a point came since it was drawn."""
        if self.shown is not None and self._state(self.shown) != self.drawn:
            self.plot(self.shown)

    def plot(self, name: str) -> None:
        self.shown, self.drawn = name, self._state(name)
        points = thinned([(s, v) for s, v in self.series[name] if math.isfinite(v)], self.size.width)
        plt = self.query_one(PlotextPlot).plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(name)
        plt.xlabel("step")
        if points:
            plt.plot([s for s, _ in points], [v for _, v in points], marker="braille")
        self.query_one(PlotextPlot).refresh()
