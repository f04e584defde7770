"""The Runs screen: every run folder in a table, and one opened run's losses charted, live.

A run may be written by a headless ``tuner train`` in another process, so this screen knows
runs only through their ``metrics.jsonl`` files, folded into a :class:`RunView`. Scanning folders
and reading those files happen in thread workers; widgets are touched only on the event loop,
once per worker result message.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker
from textual_plotext import PlotextPlot

from engine.events import Event
from engine.runs.checkpoints import Checkpoints
from engine.runs.listing import RunSummary, list_runs, summary_of
from engine.runs.metrics import EventTail
from engine.runs.view import RunView

from ..messages import WorkerResult

SCAN_SECONDS = 5.0
TAIL_SECONDS = 1.0
SERIES_LIMIT = 10_000  # points kept per chart series; plotext rebuilds every point on each render
COLUMNS = ("name", "status", "stage", "steps", "best valid loss", "PLW", "model", "started")


def row_cells(run: RunSummary) -> tuple[str, ...]:
    """One table row; plain strings so that an unchanged scan can be recognised and skipped."""
    return (
        run.name,
        run.status,
        f"{run.stage}/{run.stages}",
        f"{run.step}/{run.total_steps}",
        _loss(run.best_completion_loss),
        f"{run.plw:g}",
        run.model,
        time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
    )


def describe(run: RunSummary) -> str:
    """The one-line summary above the chart of an opened run."""
    if math.isfinite(run.best_completion_loss):
        best = f"best valid completion loss {_loss(run.best_completion_loss)} at step {run.best_step}"
    else:
        best = "no validation yet"
    return f"{run.name}: {run.status} · step {run.step}/{run.total_steps} · {best} · {run.run_dir}"


def _loss(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "—"


class RunHistory:
    """An opened run: the tail that follows its file, its view so far and its loss series.

    The initial read goes through the same tail as the live polls, so nothing written between
    the two is missed or counted twice.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.tail = EventTail(run_dir)
        self.view = RunView()
        self.series: dict[str, deque[tuple[int, float]]] = {
            name: deque(maxlen=SERIES_LIMIT) for name in ("train loss", "valid completion", "valid prompt")
        }

    @property
    def adapter_dir(self) -> Path:
        started = self.view.started
        return Path(started.adapter_dir) if started is not None else self.run_dir / "adapters"

    def add(self, events: list[Event]) -> None:
        for event in events:
            before, self.view = self.view, self.view.apply(event)
            view = self.view
            if view.last_train is not before.last_train and view.last_train is not None:
                self._point("train loss", view.last_train.step, view.last_train.loss)
            if view.evals is not before.evals and (report := view.latest_eval) is not None:
                self._point("valid completion", report.step, report.completion_loss)
                self._point("valid prompt", report.step, report.prompt_loss)

    def summary(self) -> RunSummary | None:
        """The run as the list shows it (whether it still trains is read from its folder)."""
        return summary_of(self.run_dir, self.view)

    def _point(self, series: str, step: int, value: float) -> None:
        if math.isfinite(value):  # a diverged loss would wreck the y axis
            self.series[series].append((step, value))


