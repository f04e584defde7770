"""One answer of the Playground, streamed in: the weights that wrote it as the border's title, the
text as it grows, and how it ended (tokens, speed) as the border's subtitle.

Bounded: a runaway answer keeps its last ``LIMIT`` characters. Updates come a few tokens at a time
(the worker throttles them), each redrawing the text once.
"""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.widgets import Static

LIMIT = 60_000  # characters shown; max tokens keeps answers far shorter in practice

ENDINGS = {"stop": "ended", "length": "max tokens", "stopped": "stopped"}


class AnswerView(VerticalScroll):
    """A scrolling box holding one answer."""

    DEFAULT_CSS = """
    AnswerView { border: round $primary-darken-2; height: 1fr; padding: 0 1; }
    AnswerView > Static { width: 1fr; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = title
        self.text = ""
        self._body = Static("", markup=False)

    def compose(self):
        yield self._body

    def start(self, title: str) -> None:
        """A new answer from the weights ``title`` names: the old one goes."""
        self.border_title, self.border_subtitle, self.text = title, "generating …", ""
        self._body.update("")

    def add(self, text: str, tokens: int) -> None:
        self.text = (self.text + text)[-LIMIT:]
        self._body.update(self.text)
        self.border_subtitle = f"{tokens} tokens …"
        self.scroll_end(animate=False)

    def finish(self, finished) -> None:
        """How the answer ended (an :class:`engine.playground.stream.Finished`)."""
        self.border_subtitle = (f"{ENDINGS.get(finished.reason, finished.reason)}: {finished.tokens} tokens, "
                                f"{finished.tokens_per_second:.1f}/s")
