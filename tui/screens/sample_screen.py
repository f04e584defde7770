"""The latest sample generations in full: prompt, completion and reference, newest first.

The Train screen's samples panel has room for the start of each; this modal (v) shows them whole,
in a scrollable box, and stays live: a sample that arrives while it is open is added. The prompt
as the model saw it (the chat template rendered, system prompt included) is shown when the event
carries it (``rendered_prompt``); runs whose events hold only the last user message say so.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from engine.events import SampleGenerated

REFRESH_SECONDS = 0.5
NO_TEMPLATE = "(not recorded: this run's events carry the last user message only)"


def sample_text(sample: SampleGenerated) -> Text:
    """One sample whole: a heading per part, the parts as they were, wrapped by the box."""
    verdict = "matches the reference" if sample.completion.strip() == sample.reference.strip() else "differs from the reference"
    text = Text.assemble((f"step {sample.step}", "bold"), f" · {verdict}\n")
    rendered = getattr(sample, "rendered_prompt", "")  # newer engines record the templated prompt
    for heading, body, style in (
        ("prompt", sample.prompt, ""),
        ("prompt as the model saw it (chat template)", rendered or NO_TEMPLATE, "" if rendered else "dim"),
        ("completion", sample.completion, "bold"),
        ("reference", sample.reference, ""),
    ):
        text.append(f"{heading}\n", style="underline")
        text.append(f"{body}\n", style=style)
    return text


class SampleScreen(ModalScreen):
    """The samples of ``samples()``, which the Train screen answers from its run's view."""

    BINDINGS = [Binding("escape,v,q", "dismiss", "Close", id="samples-close")]
    DEFAULT_CSS = """
    SampleScreen { align: center middle; }
    #samples-box {
        width: 90%;
        height: 90%;
        background: $surface;
        border: round $primary;
        padding: 0 1;
    }
    """

    def __init__(self, samples: Callable[[], tuple[SampleGenerated, ...]]):
        super().__init__()
        self.samples = samples
        self.shown: tuple[SampleGenerated, ...] | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="samples-box"):
            yield Static(id="samples-text")

    def on_mount(self) -> None:
        box = self.query_one("#samples-box", VerticalScroll)
        box.border_title = "samples, newest first"
        box.border_subtitle = "↑↓ PgUp PgDn scroll · esc closes"
        box.focus()
        self.show_if_new()
        self.set_interval(REFRESH_SECONDS, self.show_if_new)

    def show_if_new(self) -> None:
        samples = self.samples()
        if samples is self.shown:
            return
        self.shown = samples
        text = Text("\n").join(sample_text(s) for s in reversed(samples)) if samples else Text(
            "no samples yet: they are generated at each evaluation (samples_per_eval)")
        self.query_one("#samples-text", Static).update(text)