class LossChart(PlotextPlot):
    """Losses against step for one run."""

    def show(self, history: RunHistory) -> None:
        plt = self.plt
        plt.clear_data()  # plotext keeps old series until cleared, and a crowded figure takes seconds to build
        plt.xlabel("step")
        for label, points in history.series.items():
            if points:
                steps, values = zip(*points)
                plt.plot(steps, values, label=label, marker="braille")
        self.refresh()


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
        """Events an opened run's file gained since the last read."""

        def __init__(self, history: RunHistory, events: list[Event]) -> None:
            super().__init__()
            self.history, self.events = history, events

    BINDING_GROUP_TITLE = "Runs"
    HELP = """\
## Runs

Every run folder under the runs folder, newest first; the list rescans itself every few seconds.

- **enter** charts the selected run's training loss and validation completion and prompt
  losses against step. A run that is still training, here or in a headless `tuner train`,
  is followed live.
- **r** rescans the runs folder now.
- the checkpoint table lists the opened run's checkpoints with the validation completion loss and
  accuracy at their step; **P** makes the selected one the run's final adapter
  (`adapters.safetensors`, what `mlx_lm.generate --adapter-path` loads).
- **R** resumes a stopped run exactly from its latest checkpoint.
- **a** attaches to a run that another process is training (`tuner train --detach`, a headless
  run, another app): the Train screen follows it live, and pause, stop, save and eval act on it.

A run is *interrupted* when it never finished and its metrics file has not changed for two minutes.
"""
    DEFAULT_CSS = """
    RunsScreen DataTable { height: 1fr; }
    RunsScreen #run-summary { height: auto; padding: 0 1; background: $panel; }
    RunsScreen LossChart { height: 2fr; }
    RunsScreen #checkpoints { height: auto; max-height: 8; }
    """
    BINDINGS = [
        Binding("r", "refresh_runs", "Refresh", id="runs-refresh", tooltip="Rescan the runs folder now"),
        # priority: otherwise the focused table's own enter binding takes the key
        Binding("enter", "open_run", "Open", id="runs-open", priority=True,
                tooltip="Chart the selected run's losses and follow it while it trains"),
        Binding("R", "resume_run", "Resume", id="runs-resume",
                tooltip="Continue the selected run exactly from its latest checkpoint"),
        Binding("a", "attach_run", "Attach", id="runs-attach",
                tooltip="Follow the selected run on the Train screen and steer it, though another process trains it"),
        Binding("P", "promote", "Promote", id="runs-promote",
                tooltip="Make the checkpoint selected in the checkpoint table the run's final adapter"),
    ]

    def __init__(self, runs_dir: Path, **kwargs):
        super().__init__(**kwargs)
        self.runs_dir = Path(runs_dir)
        self._scan_cache: dict = {}  # lets a rescan skip metrics files that have not changed
        self._rows: list[tuple[str, tuple[str, ...]]] = []  # what the table shows, key and cells
        self._opening: Path | None = None
        self._history: RunHistory | None = None
        self._tail_worker: Worker | None = None

    def compose(self) -> ComposeResult:
        table = DataTable(cursor_type="row", zebra_stripes=True)
        for column in COLUMNS:
            table.add_column(column, key=column)
        yield table
        yield Static(f"Runs in {self.runs_dir}. Select one and press enter.", id="run-summary")
        checkpoints = DataTable(id="checkpoints", cursor_type="row", zebra_stripes=True)
        checkpoints.add_columns("checkpoint step", "saved because", "valid completion loss", "completion accuracy")
        yield checkpoints
        yield LossChart()
        yield Footer(compact=True, show_command_palette=False)

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

    def _fill_table(self, runs: list[RunSummary]) -> None:
        """Show a scan's result, keeping the selected run selected; an unchanged scan does nothing."""
        rows = [(str(run.run_dir), row_cells(run)) for run in runs]
        if rows == self._rows:
            return
        self._rows = rows
        table = self.query_one(DataTable)
        selected = self._selected_key()
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected))

    def _selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    # ------------------------------------------------------------------ one opened run

    def action_open_run(self) -> None:
        key = self._selected_key()
        if key is not None:
            self.open_run(Path(key))

    def action_resume_run(self) -> None:
        key = self._selected_key()
        if key is not None:
            self.app.resume_run(Path(key))

    def action_attach_run(self) -> None:
        key = self._selected_key()
        if key is None:
            return
        status = dict(self._rows)[key][COLUMNS.index("status")]
        if status not in ("running", "paused"):
            hint = "; R resumes it" if status in ("stopped", "interrupted", "diverged") else ""
            self.notify(f"{Path(key).name} is {status}, not training{hint}", severity="warning")
            return
        self.app.attach_run(Path(key))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """A click on the selected row opens it, as enter does."""
        self.open_run(Path(event.row_key.value))

    def open_run(self, run_dir: Path) -> None:
        self._opening, self._history = run_dir, None
        self.query_one("#run-summary", Static).update(f"Reading {run_dir} …")
        self.load_run(run_dir)

    @work(thread=True, exclusive=True, group="run-load")
    def load_run(self, run_dir: Path) -> None:
        history = RunHistory(run_dir)
        history.add(history.tail.read_new())
        self.post_message(self.Opened(history))

    def on_runs_screen_opened(self, message: RunsScreen.Opened) -> None:
        if message.history.run_dir == self._opening:  # not a run opened before the one open now
            self._history = message.history
            self._show_history(message.history, replot=True)

    def _poll_tail(self) -> None:
        """Start one read of the opened run's new events, unless the last one is still going."""
        history = self._history
        if history is None or history.view.finished:
            return
        if self._tail_worker is not None and not self._tail_worker.is_finished:
            return
        self._tail_worker = self.poll_tail(history)

    @work(thread=True, group="run-tail")
    def poll_tail(self, history: RunHistory) -> None:
        self.post_message(self.TailRead(history, history.tail.read_new()))

    def on_runs_screen_tail_read(self, message: RunsScreen.TailRead) -> None:
        history = message.history
        if history is self._history:  # still the run open
            history.add(message.events)
            self._show_history(history, replot=bool(message.events))

    def _show_history(self, history: RunHistory, replot: bool) -> None:
        summary = history.summary()
        text = describe(summary) if summary else f"{history.run_dir}: no run has started there yet"
        self.query_one("#run-summary", Static).update(text)
        if replot:
            self.query_one(LossChart).show(history)
            self._fill_checkpoints(history)

    def _fill_checkpoints(self, history: RunHistory) -> None:
        table = self.query_one("#checkpoints", DataTable)
        table.clear()
        reasons, evals = history.view.checkpoint_reasons(), history.view.evals_by_step()
        for step in sorted(reasons):
            found = evals.get(step)
            loss = _loss(found.completion_loss) if found else "—"
            accuracy = f"{found.completion_accuracy:.1%}" if found and math.isfinite(found.completion_accuracy) else "—"
            table.add_row(str(step), reasons[step], loss, accuracy, key=str(step))

    def action_promote(self) -> None:
        history, table = self._history, self.query_one("#checkpoints", DataTable)
        if history is None or table.row_count == 0:
            self.notify("open a run (enter) and pick a checkpoint first", severity="warning")
            return
        step = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        target = Checkpoints(history.run_dir, history.adapter_dir).promote(step)
        self.notify(f"step {step} is now {target}")
