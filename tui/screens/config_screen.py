"""Config: edit the YAML, see it validated as you type, the resolved values and the LR schedule.

Validation runs in a thread worker 0.4 s after the last keystroke, on the editor's unsaved text,
with the same loader ``tuner train`` uses; its result comes back as one message. Saving, starting
a run and ctrl+g check the current text at once instead (config files only, no dataset), so none
of them acts on a stale result. The files edited are the app's :class:`ConfigChain`, one stage at
a time.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Static, TextArea
from textual_plotext import PlotextPlot

from engine.config.help import help_for
from engine.files import atomic_write_text, not_a_regular_file

from ..config_chain import ConfigChain
from ..config_check import Checked, ConfigProblem, check_config, find_errors
from ..messages import WorkerResult
from ..widgets.resolved_table import ResolvedTable
from ..widgets.yaml_editor import YamlEditor
from .path_prompt import Confirm, OpenPrompt, PathPrompt, SamplePicker, sample_copy

DEBOUNCE_SECONDS = 0.4
KEY_AT_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")


class ConfigScreen(Screen):
    BINDING_GROUP_TITLE = "Config"
    HELP = (
        "Edit the training config. It is checked as you type; **ctrl+s** saves, **ctrl+e** opens $EDITOR. "
        "**esc** leaves the editor so 1-4 switch screens and **t** starts training; alt+1-4 work everywhere. "
        "In the editor ctrl+w is Save as and ctrl+e is $EDITOR (delete a word: ctrl+backspace; line end: End). "
        "**ctrl+r** shows where each resolved value came from."
    )
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="config-save", tooltip="Save the config file"),
        Binding("t", "app.start_training", "Train", id="config-train", tooltip="Save if needed and start training"),
        Binding("ctrl+o", "open", "Open", id="config-open", show=False, tooltip="Open another config file"),
        Binding("ctrl+w", "save_as", "Save as", id="config-save-as", show=False, priority=True,
                tooltip="Save under a new name (also in the editor, where it replaces delete-word)"),
        Binding("ctrl+n", "new_from_sample", "From sample", id="config-sample", show=False, tooltip="Start from a sample config"),
        Binding("ctrl+e", "external_editor", "$EDITOR", id="config-editor", priority=True,
                tooltip="Edit in your own editor (also in the editor, where it replaces line-end)"),
        Binding("ctrl+g", "goto_error", "Go to error", id="config-goto-error", show=False,
                tooltip="Move the cursor to the next error of the current text"),
        Binding("ctrl+r", "toggle_sources", "Value/from", id="config-sources", show=False,
                tooltip="Show the resolved values or where each came from"),
        Binding("left_square_bracket", "stage(-1)", "Prev stage", id="config-prev-stage", show=False, tooltip="Edit the previous config of the chain"),
        Binding("right_square_bracket", "stage(1)", "Next stage", id="config-next-stage", show=False, tooltip="Edit the next config of the chain"),
        Binding("escape", "leave_editor", "Leave editor", id="config-leave", show=False, tooltip="Give the keys back to the app (1/2/3 switch screens)"),
    ]

    class FileRead(WorkerResult):
        """A config file's text, or why it could not be read."""

        def __init__(self, path: Path, text: str = "", error: str = "", untitled: bool = False) -> None:
            super().__init__()
            self.path, self.text, self.error, self.untitled = path, text, error, untitled

    class Validated(WorkerResult):
        def __init__(self, checked: Checked) -> None:
            super().__init__()
            self.checked = checked

    def __init__(self, chain: ConfigChain) -> None:
        super().__init__()
        self.chain = chain
        self.errors: tuple[ConfigProblem, ...] = ()
        self._debounce: Timer | None = None
        self.saved_text = ""
        self.untitled = False  # a sample's copy, not yet saved under a name of its own
        self.stashed: dict[Path, tuple[str, str]] = {}  # other stages' unsaved (text, saved text)

    @property
    def path(self) -> Path:
        """The open stage's file."""
        return self.chain.current

    @property
    def error_line(self) -> int | None:
        """The first error's line in the open file (1-based), for ctrl+g."""
        lines = self._error_lines()
        return min(lines) if lines else None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="config-body"):
            yield YamlEditor.code_editor("", language="yaml", id="config-editor-area")
            with Vertical(id="config-side-column"):
                yield Static("", id="config-chain")
                yield Static("", id="config-check")  # outside the scroll: always in sight
                with VerticalScroll(id="config-side"):
                    yield Static("", id="config-help")
                    yield PlotextPlot(id="config-lr")
                    yield ResolvedTable(id="config-resolved")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.load_file(self.path)
        self.query_one("#config-side").focus()  # so one key (t) starts training; Tab or a click edits

    # ------------------------------------------------------------------ files
    @work(thread=True, exclusive=True, group="config-io")
    def load_file(self, path: Path, untitled: bool = False) -> None:
        try:
            if problem := not_a_regular_file(Path(path)):  # a FIFO would block this worker for ever
                raise OSError(problem)
            text = sample_copy(Path(path)) if untitled else Path(path).read_text(encoding="utf-8")
            self.post_message(self.FileRead(Path(path), text, untitled=untitled))
        except OSError as e:
            self.post_message(self.FileRead(Path(path), error=f"cannot open {path}: {e}"))

    def on_config_screen_file_read(self, message: ConfigScreen.FileRead) -> None:
        if message.superseded:
            return
        if message.error:
            self.notify(message.error, severity="error")
        elif message.untitled:  # a sample: its text, but saving asks for a name of its own
            self._show_file(message.path, message.text, saved_text="")
            self.untitled = True
            self._update_title()
        else:
            self._show_file(message.path, message.text)

    def _show_file(self, path: Path, text: str, saved_text: str | None = None) -> None:
        self.chain.open(path)
        self.untitled = False
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
        if self.untitled:
            self.notify("save the new config first (ctrl+s)", severity="warning")
            return
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
        if self.untitled:
            self.sub_title = f"new config from {self.path.name} (unsaved: ctrl+s asks for a name)"
        else:
            self.sub_title = f"{self.path}{' (modified)' if self.dirty else ''}"

    def save_to(self, path: Path) -> None:
        text = self.query_one(TextArea).text
        atomic_write_text(path, text)  # one small file: a rename, no scan
        self.chain.open(path)
        self.untitled = False
        self.saved_text = text
        self._update_title()
        self.notify(f"saved {path}")

    @property
    def dirty(self) -> bool:
        return self.untitled or self.query_one(TextArea).text != self.saved_text

    # ------------------------------------------------------------------ checks before acting
    def _texts(self) -> dict[str, str]:
        texts = {str(path): text for path, (text, _) in self.stashed.items()}
        texts[str(self.path)] = self.query_one(TextArea).text
        return texts

    def check_now(self) -> tuple[ConfigProblem, ...]:
        """Every error of the current text, found now (config files only) and shown."""
        errors, _ = find_errors(list(self.chain.paths), self._texts())
        if errors or self.errors:
            self._show_errors(errors)
        return errors

    def start_when_valid(self, start: Callable[[], None]) -> None:
        """Save and call ``start`` if the chain validates; otherwise show the errors and stay."""
        if self.untitled:
            self.notify("save the new config under a name first (ctrl+s), then t", severity="warning")
            return
        errors = self.check_now()
        if errors:
            self.app.switch_mode("config")
            self.notify(f"not started: the config has {len(errors)} error{'s' if len(errors) > 1 else ''} "
                        "(ctrl+g goes to the next)", severity="error", timeout=8)
            return
        self.save_all()
        start()

    # ------------------------------------------------------------------ validation
    def on_text_area_changed(self, message: TextArea.Changed) -> None:
        self._update_title()
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(DEBOUNCE_SECONDS, self.validate_now)

    def validate_now(self) -> None:
        if self._debounce is not None:
            self._debounce.stop()
            self._debounce = None
        self.validate(list(self.chain.paths), self.chain.index, self._texts())

    @work(thread=True, exclusive=True, group="config-validate")
    def validate(self, paths: list[Path], index: int, texts: dict[str, str]) -> None:
        self.post_message(self.Validated(check_config(paths, index, texts)))

    def on_config_screen_validated(self, message: ConfigScreen.Validated) -> None:
        if not message.superseded:  # a newer check of newer text is on its way
            self.show_check(message.checked)

    def _error_lines(self) -> list[int]:
        """1-based lines of the errors that are in the open file."""
        return sorted({e.line for e in self.errors if e.line and e.file == str(self.path)})

    def _show_errors(self, errors: tuple[ConfigProblem, ...]) -> None:
        self.errors = errors
        status = self.query_one("#config-check", Static)
        self.query_one(YamlEditor).error_lines = [line - 1 for line in self._error_lines()]
        status.set_class(bool(errors), "-error")
        if not errors:
            status.update("✓ valid · t: train · 2: inspect the data · esc leaves the editor")
            return
        head = f"✗ {len(errors)} errors" if len(errors) > 1 else "✗"
        here = f"{self.path}:"  # the open file's errors name it without its folder
        shown = [e.message.replace(here, f"{self.path.name}:", 1) if e.file == str(self.path) else e.message
                 for e in errors]
        lines = "\n".join(f"• {m}" for m in shown) if len(errors) > 1 else shown[0]
        hint = "  (ctrl+g: go there)" if self._error_lines() else ""
        status.update(f"{head} {lines}{hint}" if len(errors) == 1 else f"{head}{hint}\n{lines}")

    def show_check(self, checked: Checked) -> None:
        self._show_errors(checked.errors)
        if checked.errors:
            return
        memory = f" · {checked.memory}" if checked.memory else ""
        if checked.sweep_runs:  # the resolved values below are its first run's
            self.query_one("#config-check", Static).update(
                f"✓ valid · a sweep of {checked.sweep_runs} runs (the first shown){memory} · t: train them · "
                "esc leaves the editor")
        elif memory:
            self.query_one("#config-check", Static).update(
                f"✓ valid{memory} · t: train · 2: inspect the data · esc leaves the editor")
        self.query_one(ResolvedTable).show(checked.resolved, self._table_width())
        plot = self.query_one("#config-lr", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("LR per optimizer update")
        plt.xlabel(f"updates ({checked.curve_note})" if checked.curve_note else "updates")
        if checked.curve:
            plt.plot([u for u, _ in checked.curve], [lr for _, lr in checked.curve], marker="braille")
        plot.refresh()

    # ------------------------------------------------------------------ the resolved values
    def _table_width(self) -> int:
        """The resolved table's room: the side panel less the table's own scrollbar and edge."""
        return (self.query_one("#config-side").content_size.width or 36) - 4

    def on_resize(self, event) -> None:
        table = self.query_one(ResolvedTable)
        if table.rows_shown:
            self.call_after_refresh(lambda: table.fill(self._table_width()))

    def action_toggle_sources(self) -> None:
        self.query_one(ResolvedTable).toggle_sources(self._table_width())

    def on_text_area_selection_changed(self, message: TextArea.SelectionChanged) -> None:
        area = self.query_one(TextArea)
        row = area.cursor_location[0]
        key = None
        for line in map(area.document.get_line, range(row, -1, -1)):  # the key this line belongs to
            match = KEY_AT_LINE.match(line)
            if match and not line.startswith((" ", "\t")):
                key = match.group(1)
                break
        text = help_for(key) if key else ""
        self.query_one("#config-help", Static).update(f"{key}: {text}" if text else "")

    # ------------------------------------------------------------------ actions
    def action_save(self) -> None:
        if self.untitled:
            self.action_save_as()
        else:
            self._save_checked(self.path)

    def _save_checked(self, path: Path) -> None:
        """Save; a text with errors only after a yes, since it would replace a working file."""
        errors = self.check_now()
        if not errors:
            self.save_to(path)
            return
        n = len(errors)

        def answered(yes: bool | None) -> None:
            if yes:
                self.save_to(path)

        self.app.push_screen(Confirm(f"The config has {n} error{'s' if n > 1 else ''}: {errors[0].message}\n"
                                     f"Save it to {path} anyway?"), answered)

    def action_open(self) -> None:
        self.app.push_screen(OpenPrompt(str(self.path)), self._open_chosen)

    def _open_chosen(self, value: str | None) -> None:
        if value:
            self.load_file(Path(value).expanduser())

    def action_save_as(self) -> None:
        suggested = Path.cwd() / self.path.name if self.untitled else self.path
        self.app.push_screen(PathPrompt("Save config as", str(suggested)), self._save_as_chosen)

    def _save_as_chosen(self, value: str | None) -> None:
        if value:
            self._save_checked(Path(value).expanduser())

    def action_new_from_sample(self) -> None:
        self.app.push_screen(SamplePicker(), self._sample_chosen)

    def _sample_chosen(self, value: str | None) -> None:
        if value:
            self.load_file(Path(value), untitled=True)

    def action_leave_editor(self) -> None:
        self.query_one("#config-side").focus()

    def action_goto_error(self) -> None:
        """The next error line after the cursor in the current text (checked now, not 0.4 s ago)."""
        self.check_now()
        lines = self._error_lines()
        if not lines:
            if self.errors:
                self.notify(self.errors[0].message, severity="error")
            return
        area = self.query_one(TextArea)
        row = area.cursor_location[0] + 1
        target = next((line for line in lines if line > row), lines[0])
        area.cursor_location = (target - 1, 0)
        area.focus()

    def action_external_editor(self) -> None:
        """Suspend the app, edit the saved file in $EDITOR, then reload it."""
        if self.untitled:
            self.notify("save the new config under a name first (ctrl+s)", severity="warning")
            return
        if self.dirty:
            self.save_to(self.path)
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        with self.app.suspend():
            subprocess.call([*shlex.split(editor), str(self.path)])
        self.load_file(self.path)
