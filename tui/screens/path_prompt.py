"""Small modal dialogs: ask for a path, pick a sample config, confirm a question."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList

SAMPLES = Path(__file__).resolve().parents[2] / "sample_configs"


class PathPrompt(ModalScreen[str | None]):
    """Returns the entered path, or None on Escape."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt-cancel")]

    def __init__(self, title: str, value: str = ""):
        super().__init__()
        self.title_text = title
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(self.value, id="prompt-input")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SamplePicker(ModalScreen[str | None]):
    """Returns the path of the chosen sample config."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="sample-cancel")]

    def __init__(self, samples: list[Path] | None = None):
        super().__init__()
        # the samples folder holds a handful of files; listing it is instant
        self.samples = samples if samples is not None else sorted(SAMPLES.glob("*.yaml"))

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Start from a sample config")
            yield OptionList(*(p.name for p in self.samples), id="sample-list")

    def on_option_list_option_selected(self, message: OptionList.OptionSelected) -> None:
        self.dismiss(str(self.samples[message.option_index]))

    def action_cancel(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """A yes/no question; y or Enter says yes, n or Escape says no."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question)
            yield Label("[b]y[/b] yes   [b]n[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
