"""A large plotext chart of one series, picked from a list; Escape closes it.

The data is a snapshot taken when the chart opens, so plotting never races the live run.
"""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual_plotext import PlotextPlot


class ChartScreen(ModalScreen):
    BINDINGS = [Binding("escape,c,q", "dismiss", "Close", id="chart-close")]

    def __init__(self, series: dict[str, list[tuple[int, float]]]):
        super().__init__()
        self.series = series

    def compose(self) -> ComposeResult:
        with Horizontal(id="chart-box"):
            yield OptionList(*self.series, id="chart-series")
            yield PlotextPlot(id="chart-plot")

    def on_mount(self) -> None:
        self.query_one(OptionList).highlighted = 0
        self.query_one(OptionList).focus()

    def on_option_list_option_highlighted(self, message: OptionList.OptionHighlighted) -> None:
        self.plot(str(message.option.prompt))

    def plot(self, name: str) -> None:
        points = [(s, v) for s, v in self.series[name] if math.isfinite(v)]
        plt = self.query_one(PlotextPlot).plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(name)
        plt.xlabel("step")
        if points:
            plt.plot([s for s, _ in points], [v for _, v in points], marker="braille")
        self.query_one(PlotextPlot).refresh()
