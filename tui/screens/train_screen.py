"""Train: start, pause, stop and watch a run.

The screen only renders: the app owns the training session (thread worker, Control, event
queue) and hands each drained event to :meth:`TrainScreen.apply`, which folds it into the run's
:class:`RunView` and draws what the event changed. Every series is bounded and NaN/inf never
reach a Sparkline (MetricSparkline filters them and shows them as text).
"""

from __future__ import annotations

import math
from collections import deque

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, Static

from engine import events as ev
from engine.printer import fmt, format_event, format_plan, plan_summary, ranks_text
from engine.runs.view import RunView

from ..system_memory import BYTES_PER_GB, SystemMemory
from ..widgets.event_log import EventLog
from ..widgets.memory_gauge import MemoryGauge
from ..widgets.metric_sparkline import MetricSparkline
from .sample_screen import SampleScreen

def accuracy_of(report) -> tuple[str, float]:
    """The answer's own tokens' accuracy, or, where a run has none (plain text, or a run recorded
    before tuner measured it), every completion token's, with the series' title to match."""
    answer = getattr(report, "answer_accuracy", math.nan)
    if math.isfinite(answer):
        return "answer accuracy", answer
    return "completion accuracy", report.completion_accuracy


# (widget id, title, number format) of every live series, in display order
SERIES = (
    ("train-loss", "train loss", ".3f"),
    ("val-completion", "val completion loss", ".3f"),
    ("val-prompt", "val prompt loss", ".3f"),
    ("val-accuracy", "answer accuracy", ".1%"),
    ("learning-rate", "learning rate", ".2e"),
    ("tokens-per-second", "tokens/s", ".0f"),
    ("grad-norm", "gradient norm", ".3g"),
    ("update-norm", "update norm |ΔW|", ".3g"),
)
GB_TO_GIB = 1e9 / BYTES_PER_GB  # engine events count 10^9 bytes, the gauges 2^30 like the OS
HISTORY = 10_000  # points kept per series for the full chart
LOG_LINES = 500
IDLE = "idle: press t to train the open config"
NO_SAMPLES = "samples appear at each evaluation"
SAMPLE_PROMPT_CHARS = 60  # of each sample in the panel; v shows them whole
# (widget id, title, zoom): the process' own figures are drawn against their own scale (see MemoryGauge)
GAUGES = (
    ("mem-active", "MLX active", True),
    ("mem-cache", "MLX cache", True),
    ("mem-peak", "MLX peak", True),
    ("mem-rss", "process RSS", True),
    ("mem-system", "system used", False),
    ("mem-swap", "swap used", False),
)


