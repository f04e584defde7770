"""One tokenised example, token by token, showing what the loss will see.

Reading the raw text does not tell you which tokens are prompt and which are completion,
what weight each gets, where ``max_seq_length`` cuts, or where the chat template put its
special tokens; this view shows all four. Adjacent tokens alternate a faint background so
that token boundaries are visible too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widget import Widget

if TYPE_CHECKING:
    from engine.data.stats import TokenCell


class TokenView(Widget):
    """Renders a list of ``TokenCell`` (text, role, weight, truncated, special) as styled text.

    - prompt tokens are dimmed, completion tokens bold;
    - ``[w=…]`` marks each place where the weight changes (e.g. once per prompt run);
    - tokens cut by ``max_seq_length`` are struck through, after a ``✂`` mark;
    - special tokens are coloured and wrapped in ``‹ ›``;
    - a newline inside a token is drawn as ``↵`` before the line break.

    The styles are component classes, so they follow the app theme; the text is rebuilt on
    every render, which keeps it right after a theme switch. The text colours are taken whole
    (``partial=False``): ``$text-muted`` and ``$text`` are translucent, and only the whole style
    blends them with the background, where a partial one turns both to plain white.
    """

    COMPONENT_CLASSES = {
        "token-view--prompt",
        "token-view--completion",
        "token-view--special",
        "token-view--cut",
        "token-view--mark",
        "token-view--odd",
    }
    DEFAULT_CSS = """
    TokenView {
        height: auto;
        & > .token-view--prompt { color: $text-muted; }
        & > .token-view--completion { color: $text; text-style: bold; }
        & > .token-view--special { color: $accent; }
        & > .token-view--cut { color: $text-disabled; text-style: strike; }
        & > .token-view--mark { color: $warning; text-style: italic; }
        & > .token-view--odd { background: $panel; }  /* opaque: a rich style cannot blend */
    }
    """

    def __init__(self, placeholder: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.placeholder = placeholder
        self.cells: tuple[TokenCell, ...] = ()

    def show(self, cells: Sequence[TokenCell]) -> None:
        self.cells = tuple(cells)
        self.refresh(layout=True)

    def render(self) -> Text:
        if not self.cells:
            return Text(self.placeholder)
        style = self.get_component_rich_style
        odd = style("token-view--odd", partial=True)
        text = Text()
        run = None  # (role, weight) of the tokens before, or "cut" once max_seq_length is passed
        roles = {role: style(f"token-view--{role}") for role in ("prompt", "completion")}
        for position, cell in enumerate(self.cells):
            if cell.truncated and run != "cut":
                text.append(" ✂ ", style("token-view--mark"))
                run = "cut"
            elif not cell.truncated and (cell.role, cell.weight) != run:
                text.append(f"[w={cell.weight:g}]", style("token-view--mark"))
                run = (cell.role, cell.weight)
            look = roles["completion" if cell.role == "completion" else "prompt"]
            shown = cell.text.replace("\n", "↵\n")
            if cell.special:
                look += style("token-view--special", partial=True)
                shown = f"‹{shown}›"
            if cell.truncated:
                look += style("token-view--cut")
            if position % 2:
                look += odd
            text.append(shown, look)
        return text
