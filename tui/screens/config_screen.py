"""Config: edit the YAML, see it validated as you type, the resolved values and the LR schedule.

Validation runs in a thread worker 0.4 s after the last keystroke, on the editor's unsaved text,
with the same loader ``tuner train`` uses; its result comes back as one message. The files edited
are the app's :class:`ConfigChain`, one stage at a time.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Static, TextArea
from textual_plotext import PlotextPlot

from engine.config import load_stages, resolved_rows
from engine.config.checks import check_chain
from engine.config.help import help_for
from engine.errors import UserError
from engine.files import atomic_write_text
from engine.training.schedule import schedule_curve, updates_in_run

from ..config_chain import ConfigChain
from ..messages import WorkerResult
from .path_prompt import PathPrompt, SamplePicker

DEBOUNCE_SECONDS = 0.4
KEY_AT_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")
ERROR_LINE = re.compile(r":(\d+): ")


@dataclass(frozen=True)
class Checked:
    """What one validation pass found: an error line, or the resolved table and LR curve."""

    error: str | None
    error_line: int | None
    resolved: list[tuple[str, str, str]]
    curve: list[tuple[int, float]]
    curve_note: str


def check_config(paths: list[Path], index: int, texts: dict[str, str]) -> Checked:
    """Validate the chain with unsaved ``texts`` standing in for their files; report stage ``index``.

    Runs in a worker thread. An error in any stage is reported, since a later stage inherits.
    """
    try:
        stages = load_stages(paths, texts=texts)
        check_chain(stages)
        stage = stages[index]
    except UserError as e:
        match = ERROR_LINE.search(str(e))
        return Checked(str(e), int(match.group(1)) if match else None, [], [], "")
    updates = updates_in_run(stage.config, None)
    note = "" if updates is not None else "epochs: the update count depends on the dataset size (shown for 1000)"
    curve = schedule_curve(stage.config, updates or 1000)
    return Checked(None, None, resolved_rows(stage), curve, note)


class ConfigScreen(Screen):
    BINDING_GROUP_TITLE = "Config"
    HELP = (
        "Edit the training config. It is checked as you type; **ctrl+s** saves, **ctrl+e** opens $EDITOR. "
        "**esc** leaves the editor so 1-4 switch screens and **t** starts training; alt+1-4 work everywhere."
    )
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="config-save", tooltip="Save the config file"),
        Binding("t", "app.start_training", "Train", id="config-train", tooltip="Save if needed and start training"),
        Binding("ctrl+o", "open", "Open", id="config-open", show=False, tooltip="Open another config file"),
        Binding("ctrl+w", "save_as", "Save as", id="config-save-as", show=False, tooltip="Save under a new name"),
        Binding("ctrl+n", "new_from_sample", "From sample", id="config-sample", show=False, tooltip="Start from a sample config"),
        Binding("ctrl+e", "external_editor", "$EDITOR", id="config-editor", tooltip="Edit in your own editor"),
        Binding("ctrl+g", "goto_error", "Go to error", id="config-goto-error", show=False, tooltip="Move the cursor to the error"),
        Binding("left_square_bracket", "stage(-1)", "Prev stage", id="config-prev-stage", show=False, tooltip="Edit the previous config of the chain"),
        Binding("right_square_bracket", "stage(1)", "Next stage", id="config-next-stage", show=False, tooltip="Edit the next config of the chain"),
        Binding("escape", "leave_editor", "Leave editor", id="config-leave", show=False, tooltip="Give the keys back to the app (1/2/3 switch screens)"),
    ]

    class FileRead(WorkerResult):
        """A config file's text, or why it could not be read."""

        def __init__(self, path: Path, text: str = "", error: str = "") -> None:
            super().__init__()
            self.path, self.text, self.error = path, text, error

    class Validated(WorkerResult):
        def __init__(self, checked: Checked) -> None:
            super().__init__()
            self.checked = checked

    def __init__(self, chain: ConfigChain) -> None:
        super().__init__()
        self.chain = chain
        self.error_line: int | None = None
        self._debounce: Timer | None = None
        self.saved_text = ""
        self.stashed: dict[Path, tuple[str, str]] = {}  # other stages' unsaved (text, saved text)

    @property
    def path(self) -> Path:
        """The open stage's file."""
        return self.chain.current

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="config-body"):
            yield TextArea.code_editor("", language="yaml", id="config-editor-area")
            with VerticalScroll(id="config-side"):
                yield Static("", id="config-chain")
                yield Static("", id="config-check")
                yield Static("", id="config-help")
                yield PlotextPlot(id="config-lr")
                yield DataTable(id="config-resolved", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#config-resolved", DataTable).add_columns("key", "value", "from")
        self.load_file(self.path)
        self.query_one("#config-side").focus()  # so one key (t) starts training; Tab or a click edits

    # ------------------------------------------------------------------ files
    @work(thread=True, exclusive=True, group="config-io")
    def load_file(self, path: Path) -> None:
        try:
            self.post_message(self.FileRead(Path(path), Path(path).read_text(encoding="utf-8")))
        except OSError as e:
            self.post_message(self.FileRead(Path(path), error=f"cannot open {path}: {e}"))

    def on_config_screen_file_read(self, message: ConfigScreen.FileRead) -> None:
        if message.superseded:
            return
        if message.error:
            self.notify(message.error, severity="error")
        else:
            self._show_file(message.path, message.text)

    def _show_file(self, path: Path, text: str, saved_text: str | None = None) -> None:
        self.chain.open(path)
        self.saved_text = text if saved_text is None else saved_text
        self.query_one(TextArea).load_text(text)
        self._update_title()
        self._show_chain()
        self.validate_now()

    def _show_chain(self) -> None:
        chain = self.query_one("#config-chain", Static)
        chain.display = len(self.chain) > 1
        chain.update(
            "chain: "
            + "  ›  ".join(
                f"[b reverse] {i + 1} {p.name} [/]" if i == self.chain.index else f"{i + 1} {p.name}"
                for i, p in enumerate(self.chain.paths)
            )
            + "   ([ ] switch)"
        )

    def action_stage(self, delta: int) -> None:
        left, unsaved = self.path, (self.query_one(TextArea).text, self.saved_text)
        if not self.chain.step(delta):
            return
        if unsaved[0] != unsaved[1]:
            self.stashed[left] = unsaved
        if self.path in self.stashed:
            text, saved = self.stashed.pop(self.path)
            self._show_file(self.path, text, saved)
        else:
            self.load_file(self.path)

    def check_action(self, action: str, parameters) -> bool | None:
        if action == "stage":  # hidden unless a chain of configs is open
            return len(self.chain) > 1
        return True

    def save_all(self) -> None:
        """Save the shown config and any other stage's unsaved edits (before a run)."""
        if self.dirty:
            self.save_to(self.path)
        for path, (text, _) in self.stashed.items():
            atomic_write_text(path, text)
        self.stashed.clear()

    def _update_title(self) -> None:
        dirty = self.query_one(TextArea).text != self.saved_text
        self.sub_title = f"{self.path}{' (modified)' if dirty else ''}"

    def save_to(self, path: Path) -> None:
        text = self.query_one(TextArea).text
        atomic_write_text(path, text)  # one small file: a rename, no scan
        self.chain.open(path)
        self.saved_text = text
        self._update_title()
        self.notify(f"saved {path}")

    @property
    def dirty(self) -> bool:
        return self.query_one(TextArea).text != self.saved_text

    # ------------------------------------------------------------------ validation
    def on_text_area_changed(self, message: TextArea.Changed) -> None:
        self._update_title()
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_SECONDS, self.validate_now)

    def validate_now(self) -> None:
        texts = {str(path): text for path, (text, _) in self.stashed.items()}
        texts[str(self.path)] = self.query_one(TextArea).text
        self.validate(list(self.chain.paths), self.chain.index, texts)

    @work(thread=True, exclusive=True, group="config-validate")
    def validate(self, paths: list[Path], index: int, texts: dict[str, str]) -> None:
        self.post_message(self.Validated(check_config(paths, index, texts)))

    def on_config_screen_validated(self, message: ConfigScreen.Validated) -> None:
        if not message.superseded:  # a newer check of newer text is on its way
            self.show_check(message.checked)

    def show_check(self, checked: Checked) -> None:
        status = self.query_one("#config-check", Static)
        self.error_line = checked.error_line
        if checked.error:
            status.update(f"✗ {checked.error}" + ("  (ctrl+g: go there)" if checked.error_line else ""))
            status.set_class(True, "-error")
            return
        status.update("✓ valid · t: train · 2: inspect the data · esc leaves the editor")
        status.set_class(False, "-error")
        table = self.query_one("#config-resolved", DataTable)
        table.clear()
        for key, value, source in checked.resolved:
            table.add_row(key, value if len(value) <= 30 else value[:29] + "…", source, key=key)
        plot = self.query_one("#config-lr", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("learning rate per optimizer update" + (f" ({checked.curve_note})" if checked.curve_note else ""))
        if checked.curve:
            plt.plot([u for u, _ in checked.curve], [lr for _, lr in checked.curve], marker="braille")
        plot.refresh()

    def on_text_area_selection_changed(self, message: TextArea.SelectionChanged) -> None:
        area = self.query_one(TextArea)
        row = area.cursor_location[0]
        key = None
        for line in reversed(area.text.splitlines()[: row + 1]):  # the key this line belongs to
            match = KEY_AT_LINE.match(line)
            if match and not line.startswith((" ", "\t")):
                key = match.group(1)
                break
        text = help_for(key) if key else ""
        self.query_one("#config-help", Static).update(f"{key}: {text}" if text else "")

    # ------------------------------------------------------------------ actions
    def action_save(self) -> None:
        self.save_to(self.path)

    def action_open(self) -> None:
        self.app.push_screen(PathPrompt("Open config", str(self.path)), self._open_chosen)

    def _open_chosen(self, value: str | None) -> None:
        if value:
            self.load_file(Path(value).expanduser())

    def action_save_as(self) -> None:
        self.app.push_screen(PathPrompt("Save config as", str(self.path)), self._save_as_chosen)

    def _save_as_chosen(self, value: str | None) -> None:
        if value:
            self.save_to(Path(value).expanduser())

    def action_new_from_sample(self) -> None:
        self.app.push_screen(SamplePicker(), self._sample_chosen)

    def _sample_chosen(self, value: str | None) -> None:
        if value:
            self.load_file(Path(value))

    def action_leave_editor(self) -> None:
        self.query_one("#config-side").focus()

    def action_goto_error(self) -> None:
        if self.error_line:
            area = self.query_one(TextArea)
            area.cursor_location = (self.error_line - 1, 0)
            area.focus()

    def action_external_editor(self) -> None:
        """Suspend the app, edit the saved file in $EDITOR, then reload it."""
        if self.dirty:
            self.save_to(self.path)
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with self.app.suspend():
            subprocess.call([*shlex.split(editor), str(self.path)])
        self.load_file(self.path)
