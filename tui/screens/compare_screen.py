"""Runs side by side: one series of 2–8 runs (or a sweep's points) overlaid, a legend that names
what sets each run apart, and a table that ranks them.

Every number comes from engine/runs/compare.py; this screen reads the runs' files in thread
workers (the first read, then a poll each second while any run still trains) and draws.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual.worker import Worker

from engine.errors import UserError
from engine.events import Event
from engine.runs import compare
from engine.runs.compare import HIGHER_IS_BETTER, SERIES, X_AXES, CompareRun

from ..messages import WorkerResult
from ..widgets.compare_chart import COLOURS, CompareChart, rich_colour
from ..widgets.compare_table import CompareTable
from ..widgets.seed_table import SeedTable
from .path_prompt import PathPrompt

POLL_SECONDS = 1.0
WIDE = 140  # from this many columns the tables sit beside the chart
LEGEND_RUNS = 6  # more runs than this are named by the table alone, the legend says what differs
MAX_RUNS = 8  # marked runs: as many as one chart tells apart at a glance
SWEEP_RUNS = len(COLOURS)  # a sweep's grid (4 PLW × 3 seeds, say) gets a colour per run


class CompareScreen(Screen):
    """The runs of ``run_dirs``, or of the sweep in ``sweep``; given neither, of the sweep the run
    folder ``near`` belongs to, or of one it asks for (offering the newest under ``runs_dir``).
    esc goes back."""

    class Loaded(WorkerResult):
        """The runs read, and a line to tell (why none could be, or that some were left out)."""

        def __init__(self, runs: list[CompareRun], note: str = "") -> None:
            super().__init__()
            self.runs, self.note = runs, note

    class AskSweep(WorkerResult):
        """No sweep was named or found: ask for one, offering ``offered``."""

        def __init__(self, offered: Path) -> None:
            super().__init__()
            self.offered = offered

    class Polled(WorkerResult):
        """Events the unfinished runs' files gained, per run."""

        def __init__(self, news: list[tuple[CompareRun, list[Event]]]) -> None:
            super().__init__()
            self.news = news

    BINDING_GROUP_TITLE = "Compare"
    HELP = """\
## Compare

The runs marked on the Runs screen (or a sweep's runs), one colour each; the legend names what
differs between their configs. Runs that still train are followed live.

- **s** shows the next series: validation completion loss, answer accuracy, validation prompt
  loss, training loss, learning rate.
- **e** smooths the curves (exponential moving average); **l** puts the y axis on a log scale;
  **x** puts steps, epochs or trained tokens on the x axis.
- the table gives each run's best value of the series, its step, the final value, the steps
  it took to reach a validation completion loss, and, for runs scored on the test split at the
  end (`test: true`), the series' test value: held out, so the fairest ranking. ★ marks the run
  with the best validation value. **t** sets that loss (empty: the worst run's best, which every
  run reached).
- runs that differ only by seed get a second table: the mean, standard deviation and range of
  their best values per value of the rest, and their mean test value.
- **esc** goes back to the Runs screen.
"""
    DEFAULT_CSS = """
    CompareScreen #compare-legend { height: auto; max-height: 3; padding: 0 1; }
    CompareScreen #compare-status { height: 1; padding: 0 1; background: $panel; }
    CompareScreen #compare-body { height: 1fr; }
    CompareScreen CompareChart { height: 1fr; min-height: 6; }
    CompareScreen #compare-tables { height: auto; max-height: 45%; }
    CompareScreen CompareTable, CompareScreen SeedTable { height: auto; padding: 0 1; }
    CompareScreen.-wide #compare-body { layout: horizontal; }
    CompareScreen.-wide #compare-tables { width: 80; height: 1fr; max-height: 100%; }
    """
    BINDINGS = [
        Binding("s", "next_series", "Series", id="compare-series", tooltip="Show the next series"),
        Binding("e", "toggle_ema", "EMA", id="compare-ema", tooltip="Smooth the curves (moving average) or not"),
        Binding("l", "toggle_log", "Log y", id="compare-log", tooltip="Log-scale y axis or linear"),
        Binding("x", "next_x", "X axis", id="compare-x", tooltip="Steps, epochs or trained tokens on the x axis"),
        Binding("t", "set_threshold", "Threshold", id="compare-threshold",
                tooltip="The validation completion loss the table counts steps to"),
        Binding("escape", "app.pop_screen", "Back", id="compare-back", tooltip="Back to the Runs screen"),
    ]

    def __init__(self, run_dirs: list[Path] = (), sweep: Path | None = None, near: Path | None = None,
                 runs_dir: Path = Path("runs"), **kwargs):
        super().__init__(**kwargs)
        self.run_dirs, self.sweep = [Path(p) for p in run_dirs][:MAX_RUNS], sweep
        self.near, self.runs_dir = near, Path(runs_dir)
        self.runs: list[CompareRun] = []
        self.series, self.x_axis = SERIES[0], X_AXES[0]
        self.smooth = self.log_scale = False
        self.threshold: float | None = None  # None: the worst run's best completion loss
        self._poll_worker: Worker | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Reading the runs …", id="compare-legend")
        yield Static("", id="compare-status")
        with Container(id="compare-body"):
            yield CompareChart()
            with VerticalScroll(id="compare-tables"):  # focused: ↑↓ scroll a sweep's long tables
                yield CompareTable()
                yield SeedTable()
        yield Footer(compact=True, show_command_palette=False)

    def on_resize(self) -> None:
        """Wide terminals put the tables beside the chart, narrow ones below it."""
        self.set_class(self.size.width >= WIDE, "-wide")

    def on_mount(self) -> None:
        self.load()
        self._timer = self.set_interval(POLL_SECONDS, self._poll)

    def on_screen_suspend(self) -> None:
        """Another screen is shown (a mode switch): no reading the disk for nobody."""
        self._timer.pause()

    def on_screen_resume(self) -> None:
        self._timer.resume()

    # ------------------------------------------------------------------ reading the runs

    @work(thread=True, exclusive=True, group="compare-load")
    def load(self) -> None:
        sweep = self.sweep
        if sweep is None and not self.run_dirs:
            sweep = compare.sweep_of(self.near) if self.near is not None else None
            if sweep is None:
                self.post_message(self.AskSweep(compare.newest_sweep(self.runs_dir) or self.runs_dir))
                return
        try:
            points = compare.read_sweep(sweep) if sweep is not None else [(p, {}) for p in self.run_dirs]
        except UserError as e:
            self.post_message(self.Loaded([], str(e)))
            return
        note = f"showing the first {SWEEP_RUNS} of {len(points)} runs" if len(points) > SWEEP_RUNS else ""
        if not points:
            note = f"no run of the sweep in {sweep} has started yet"
        self.post_message(self.Loaded([compare.read_run(run_dir, values) for run_dir, values in points[:SWEEP_RUNS]],
                                      note))

    def on_compare_screen_loaded(self, message: CompareScreen.Loaded) -> None:
        if message.note:
            self.notify(message.note, severity="warning" if message.runs else "error")
        if not message.runs:
            self.query_one("#compare-legend", Static).update(Text(message.note))  # "points[0]" is no markup
            return
        self.runs = message.runs
        self.redraw()

    def on_compare_screen_ask_sweep(self, message: CompareScreen.AskSweep) -> None:
        self.app.push_screen(PathPrompt("No runs marked (space marks one). Compare the runs of which sweep folder?",
                                        str(message.offered)), self._sweep_given)

    def _sweep_given(self, answer: str | None) -> None:
        if answer is None:
            self.app.pop_screen()
            return
        self.sweep = Path(answer).expanduser()
        self.load()

    def _poll(self) -> None:
        """One read of the unfinished runs' new events, unless the last one is still going."""
        if not any(not run.finished for run in self.runs):
            return
        if self._poll_worker is None or self._poll_worker.is_finished:
            self._poll_worker = self.poll([run for run in self.runs if not run.finished])

    @work(thread=True, group="compare-poll")
    def poll(self, runs: list[CompareRun]) -> None:
        self.post_message(self.Polled([(run, run.tail.read_new()) for run in runs]))

    def on_compare_screen_polled(self, message: CompareScreen.Polled) -> None:
        changed = [run.add(events) for run, events in message.news]
        if any(changed):
            self.redraw()

    # ------------------------------------------------------------------ keys

    def action_next_series(self) -> None:
        self.series = SERIES[(SERIES.index(self.series) + 1) % len(SERIES)]
        self.redraw()

    def action_toggle_ema(self) -> None:
        self.smooth = not self.smooth
        self.redraw()

    def action_toggle_log(self) -> None:
        self.log_scale = not self.log_scale
        self.redraw()

    def action_next_x(self) -> None:
        self.x_axis = X_AXES[(X_AXES.index(self.x_axis) + 1) % len(X_AXES)]
        self.redraw()

    def action_set_threshold(self) -> None:
        current = "" if self.threshold is None else f"{self.threshold:g}"
        self.app.push_screen(PathPrompt("Steps to which validation completion loss? (empty or esc: the worst run's best)",
                                        current), self._threshold_given)

    def _threshold_given(self, answer: str | None) -> None:
        if answer is None:
            self.threshold = None
        else:
            try:
                value = float(answer)
            except ValueError:
                self.notify(f"not a number: {answer}", severity="error")
                return
            self.threshold = value if math.isfinite(value) else None
        self.redraw()

    # ------------------------------------------------------------------ drawing

    def redraw(self) -> None:
        if not self.runs:
            return
        colours = [rich_colour(i) for i in range(len(self.runs))]
        settings = [compare.run_settings(run) for run in self.runs]  # a run that just started brings its config
        labels = compare.legend_labels(settings, [run.name for run in self.runs])
        self.query_one("#compare-legend", Static).update(self._legend(colours, labels, settings))
        completion = [list(run.series["valid completion"]) for run in self.runs]
        threshold = self.threshold if self.threshold is not None else compare.default_threshold(completion)
        scored = self.series if self.series != "learning rate" else "valid completion"
        higher = scored in HIGHER_IS_BETTER
        summaries = [compare.summarize(list(run.series[scored]), higher, points, threshold,
                                       run.test.get(scored, math.nan))
                     for run, points in zip(self.runs, completion)]
        best = compare.best_run(summaries, higher)
        self.query_one(CompareTable).show(labels, colours, summaries, best, scored, threshold)
        self.query_one(SeedTable).show(compare.seed_groups(settings, summaries), scored)
        lines = [self._line(run) for run in self.runs]
        status = (f"{self.series} · x {self.x_axis} · EMA {'on' if self.smooth else 'off'}"
                  f" · log {'on' if self.log_scale else 'off'}")
        if not any(lines):
            status += f" · no run has {self.series} yet"
        self.query_one("#compare-status", Static).update(status)
        self.query_one(CompareChart).show(lines, self.log_scale, self.x_axis)

    def _legend(self, colours: list[str], labels: list[str], settings: list[dict]) -> Text:
        if len(self.runs) <= LEGEND_RUNS:
            return Text("   ").join(Text.assemble(("━━", c), f" {label}") for c, label in zip(colours, labels))
        keys = compare.differing_keys(settings)
        what = ", ".join(compare.short_name(k) for k in keys) or "nothing in their configs"
        return Text(f"{len(self.runs)} runs, differing in {what}: colours as in the table")

    def _line(self, run: CompareRun) -> list[tuple[float, float]]:
        """A run's points of the shown series, on the chosen x axis, smoothed when asked."""
        points = list(run.series[self.series])
        if not points:
            return []
        steps, values = zip(*points)
        xs = run.x_values(steps, self.x_axis)
        ys = compare.ema(values) if self.smooth else values
        return [(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(x)]