def clock(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def cut(text: str, limit: int) -> str:
    """``text`` on one line, ending in … where it was cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def efficiency(r: ev.TrainReport) -> str:
    """How close the run is to the machine (MFU) and how much of each batch is real tokens."""
    parts = []
    if math.isfinite(r.mfu):
        parts.append(f"MFU {r.mfu:.0%}")
    if math.isfinite(r.padding_efficiency):
        parts.append(f"{r.padding_efficiency:.0%} of batch positions are real tokens")
    return "".join(f" · {part}" for part in parts)


def status_text(view: RunView) -> str:
    """The run in one line: how it ended; or where it is (paused or stopping said first); or, before
    its first report, what it trains."""
    started, r = view.started, view.last_train
    if view.end is not None:
        return format_event(view.end) or ""
    if started is None:
        return IDLE
    if r is None:
        return (f"stage {started.stage}/{started.stages} · {started.model} · {started.fine_tune_type} "
                f"· PLW {fmt(started.prompt_loss_weight, 'g')} "
                + (f"· {started.world_size} ranks " if started.world_size > 1 else "") + f"· {started.run_dir}")
    step, total, eta = max(view.step, r.step), r.total_steps, ""
    if view.loop_state == "paused":
        where = f"paused at step {step}/{total} (p resumes)"
    elif view.loop_state == "stopping":
        where = f"stopping after step {step}/{total}"
    else:
        where = f"step {step}/{total}"
        eta = f" · ETA {clock(r.elapsed / r.step * (total - r.step) if r.step else math.nan)}"
    return (f"{where} · epoch {r.epoch:.2f} · elapsed {clock(r.elapsed)}{eta} "
            f"· {fmt(r.tokens_per_second, '.0f')} tok/s{ranks_text(r)}{efficiency(r)}")


class TrainScreen(Screen):
    """Live view of the current run; works the same for a run followed from a file."""

    BINDING_GROUP_TITLE = "Training"
    HELP = (
        "Start a run of the open config with **t**, or with **d** in its own process, which goes on "
        "training after you quit the app or your SSH connection drops (Runs, **a**, attaches to it "
        "again). **p** pauses or resumes between steps, **x** stops and saves, **s** saves a checkpoint "
        "now, **e** evaluates now, also on a run followed from another process; **l** leaves such a run "
        "training and stops following it (Runs, **a**, follows it again). **c** opens a larger chart, "
        "live; **v** the latest samples whole; **i** shows why each compute lever of the run is on or "
        "off. **PageUp**/**PageDown** scroll the screen; with the log focused (Tab), the arrows scroll "
        "the log."
    )
    BINDINGS = [
        Binding("t", "app.start_training", "Start", id="train-start", tooltip="Train the open config"),
        Binding("d", "app.start_detached", "Detached", id="train-detached",
                tooltip="Train the open config in its own process, which outlives this app and SSH"),
        Binding("p", "app.toggle_pause", "Pause", id="train-pause", tooltip="Pause or resume between steps"),
        Binding("x", "app.stop_training", "Stop", id="train-stop", tooltip="Stop after this step and save"),
        Binding("s", "app.save_now", "Save", id="train-save", tooltip="Write a checkpoint after this step"),
        Binding("e", "app.eval_now", "Eval", id="train-eval", tooltip="Validate after this step"),
        Binding("l", "leave", "Leave", id="train-leave",
                tooltip="Stop following the run another process trains; it goes on"),
        Binding("c", "chart", "Chart", id="train-chart", tooltip="Show one series as a large chart"),
        Binding("v", "samples", "Samples", id="train-samples", tooltip="Show the latest samples whole"),
        # the screen's keys whatever has focus: a focused log must not take PageUp after the
        # screen took PageDown (the log could scroll up, so the screen never came back)
        Binding("pageup", "page(-1)", show=False, priority=True, id="train-page-up"),
        Binding("pagedown", "page(1)", show=False, priority=True, id="train-page-down"),
        Binding("i", "toggle_plan", "Plan", id="train-plan", show=False,
                tooltip="Show or hide why each compute lever of the run is on or off"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view = RunView()  # the shown run's events so far, folded
        self.history: dict[str, deque[tuple[int, float]]] = {key: deque(maxlen=HISTORY) for key, _, _ in SERIES}
        self.plan_open = False  # the compute plan lever by lever, or its one-line summary
        self.left_note = ""  # after l: that the run goes on and how to follow it again

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="train-body"):
            yield Static(IDLE, id="train-status")
            yield Static("", id="train-plan")
            yield ProgressBar(total=None, show_eta=False, id="train-progress")
            with Grid(id="train-metrics"):
                for key, title, spec in SERIES:
                    yield MetricSparkline(title, fmt=spec, id=key)
            with Grid(id="train-gauges"):
                for key, title, zoom in GAUGES:
                    yield MemoryGauge(title, zoom=zoom, id=key)
            with Horizontal(id="train-bottom"):
                yield EventLog(LOG_LINES, id="train-log")
                yield Static(NO_SAMPLES, id="train-samples")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Show the current run's events that arrived before this screen existed (attaching
        from the command line opens the app and starts following before the screen mounts)."""
        events = list(getattr(self.app, "history", ()))
        starts = [i for i, e in enumerate(events) if isinstance(e, ev.RunStarted)]
        for event in events[starts[-1]:] if starts else events:
            self.apply(event)
        self.query_one("#train-samples", Static).border_subtitle = "v: whole"

    # ------------------------------------------------------------------ events in
    def apply(self, event: ev.Event) -> None:
        """Show one engine event. Called on the event loop by the app's drain timer."""
        before, self.view = self.view, self.view.apply(event)
        self._show_change(before, self.view)
        line = format_event(event)
        if line:
            self.query_one("#train-log", EventLog).add(line)

    def _show_change(self, before: RunView, view: RunView) -> None:
        """Draw what one event changed in the run's view."""
        if view.started is not before.started:
            self._start(view.started)
        if view.last_train is not before.last_train and view.last_train is not None:
            self._train_report(view.last_train)
        if view.evals is not before.evals and (report := view.latest_eval) is not None:
            self._push("val-completion", report.step, report.completion_loss)
            self._push("val-prompt", report.step, report.prompt_loss)
            title, accuracy = accuracy_of(report)
            self.query_one("#val-accuracy", MetricSparkline).retitle(title)
            self._push("val-accuracy", report.step, accuracy)
        if view.samples is not before.samples:  # a new sample, or a new run or session: none yet
            self.query_one("#train-samples", Static).update("\n".join(
                f"@{s.step} {cut(s.prompt, SAMPLE_PROMPT_CHARS)}\n  → {cut(s.completion, SAMPLE_PROMPT_CHARS)}"
                f"  (want {cut(s.reference, SAMPLE_PROMPT_CHARS // 2)})"
                for s in reversed(view.samples)
            ) or NO_SAMPLES)
        if (view.started, view.step, view.loop_state, view.end, view.last_train) != (
                before.started, before.step, before.loop_state, before.end, before.last_train):
            self._show_status(view)

    def _show_status(self, view: RunView) -> None:
        """The header line and the progress bar, from the whole view, so that they and the log
        tell one story: a pause at step 72 reads "paused at step 72", not the last report's step."""
        text = status_text(view)
        self.query_one("#train-status", Static).update(f"{text}\n{self.left_note}" if self.left_note else text)
        if view.started is not None:
            total = view.last_train.total_steps if view.last_train is not None else view.total_steps
            self.query_one("#train-progress", ProgressBar).update(total=total, progress=view.step)
        elif view.end is not None:  # failed before its first step: a still bar, not "working on it"
            self.query_one("#train-progress", ProgressBar).update(total=1, progress=0)

    def _start(self, event: ev.RunStarted) -> None:
        for key, _, _ in SERIES:
            self.history[key].clear()
            self.query_one(f"#{key}", MetricSparkline).reset()
        for key, _, zoom in GAUGES:
            if zoom:  # another process' figures, or another run's: a new scale
                self.query_one(f"#{key}", MemoryGauge).reset()
        self.left_note = ""
        self._show_plan()

    def _show_plan(self) -> None:
        """The run's compute plan: one line naming the levers on, or every lever with its reason."""
        plan = self.view.compute_plan
        panel = self.query_one("#train-plan", Static)
        panel.display = bool(plan)
        if plan:
            panel.update(format_plan(plan) if self.plan_open else f"{plan_summary(plan)} · i: why")

    def _train_report(self, r: ev.TrainReport) -> None:
        self._push("train-loss", r.step, r.loss)
        self._push("learning-rate", r.step, r.learning_rate)
        self._push("tokens-per-second", r.step, r.tokens_per_second)
        self._push("grad-norm", r.step, r.grad_norm)
        self._push("update-norm", r.step, r.update_norm)
        total = getattr(self.app, "machine_memory_gb", 0.0)
        for key, value in (("mem-active", r.active_memory_gb), ("mem-cache", r.cache_memory_gb), ("mem-peak", r.peak_memory_gb)):
            self.query_one(f"#{key}", MemoryGauge).update_gauge(value * GB_TO_GIB, total)

    def _push(self, key: str, step: int, value: float) -> None:
        self.history[key].append((step, value))
        self.query_one(f"#{key}", MetricSparkline).push(value)

    def show_system_memory(self, mem: SystemMemory) -> None:
        if not self.query("#mem-rss"):  # the app's timer can fire while this screen is composed or taken down
            return
        self.query_one("#mem-rss", MemoryGauge).update_gauge(mem.process_rss_gb, mem.total_gb)
        self.query_one("#mem-system", MemoryGauge).update_gauge(mem.used_gb, mem.total_gb)
        self.query_one("#mem-swap", MemoryGauge).update_gauge(
            mem.swap_used_gb, mem.swap_total_gb, detail="" if mem.swap_total_gb > 0 else "(no swap)")

    # ------------------------------------------------------------------ actions
    def check_action(self, action: str, parameters) -> bool | None:
        if action == "leave":  # only a run another process trains can be left
            return self.app.attached is not None
        return True

    def action_leave(self) -> None:
        """Stop following the attached run, and say where it goes on and how to follow it again."""
        run, pid = self.app.attached, self.app.attached_pid
        if run is None:
            return
        self.app.action_leave_run()
        where = f"in process {pid}" if pid else "in its own process"
        self.left_note = f"left {run}: it goes on training {where}; follow it again from Runs (4) with a"
        self.query_one("#train-log", EventLog).add(self.left_note)
        self._show_status(self.view)

    def action_page(self, direction: int) -> None:
        body = self.query_one("#train-body", VerticalScroll)
        if direction > 0:
            body.scroll_page_down()
        else:
            body.scroll_page_up()

    def action_samples(self) -> None:
        self.app.push_screen(SampleScreen(lambda: self.view.samples))

    def action_toggle_plan(self) -> None:
        self.plan_open = not self.plan_open
        self._show_plan()

    def action_chart(self) -> None:
        from .chart_screen import ChartScreen

        titles = {key: title for key, title, _ in SERIES}
        self.app.push_screen(ChartScreen({titles[key]: points for key, points in self.history.items()}))
