"""Small modal dialogs: ask for a path, open a config (listed, Tab completes), pick a sample config,
confirm a question."""

from __future__ import annotations

import os
import re
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static

from ..messages import WorkerResult
from ..widgets.ordered_input import OrderedInput

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
            yield OrderedInput(self.value, id="prompt-input")

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


CONFIG_SUFFIXES = (".yaml", ".yml")
SKIPPED_FOLDERS = {".git", ".venv", "venv", "node_modules", "__pycache__", "runs"}
LISTED_LIMIT = 200


def config_files(root: Path, limit: int = LISTED_LIMIT) -> list[Path]:
    """The YAML files under ``root`` (relative), hidden folders, environments and runs skipped."""
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in SKIPPED_FOLDERS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(CONFIG_SUFFIXES):
                found.append(Path(folder, name).relative_to(root))
                if len(found) >= limit:
                    return found
    return found


def complete_path(text: str) -> str:
    """``text`` completed as far as the names in its folder that it starts agree (a folder gets
    its ``/``); the list below the field shows the files that match."""
    path = Path(text).expanduser()
    folder, prefix = (path, "") if text.endswith(os.sep) or not text else (path.parent, path.name)
    try:
        names = sorted(e.name + (os.sep if e.is_dir() else "") for e in os.scandir(folder or ".")
                       if e.name.startswith(prefix) and not e.name.startswith("."))
    except OSError:
        return text
    if not names:
        return text
    head = text[: len(text) - len(prefix)] if prefix else text
    return head + os.path.commonprefix(names)


class OpenPrompt(ModalScreen[str | None]):
    """Open a config: a path with Tab completion over the config files under the current folder.

    Typing filters the list; Tab completes the typed path from its folder; Enter opens the typed
    path, or the highlighted file once the list has the focus (Down moves there).
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="open-cancel"),
        Binding("tab", "complete", "Complete", id="open-complete", priority=True),
        Binding("down", "to_list", "List", id="open-list", show=False),
    ]

    class Listed(WorkerResult):
        def __init__(self, files: list[Path]) -> None:
            super().__init__()
            self.files = files

    def __init__(self, value: str = "", root: Path | None = None):
        super().__init__()
        self.value = value
        self.root = root or Path.cwd()
        self.files: list[Path] = []
        self.shown: list[Path] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Open config (Tab completes; config files under {self.root}):")
            yield OrderedInput(self.value, id="open-input")
            yield OptionList(id="open-list")
            yield Label("", id="open-note")

    def on_mount(self) -> None:
        self.list_files()

    @work(thread=True, exclusive=True, group="open-list")
    def list_files(self) -> None:
        self.post_message(self.Listed(config_files(self.root)))

    def on_open_prompt_listed(self, message: Listed) -> None:
        self.files = message.files
        self._show_files("")

    def _show_files(self, typed: str) -> None:
        shown = [f for f in self.files if typed.lower() in str(f).lower()] or self.files
        self.shown = shown
        options = self.query_one("#open-list", OptionList)
        options.clear_options()
        options.add_options([str(f) for f in shown])
        note = f"first {LISTED_LIMIT} shown" if len(self.files) >= LISTED_LIMIT else f"{len(self.files)} found"
        self.query_one("#open-note", Label).update(note if self.files else "no config files here")

    def on_input_changed(self, message: Input.Changed) -> None:
        if self.files:
            typed = message.value
            self._show_files("" if typed == self.value else typed)

    def on_input_submitted(self, message: Input.Submitted) -> None:
        self.dismiss(message.value.strip() or None)

    def on_option_list_option_selected(self, message: OptionList.OptionSelected) -> None:
        self.dismiss(str(self.root / self.shown[message.option_index]))

    def action_complete(self) -> None:
        field = self.query_one("#open-input", Input)
        if not field.has_focus:
            field.focus()
            return
        field.value = complete_path(field.value)
        field.cursor_position = len(field.value)

    def action_to_list(self) -> None:
        self.query_one("#open-list", OptionList).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)


DATA_LINE = re.compile(r"^data:[ \t]*([^#\s][^#]*?)[ \t]*(#.*)?$", re.MULTILINE)


def sample_copy(sample: Path) -> str:
    """A sample's text for a copy saved elsewhere: its relative ``data`` path made absolute, since
    a relative path is read from the config's own folder, which the copy will not share."""

    def absolute(match: re.Match) -> str:
        value = match.group(1).strip("'\"")
        target = sample.parent / value
        if Path(value).is_absolute() or not target.exists():
            return match.group(0)
        return f"data: {target.resolve()}  # the sample's data (from {sample.name})"

    return DATA_LINE.sub(absolute, sample.read_text(encoding="utf-8"))


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
            yield Static(self.question)  # wraps: a long question (a path, an error) is read whole
            yield Label("[b]y[/b] yes   [b]n[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
