"""One pane of the Playground: a conversation with one set of weights. Earlier turns stay (the
user's dimmed, after "you ›"), the latest answer streams in below; the weights as the border's
title, how the last answer ended (tokens, speed) as its subtitle.

Bounded: a runaway answer keeps its last ``LIMIT`` characters and the pane its last ``MOST_LINES``
widgets. Each turn is its own Static, so a streaming update redraws the new answer only (the
worker throttles them to a few a second).
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.playground.chat import Turn

LIMIT = 60_000  # characters of one answer shown; max tokens keeps answers far shorter in practice
MOST_LINES = 120  # widgets kept (a user line and an answer per turn, notes): the chat is bounded too

ENDINGS = {"stop": "ended", "length": "max tokens", "stopped": "stopped"}


class AnswerView(VerticalScroll):
    """A scrolling box holding one conversation; ``text`` is its latest answer so far."""

    DEFAULT_CSS = """
    AnswerView { border: round $primary-darken-2; height: 1fr; padding: 0 1; }
    AnswerView > Static { width: 1fr; }
    AnswerView > .user { color: $text-muted; text-style: italic; margin-top: 1; }
    AnswerView > .user.first { margin-top: 0; }
    AnswerView > .note { color: $warning; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = title
        self.text = ""
        self._answer: Static | None = None

    def new_chat(self, turns: Iterable[Turn] = (), note: str = "") -> None:
        """Empty the pane for a new chat: ``note`` says why, ``turns`` are the earlier turns it
        starts from (a validation record's)."""
        self.remove_children()
        self.text, self._answer, self.border_subtitle = "", None, ""
        if note:
            self._add(Static(note, classes="note", markup=False))
        for turn in turns:
            self._user(turn.user)
            self._add(Static(turn.assistant, markup=False))

    def say(self, note: str) -> None:
        """A line about the chat itself (earlier turns dropped), between its turns."""
        self._add(Static(note, classes="note", markup=False))

    def start(self, title: str, question: str) -> None:
        """A new turn: ``question`` asked of the weights ``title`` names; its answer follows."""
        self.border_title, self.border_subtitle, self.text = title, "generating …", ""
        self._user(question)
        self._answer = self._add(Static("", markup=False))

    def add(self, text: str, tokens: int) -> None:
        self.text = (self.text + text)[-LIMIT:]
        if self._answer is not None:
            self._answer.update(self.text)
        self.border_subtitle = f"{tokens} tokens …"
        self.scroll_end(animate=False)

    def finish(self, finished) -> None:
        """How the answer ended (an :class:`engine.playground.stream.Finished`)."""
        self.border_subtitle = (f"{ENDINGS.get(finished.reason, finished.reason)}: {finished.tokens} tokens, "
                                f"{finished.tokens_per_second:.1f}/s")

    def shown_text(self) -> str:
        """The conversation as shown, one widget a line (what a test reads)."""
        return "\n".join(str(child.content) for child in self.children if isinstance(child, Static))

    def _user(self, question: str) -> None:
        first = not any(isinstance(child, Static) for child in self.children)
        self._add(Static(f"you › {question}", classes="user first" if first else "user", markup=False))

    def _add(self, widget: Static) -> Static:
        self.mount(widget)
        extra = len(self.children) - MOST_LINES
        if extra > 0:
            for old in list(self.children)[:extra]:
                old.remove()
        self.scroll_end(animate=False)
        return widget
