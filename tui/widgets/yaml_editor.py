"""The Config screen's YAML editor: a TextArea that keeps keys in order and marks error lines.

Textual runs a focused widget's key *bindings* (arrows, backspace, home ...) only once the key
event has bubbled up to the app, one message queue per parent, while a TextArea inserts a typed
character at once. In a burst of keys (fast typing over SSH, a paste of keystrokes) a character
therefore overtook the arrows sent before it (issue 21, point 7). This editor runs its own
bindings as soon as the key reaches it, so every key acts in the order it was sent.

Terminals send alt+1..4 as ESC and a digit, which Textual 8 reads as the characters macOS's
option+digit types (¡ ™ £ ¢). A TextArea claims every printable key, which hides the app's
bindings for them, so the editor leaves those four to the app (they switch screens).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import NoBinding
from textual.color import Color
from textual.widgets import TextArea

from themes import editor_theme


SCREEN_KEYS = frozenset("¡™£¢")  # alt+1..4 as Textual reads ESC 1..4


class YamlEditor(TextArea):
    """A code editor whose bindings run in key order, with ``error_lines`` (0-based) highlighted."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._error_lines: frozenset[int] = frozenset()

    def on_mount(self) -> None:
        """Take the app theme's editor colours, now and whenever the theme changes (the syntax
        colours are the TextArea's own theme, which Textual's themes do not set)."""
        self.theme = editor_theme(self.app)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: setattr(self, "theme", editor_theme(self.app)))

    async def _on_key(self, event: events.Key) -> None:
        try:
            bindings = self._bindings.get_bindings_for_key(event.key)
        except NoBinding:
            await super()._on_key(event)
            return
        event.stop()
        event.prevent_default()
        await self.run_action(bindings[0].action)

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
