"""The Runs screen: every run folder in a table, and one opened run's losses charted, live.

A run may be written by a headless ``tuner train`` in another process, so this screen knows
runs only through their ``metrics.jsonl`` files, folded into a :class:`RunView`. Scanning folders
and reading those files happen in thread workers; widgets are touched only on the event loop,
once per worker result message.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker

from engine.errors import UserError
from engine.events import CheckpointSaved, Event, RunFinished
from engine.runs.checkpoints import Checkpoints
from engine.runs.listing import RunSummary, list_runs
from engine.runs.more import FINISHED, parse_more
from engine.runs.sweeps import parse_plw
from themes import APP_CSS

from ..messages import WorkerResult
from ..widgets.checkpoint_table import CheckpointTable
from ..widgets.loss_chart import LossChart, legend
from .compare_screen import MAX_RUNS, CompareScreen
from .export_dialog import ExportDialog
from .path_prompt import PathPrompt
from .run_history import RunFiles, RunHistory, read_files
from ..run_rows import COLUMNS, NARROW, NARROW_COLUMNS, describe, row_cells

SCAN_SECONDS = 5.0
TAIL_SECONDS = 1.0
class RunsScreen(Screen):
    """Every run under a runs folder; enter charts one and follows it while it trains."""

    class Scanned(WorkerResult):
        def __init__(self, runs: list[RunSummary]) -> None:
            super().__init__()
            self.runs = runs

    class Opened(WorkerResult):
        """A run's events so far, read when it was opened."""

        def __init__(self, history: RunHistory) -> None:
            super().__init__()
            self.history = history

    class TailRead(WorkerResult):
        """Events an opened run's file gained since the last read, and its files read again
        when they saved a checkpoint (None otherwise)."""

        def __init__(self, history: RunHistory, events: list[Event], files: RunFiles | None) -> None:
            super().__init__()
            self.history, self.events, self.files = history, events, files

    class Promoted(WorkerResult):
        """A checkpoint made the final adapter, or why it could not be."""

        def __init__(self, history: RunHistory, message: str, files: RunFiles | None) -> None:
            super().__init__()
            self.history, self.message, self.files = history, message, files

    BINDING_GROUP_TITLE = "Runs"
    HELP = """\
## Runs

Every run folder under the runs folder, newest first; the list rescans itself every few seconds
(**r**: now).

- **enter** charts the selected run's training loss and validation completion and prompt losses,
  and follows a run that still trains (here or in a headless `tuner train`).
- the checkpoint table lists the opened run's checkpoints with the validation completion loss and
  accuracy at their step, and marks the one the final adapter holds; **P** makes the selected one
  the run's final adapter (`adapters.safetensors`, what `mlx_lm.generate --adapter-path` loads).
- **R** resumes a stopped run exactly from its latest checkpoint. On a finished run it asks how
  much further to train (`200` steps, or `2 epochs`) and trains that as a new run, linked from
  the old one and starting from its final adapter; the finished run's files stay as they are.
- **W** trains the selected run's config again with another PLW (it asks for it), as a new run
  linked to the one it came from.
- **space** marks the selected run (● before its name) or unmarks it; **c** opens the marked
  runs (2 to 8) together on the Compare screen; with none marked, the selected run's sweep, or
  it asks for a sweep folder (one with a `sweep.json`).
- **g** opens the selected run in the Playground (5), at the checkpoint selected in the table
  when the run is open, else with its final adapter; **e** exports that checkpoint (format,
  precision and a new path asked; the progress shown).
- **a** attaches to a run that another process is training (`tuner train --detach`, a headless
  run, another app): the Train screen follows it live, and pause, stop, save and eval act on it.

A run is *interrupted* when it never finished and its metrics file has not changed for two minutes.
"""
    CSS_PATH = APP_CSS.with_name("runs.tcss")  # the screen's own: the tests host it without the app
    BINDINGS = [
        # not in the footer (the list rescans itself every few seconds; 80 columns hold the rest)
        Binding("r", "refresh_runs", "Refresh", id="runs-refresh", show=False, tooltip="Rescan the runs folder now"),
        # priority: otherwise the focused table's own enter binding takes the key
        Binding("enter", "open_run", "Open", id="runs-open", priority=True,
                tooltip="Chart the selected run's losses and follow it while it trains"),
        Binding("R", "resume_run", "Resume", id="runs-resume",
                tooltip="Continue a stopped run from its latest checkpoint; train a finished one further as a new run"),
        Binding("a", "attach_run", "Attach", id="runs-attach",
                tooltip="Follow the selected run on the Train screen and steer it, though another process trains it"),
        Binding("space", "mark_run", "Mark", id="runs-mark", show=False, tooltip="Mark the selected run for comparing, or unmark it"),
        Binding("c", "compare_runs", "Compare", id="runs-compare",
                tooltip="Open the marked runs (2 to 8) together; none marked: the selected run's sweep"),
        Binding("P", "promote", "Promote", id="runs-promote",
                tooltip="Make the checkpoint selected in the checkpoint table the run's final adapter"),
        Binding("W", "rerun", "Again", id="runs-rerun", show=False,
                tooltip="Train the selected run again with another PLW, as a new run beside it"),
        Binding("g", "playground", "Chat", id="runs-playground",
                tooltip="Talk to the selected run (the checkpoint selected, else its final adapter) on the Playground"),
        Binding("e", "export", "Export", id="runs-export",
                tooltip="Export the selected run's checkpoint to mlx, gguf, ollama or lmstudio"),
    ]

    def __init__(self, runs_dir: Path, **kwargs):
        super().__init__(**kwargs)
        self.runs_dir = Path(runs_dir)
        self._scan_cache: dict = {}  # lets a rescan skip metrics files that have not changed
        self._rows: list[tuple[str, tuple[str, ...]]] = []  # what the table shows, key and cells
        self._runs: list[RunSummary] = []  # the latest scan, refilled when the width changes the columns
        self._narrow: bool | None = None  # which columns the table has (None before the first layout)
        self._opening: Path | None = None
        self._history: RunHistory | None = None
        self._tail_worker: Worker | None = None
        self._marked: list[str] = []  # run folders marked for comparing, in the order marked

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static(f"Runs in {self.runs_dir}. Select one and press enter.", id="run-summary")
        yield CheckpointTable(id="checkpoints")
        yield Static(legend(), id="chart-legend")
        yield LossChart()
        yield Footer(compact=True, show_command_palette=False)

    def on_resize(self) -> None:
        """The run table's columns for this width: all of them, compact below NARROW columns."""
        narrow = self.size.width < NARROW
        if narrow == self._narrow:
            return
        self._narrow = narrow
        table = self.query_one("#runs", DataTable)
        selected = self._selected_key()
        table.clear(columns=True)
        for column in NARROW_COLUMNS if narrow else COLUMNS:
            table.add_column(column, key=column)
        self._rows = []
        self._fill_table(self._runs, selected)

    def on_mount(self) -> None:
        self._polls = [
            self.set_interval(SCAN_SECONDS, self.scan_runs, pause=True),
            self.set_interval(TAIL_SECONDS, self._poll_tail, pause=True),
        ]

    def on_screen_resume(self) -> None:
        # after the screen's first layout: rows a DataTable gets before it has been laid out can
        # keep column widths measured from its header alone
        self.call_after_refresh(self.scan_runs)
        for timer in self._polls:
            timer.resume()

    def on_screen_suspend(self) -> None:
        """Nobody sees this screen now, so it stops reading the disk."""
        for timer in self._polls:
            timer.pause()

    # ------------------------------------------------------------------ the list of runs

    def action_refresh_runs(self) -> None:
        self.scan_runs()

    @work(thread=True, exclusive=True, group="runs-scan")
    def scan_runs(self) -> None:
        self.post_message(self.Scanned(list_runs(self.runs_dir, self._scan_cache)))

    def on_runs_screen_scanned(self, message: RunsScreen.Scanned) -> None:
        if not message.superseded:
            self._fill_table(message.runs)

    def _fill_table(self, runs: list[RunSummary], selected: str | None = None) -> None:
        """Show a scan's result, keeping the selected run selected (and in view); an unchanged
        scan does nothing."""
        self._runs = runs
        if self._narrow is None:  # no columns before the first layout; on_resize fills it then
            return
        rows = [(str(run.run_dir), row_cells(run, self._narrow, str(run.run_dir) in self._marked)) for run in runs]
        if rows == self._rows:
            return
        self._rows = rows
        table = self.query_one("#runs", DataTable)
        selected = selected or self._selected_key()
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))
        self.refresh_bindings()  # a run's status changes what Attach and Resume do

    def _selected_run(self) -> RunSummary | None:
        key = self._selected_key()
        return next((run for run in self._runs if str(run.run_dir) == key), None)

    def _selected_key(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # ------------------------------------------------------------------ comparing runs

    def action_mark_run(self) -> None:
        key = self._selected_key()
        if key is None:
            return
        if key in self._marked:
            self._marked.remove(key)
        elif len(self._marked) >= MAX_RUNS:
            self.notify(f"{MAX_RUNS} runs are marked, as many as one chart tells apart", severity="warning")
            return
        else:
            self._marked.append(key)
        self._rows = []  # the marks are in the rows: draw them again
        self._fill_table(self._runs, key)

    def action_compare_runs(self) -> None:
        """Open the marked runs; with none marked, the selected run's sweep (or ask for one)."""
        if len(self._marked) == 1:
            self.notify("mark at least two runs (space) to compare them", severity="warning")
        elif self._marked:
            self.app.push_screen(CompareScreen([Path(key) for key in self._marked]))
        else:  # the selected run's sweep, or one to be asked for
            key = self._selected_key()
            self.app.push_screen(CompareScreen(near=Path(key) if key else None, runs_dir=self.runs_dir))

    # ------------------------------------------------------------------ one opened run

    def action_open_run(self) -> None:
        key = self._selected_key()
        if key is not None:
            self.open_run(Path(key))

    def action_resume_run(self) -> None:
        """Resume a stopped run; a finished one has nothing to resume (doing so would overwrite
        its adapters), so ask how much further to train it, as a new linked run."""
        run = self._selected_run()
        if run is None:
            return
        if run.status in FINISHED:
            question = (f"{run.name} {run.status.replace('_', ' ')} at step {run.step};\n"
                        "its adapters stay as they are (resuming would overwrite them).\n"
                        "Train it further as a new run, from its final adapter,\nat the learning rate it ended with: how many steps (or '2 epochs')?")
            further = partial(self.app.resume_run, run.run_dir)  # called with the parsed answer
            self.app.push_screen(PathPrompt(question, str(run.total_steps)),
                                 lambda answer: self._answered(answer, parse_more, further))
        else:
            self.app.resume_run(run.run_dir)

    def action_rerun(self) -> None:
        """Ask for another PLW and train the selected run's config again with it."""
        run = self._selected_run()
        if run is None:
            return
        question = f"Train {run.name} again, as a new run,\nwith prompt_loss_weight (0 to 1) ="
        self.app.push_screen(PathPrompt(question, f"{run.plw:g}"), lambda answer: self._answered(
            answer, parse_plw, lambda plw: self.app.rerun_run(run.run_dir, {"prompt_loss_weight": plw})))

    def _answered(self, answer: str | None, parse, start) -> None:
        """Start what a question's answer asks for, or say why the answer will not do (esc: nothing)."""
        if answer is None:
            return
        try:
            value = parse(answer)
        except UserError as e:
            self.notify(str(e), severity="error")
            return
        start(value)

    def action_attach_run(self) -> None:
        run = self._selected_run()
        if run is not None:  # a run that trains (check_action): another key for the others
            self.app.attach_run(run.run_dir)

    def _selected_checkpoint(self) -> tuple[Path, int | None] | None:
        """The selected run, and the checkpoint selected in the table when that run is the one
        open (None: its final adapter)."""
        key = self._selected_key()
        if key is None:
            return None
        history = self._history
        opened = history is not None and str(history.run_dir) == key
        return Path(key), self.query_one(CheckpointTable).selected_step if opened else None

    def action_playground(self) -> None:
        if (chosen := self._selected_checkpoint()) is not None:
            self.app.open_in_playground(*chosen)

    def action_export(self) -> None:
        if (chosen := self._selected_checkpoint()) is not None:
            self.app.push_screen(ExportDialog(*chosen))  # it says where it wrote, or why it could not

    def check_action(self, action: str, parameters) -> bool | None:
        """Attach only for a run that trains, Resume only for one that does not (the footer shows
        the keys of the moment; F1 lists them all)."""
        if action in ("attach_run", "resume_run"):
            run = self._selected_run()
            live = run is not None and run.status in ("running", "paused")
            return live if action == "attach_run" else not live
        return True

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "runs":
            self.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """A click on the selected row opens it, as enter does."""
        if event.data_table.id == "runs":
            self.open_run(Path(event.row_key.value))

    def open_run(self, run_dir: Path) -> None:
        self._opening, self._history = run_dir, None
        self.query_one("#run-summary", Static).update(f"Reading {run_dir} …")
        self.load_run(run_dir)

    @work(thread=True, exclusive=True, group="run-load")
    def load_run(self, run_dir: Path) -> None:
        history = RunHistory(run_dir)
        history.add(history.tail.read_new())
        history.files = read_files(run_dir, history.adapter_dir)
        self.post_message(self.Opened(history))

    def on_runs_screen_opened(self, message: RunsScreen.Opened) -> None:
        if message.history.run_dir == self._opening:  # not a run opened before the one open now
            self._history = message.history
            self._show_history(message.history, replot=True)

    def _poll_tail(self) -> None:
        """Start one read of the opened run's new events, unless the last one is still going."""
        history = self._history
        if history is None or history.view.status in FINISHED:  # a stopped run may be resumed: followed on
            return
        if self._tail_worker is not None and not self._tail_worker.is_finished:
            return
        self._tail_worker = self.poll_tail(history)

    @work(thread=True, group="run-tail")
    def poll_tail(self, history: RunHistory) -> None:
        events = history.tail.read_new()
        saved = any(isinstance(e, (CheckpointSaved, RunFinished)) for e in events)
        files = read_files(history.run_dir, history.adapter_dir) if saved else None
        self.post_message(self.TailRead(history, events, files))

    def on_runs_screen_tail_read(self, message: RunsScreen.TailRead) -> None:
        history = message.history
        if history is self._history:  # still the run open
            history.add(message.events)
            history.files = message.files or history.files
            self._show_history(history, replot=bool(message.events))

    def _show_history(self, history: RunHistory, replot: bool) -> None:
        summary = history.summary()
        text = describe(summary, history.files) if summary else f"{history.run_dir}: no run has started there yet"
        self.query_one("#run-summary", Static).update(text)
        if replot:
            self.query_one(LossChart).show(history.series)
            self.query_one(CheckpointTable).show(history.view, history.files.final_step)

    def action_promote(self) -> None:
        history, step = self._history, self.query_one(CheckpointTable).selected_step
        if history is None or step is None:
            self.notify("open a run (enter) and pick a checkpoint first", severity="warning")
            return
        self.promote(history, step)

    @work(thread=True, exclusive=True, group="run-promote")
    def promote(self, history: RunHistory, step: int) -> None:
        """Copy the checkpoint's weights over the final adapter (file work: off the event loop)."""
        try:
            target = Checkpoints(history.run_dir, history.adapter_dir).promote(step)
        except (UserError, OSError) as e:
            self.post_message(self.Promoted(history, f"could not promote step {step}: {e}", None))
            return
        files = read_files(history.run_dir, history.adapter_dir)
        self.post_message(self.Promoted(history, f"step {step} is now {target}", files))

    def on_runs_screen_promoted(self, message: RunsScreen.Promoted) -> None:
        self.notify(message.message, severity="information" if message.files else "error")
        if message.files is not None and message.history is self._history:
            message.history.files = message.files
            self._show_history(message.history, replot=True)
