"""F1: every key of the current screen and of the app, in a box that scrolls.

Textual's own key panel lists the focused widget's navigation keys first (scroll up, page left …)
and, at 80×24, cuts the screen's own keys off below them with no way to scroll. This modal lists
what a user came for: the screen's help text, its keys (those that do nothing at the moment say
when they work), then the keys that work everywhere. The keys come from the live bindings, so a
remapped key (``keymap`` in settings.json) shows as remapped, with its id to remap it by.
"""

from __future__ import annotations

import re

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.keys import key_to_character
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

# always on, not worth a line: the command palette and Textual's own system keys are listed apart
NOT_LISTED = {"command_palette"}
EXTRA_GLOBAL = (("^p", "Command palette: training actions, screens, themes"),)


def _markup(help_text: str) -> Text:
    """The screens' HELP strings are small Markdown (**bold**, `code`, bullets, wrapped lines):
    shown as Rich text with the source's line breaks undone, so the box wraps them."""
    lines: list[str] = []
    for line in help_text.strip().splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        if lines and lines[-1] and line and not line.startswith("- "):
            lines[-1] += " " + line
        else:
            lines.append(line)
    text = "\n".join(lines).strip().replace("[", r"\[")
    return Text.from_markup(re.sub(r"\*\*(.+?)\*\*|`(.+?)`", lambda m: f"[b]{m[1] or m[2]}[/b]", text))


def _rows(node, screen: Screen) -> list[tuple[str, str, str, bool]]:
    """``(keys, what it does, binding id, works now)`` per action of ``node``'s bindings.

    Keys of one action share a row (``1 alt+1``); the characters macOS's option+digit types,
    bound only to catch alt+digit, are left out.
    """
    keys: dict[str, list[str]] = {}
    about: dict[str, Binding] = {}
    bindings_map = node._bindings.copy()  # as Textual's own Screen._binding_chain does
    bindings_map.apply_keymap(screen.app._keymap)
    for key, bindings in bindings_map.key_to_bindings.items():
        for binding in bindings:
            if binding.action in NOT_LISTED or binding.system:
                continue
            if (key_to_character(key) or "a").isascii():
                keys.setdefault(binding.action, []).append(screen.app.get_key_display(Binding(key, "")))
            if binding.tooltip or binding.description:
                about.setdefault(binding.action, binding)
    return [(" ".join(keys[action]), binding.tooltip or binding.description, binding.id or "", _works(node, binding))
            for action, binding in about.items() if keys.get(action)]


def _works(node, binding: Binding) -> bool:
    action = binding.action
    target = node
    if action.startswith("app."):
        target, action = node.app, action[4:]
    name, _, args = action.partition("(")
    parameters = tuple(a.strip(" '\"") for a in args.rstrip(")").split(",")) if args else ()
    return target.check_action(name, parameters) is True


class KeysScreen(ModalScreen):
    """The keys of ``screen`` and of the app; F1, esc or q closes."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close", id="keys-close")]
    DEFAULT_CSS = """
    KeysScreen { align: center middle; }
    #keys-box {
        width: 90%;
        height: 90%;
        max-width: 110;
        background: $surface;
        border: round $primary;
        padding: 0 1;
    }
    """

    def __init__(self, screen: Screen) -> None:
        super().__init__()
        self.shown_screen = screen

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="keys-box"):
            yield Static(self.listing(), id="keys-text")

    def on_mount(self) -> None:
        box = self.query_one("#keys-box", VerticalScroll)
        box.border_title = f"keys · {self.shown_screen.BINDING_GROUP_TITLE or 'this screen'}"
        box.border_subtitle = "↑↓ PgUp PgDn scroll · F1 or esc closes"
        box.focus()

    def listing(self) -> Group:
        """The help text, then a table of keys per section."""
        screen = self.shown_screen
        parts: list = []
        help_text = getattr(screen, "HELP", None)
        if help_text:
            parts.append(_markup(help_text))
        global_rows = _rows(self.app, screen) + [(k, what, "", True) for k, what in EXTRA_GLOBAL]
        for heading, rows in (("This screen", _rows(screen, screen)), ("Everywhere", global_rows)):
            parts.append(Text(f"\n{heading}", style="bold underline"))
            table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
            table.add_column(justify="right", no_wrap=True)
            table.add_column(ratio=1)
            table.add_column(style="dim", no_wrap=True)
            for keys, what, binding_id, works in rows:
                style = "" if works else "dim"
                table.add_row(Text(keys, style="bold " + style), Text(what + ("" if works else " (not now)"), style=style),
                              binding_id)
            parts.append(table)
        parts.append(Text("\nRemap a key by its id (right column) in settings.json: "
                          '{"keymap": {"train-start": "T"}}', style="dim"))
        return Group(*parts)
