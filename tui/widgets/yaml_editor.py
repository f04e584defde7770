"""The Config screen's YAML editor: a TextArea that keeps keys in order and marks error lines.

Its bindings run in the order their keys were sent, ahead of the characters typed after them
(see :mod:`tui.widgets.keys_in_order`, issue 21 point 7).

Terminals send alt+1..4 as ESC and a digit, which Textual 8 reads as the characters macOS's
option+digit types (¡ ™ £ ¢). A TextArea claims every printable key, which hides the app's
bindings for them, so the editor leaves those four to the app (they switch screens).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widgets import TextArea

from themes import editor_theme

from .keys_in_order import KeysInOrder


SCREEN_KEYS = frozenset("¡™£¢∞")  # alt+1..5 as Textual reads ESC 1..5


class YamlEditor(KeysInOrder, TextArea):
    """A code editor whose bindings run in key order, with ``error_lines`` (0-based) highlighted."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._error_lines: frozenset[int] = frozenset()

    def on_mount(self) -> None:
        """Take the app theme's editor colours, now and whenever the theme changes (the syntax
        colours are the TextArea's own theme, which Textual's themes do not set)."""
        self.theme = editor_theme(self.app)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: setattr(self, "theme", editor_theme(self.app)))

    def check_consume_key(self, key: str, character: str | None) -> bool:
        if character in SCREEN_KEYS:
            return False
        return super().check_consume_key(key, character)

    @property
    def error_lines(self) -> frozenset[int]:
        return self._error_lines

    @error_lines.setter
    def error_lines(self, lines) -> None:
        lines = frozenset(lines)
        if lines != self._error_lines:
            self._error_lines = lines
            self.notify_style_update()  # the line cache does not know about the marks
            self.refresh()

    def get_line(self, line_index: int) -> Text:
        line = super().get_line(line_index)
        if line_index in self._error_lines:
            theme = self.app.current_theme
            background = Color.parse(theme.background or "black")
            mark = background.blend(Color.parse(theme.error or "red"), 0.45)
            line.stylize(Style(bgcolor=mark.rich_color, underline=True))
            if not line.plain:
                line.append(" ", Style(bgcolor=mark.rich_color))  # an empty line shows its mark too
        return line
