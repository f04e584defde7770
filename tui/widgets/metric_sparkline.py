"""A titled time series (loss, learning rate, tokens/s) drawn as a sparkline.

Training metrics arrive one step at a time, can diverge to NaN or inf, and a run can last
for hours, so the history is bounded and non-finite values are kept off the chart (they
crash Textual's sparkline renderer) while still being shown, in a warning style, as the
latest reading.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Label, Sparkline

NO_VALUE = "—"


class MetricSparkline(Widget):
    """A title line such as ``train loss  2.345`` above a sparkline of recent values.

    The widget gets the ``-bad`` class while its latest value is NaN or infinite.
    """

    DEFAULT_CSS = """
    MetricSparkline {
        height: auto;
        & > .header { height: 1; }
        & .title { width: 1fr; }
        & .value { width: auto; }
        & Sparkline { height: 3; }
    }
    """

    def __init__(
        self,
        title: str,
        *,
        fmt: str = ".3f",
        maxlen: int = 240,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.fmt = fmt
        # Only finite values are kept: they are exactly what the chart can draw.
        self.history: deque[float] = deque(maxlen=maxlen)
        self._latest: float | None = None

    @property
    def latest(self) -> float | None:
        """The last value pushed, finite or not; None before the first one."""
        return self._latest

    def compose(self) -> ComposeResult:
        with Horizontal(classes="header"):
            yield Label(self.title, classes="title")
            yield Label(NO_VALUE, classes="value")
        yield Sparkline(())

    def retitle(self, title: str) -> None:
        """Name the series anew (answer accuracy falls back to completion accuracy for plain text)."""
        if title != self.title:
            self.title = title
            if self.children:
                self.query_one(".title", Label).update(title)

    def push(self, value: float) -> None:
        """Add one reading, e.g. the loss of the step that just finished."""
        self.push_many((value,))

    def push_many(self, values: Iterable[float]) -> None:
        """Add many readings with a single redraw, e.g. when loading a finished run."""
        pushed = False
        for value in values:
            value = float(value)
            self._latest = value
            pushed = True
            if math.isfinite(value):
                self.history.append(value)
        if pushed:
            self._show()

    def reset(self) -> None:
        """Forget every reading, e.g. when a new run starts."""
        self.history.clear()
        self._latest = None
        self._show()

    def _show(self) -> None:
        if not self.children:
            return  # not composed yet: on_mount shows what was pushed before it
        latest = self._latest
        text = NO_VALUE if latest is None else format(latest, self.fmt)
        self.query_one(".value", Label).update(text)
        self.set_class(latest is not None and not math.isfinite(latest), "-bad")
        # A new tuple each time: the reactive ignores a mutated object it already holds.
        self.query_one(Sparkline).data = tuple(self.history)

    def on_mount(self) -> None:
        self._show()
