"""Train: start, pause, stop and watch a run.

The screen only renders: the app owns the training session (thread worker, Control, event
queue) and hands each drained event to :meth:`TrainScreen.apply`. Every series is bounded and
NaN/inf never reach a Sparkline (MetricSparkline filters them and shows them as text).
"""

from __future__ import annotations

import math
from collections import deque

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, RichLog, Static

from engine import events as ev
from engine.printer import fmt, format_event, ranks_text

from ..system_memory import BYTES_PER_GB, SystemMemory
from ..widgets.memory_gauge import MemoryGauge
from ..widgets.metric_sparkline import MetricSparkline

# (widget id, title, number format) of every live series, in display order
SERIES = (
    ("train-loss", "train loss", ".3f"),
    ("val-completion", "val completion loss", ".3f"),
    ("val-prompt", "val prompt loss", ".3f"),
    ("val-accuracy", "completion accuracy", ".1%"),
    ("learning-rate", "learning rate", ".2e"),
    ("tokens-per-second", "tokens/s", ".0f"),
    ("grad-norm", "gradient norm", ".3g"),
    ("update-norm", "update norm |ΔW|", ".3g"),
)
GB_TO_GIB = 1e9 / BYTES_PER_GB  # engine events count 10^9 bytes, the gauges 2^30 like the OS
HISTORY = 10_000  # points kept per series for the full chart
LOG_LINES = 500
SAMPLES_SHOWN = 6


def clock(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def efficiency(r: ev.TrainReport) -> str:
    """How close the run is to the machine (MFU) and how much of each batch is real tokens."""
    parts = []
    if math.isfinite(r.mfu):
        parts.append(f"MFU {r.mfu:.0%}")
    if math.isfinite(r.padding_efficiency):
        parts.append(f"{r.padding_efficiency:.0%} of batch positions are real tokens")
    return "".join(f" · {part}" for part in parts)


class TrainScreen(Screen):
    """Live view of the current run; works the same for a run followed from a file."""

    BINDING_GROUP_TITLE = "Training"
    HELP = (
        "Start a run of the open config with **t**, or with **d** in its own process, which goes on "
        "training after you quit the app or your SSH connection drops (Runs, **a**, attaches to it "
        "again). **p** pauses or resumes between steps, **x** stops and saves, **s** saves a checkpoint "
        "now, **e** evaluates now, also on a run followed from another process; **l** leaves such a run "
        "training and stops following it. **c** opens a larger chart."
    )
    BINDINGS = [
        Binding("t", "app.start_training", "Start", id="train-start", tooltip="Train the open config"),
        Binding("d", "app.start_detached", "Detached", id="train-detached",
                tooltip="Train the open config in its own process, which outlives this app and SSH"),
        Binding("p", "app.toggle_pause", "Pause", id="train-pause", tooltip="Pause or resume between steps"),
        Binding("x", "app.stop_training", "Stop", id="train-stop", tooltip="Stop after this step and save"),
        Binding("s", "app.save_now", "Save", id="train-save", tooltip="Write a checkpoint after this step"),
        Binding("e", "app.eval_now", "Eval", id="train-eval", tooltip="Validate after this step"),
        Binding("l", "app.leave_run", "Leave", id="train-leave",
                tooltip="Stop following the run another process trains; it goes on"),
        Binding("c", "chart", "Chart", id="train-chart", tooltip="Show one series as a large chart"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, deque[tuple[int, float]]] = {key: deque(maxlen=HISTORY) for key, _, _ in SERIES}
        self.samples: deque[str] = deque(maxlen=SAMPLES_SHOWN)

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="train-body"):
            yield Static("idle: press t to train the open config", id="train-status")
            yield ProgressBar(total=None, show_eta=False, id="train-progress")
            with Grid(id="train-metrics"):
                for key, title, spec in SERIES:
                    yield MetricSparkline(title, fmt=spec, id=key)
            with Grid(id="train-gauges"):
                for key, title in (
                    ("mem-active", "MLX active"),
                    ("mem-cache", "MLX cache"),
                    ("mem-peak", "MLX peak"),
                    ("mem-rss", "process RSS"),
                    ("mem-system", "system used"),
                    ("mem-swap", "swap used"),
                ):
                    yield MemoryGauge(title, id=key)
            with Horizontal(id="train-bottom"):
                yield RichLog(id="train-log", max_lines=LOG_LINES, wrap=True, markup=False)
                yield Static("samples appear at each evaluation", id="train-samples")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        """Show the current run's events that arrived before this screen existed (attaching
        from the command line opens the app and starts following before the screen mounts)."""
        events = list(getattr(self.app, "history", ()))
        starts = [i for i, e in enumerate(events) if isinstance(e, ev.RunStarted)]
        for event in events[starts[-1]:] if starts else events:
            self.apply(event)

    # ------------------------------------------------------------------ events in
    def apply(self, event: ev.Event) -> None:
        """Show one engine event. Called on the event loop by the app's drain timer."""
        if isinstance(event, ev.RunStarted):
            self._start(event)
        elif isinstance(event, ev.TrainReport):
            self._train_report(event)
        elif isinstance(event, ev.EvalReport) and event.split == "valid":
            self._push("val-completion", event.step, event.completion_loss)
            self._push("val-prompt", event.step, event.prompt_loss)
            self._push("val-accuracy", event.step, event.completion_accuracy)
        elif isinstance(event, ev.SampleGenerated):
            self.samples.appendleft(f"@{event.step} {event.prompt[:50]!r}\n  → {event.completion[:60]!r}  (want {event.reference[:30]!r})")
            self.query_one("#train-samples", Static).update("\n".join(self.samples))
        elif isinstance(event, (ev.RunFinished, ev.RunFailed)):
            self.query_one("#train-status", Static).update(format_event(event) or "")
        line = format_event(event)
        if line:
            self.query_one("#train-log", RichLog).write(line)

    def _start(self, event: ev.RunStarted) -> None:
        for key, _, _ in SERIES:
            self.history[key].clear()
            self.query_one(f"#{key}", MetricSparkline).reset()
        self.samples.clear()
        self.query_one("#train-progress", ProgressBar).update(total=event.total_steps, progress=0)
        self.query_one("#train-status", Static).update(
            f"stage {event.stage}/{event.stages} · {event.model} · {event.fine_tune_type} · PLW {fmt(event.prompt_loss_weight, 'g')} "
            + (f"· {event.world_size} ranks " if event.world_size > 1 else "")
            + f"· {event.run_dir}"
        )

    def _train_report(self, r: ev.TrainReport) -> None:
        self._push("train-loss", r.step, r.loss)
        self._push("learning-rate", r.step, r.learning_rate)
        self._push("tokens-per-second", r.step, r.tokens_per_second)
        self._push("grad-norm", r.step, r.grad_norm)
        self._push("update-norm", r.step, r.update_norm)
        self.query_one("#train-progress", ProgressBar).update(total=r.total_steps, progress=r.step)
        eta = r.elapsed / r.step * (r.total_steps - r.step) if r.step else float("nan")
        self.query_one("#train-status", Static).update(
            f"step {r.step}/{r.total_steps} · epoch {r.epoch:.2f} · elapsed {clock(r.elapsed)} · ETA {clock(eta)} "
            f"· {fmt(r.tokens_per_second, '.0f')} tok/s{ranks_text(r)}{efficiency(r)}"
        )
        total = getattr(self.app, "machine_memory_gb", 0.0)
        for key, value in (("mem-active", r.active_memory_gb), ("mem-cache", r.cache_memory_gb), ("mem-peak", r.peak_memory_gb)):
            self.query_one(f"#{key}", MemoryGauge).update_gauge(value * GB_TO_GIB, total)

    def _push(self, key: str, step: int, value: float) -> None:
        self.history[key].append((step, value))
        self.query_one(f"#{key}", MetricSparkline).push(value)

    def show_system_memory(self, mem: SystemMemory) -> None:
        self.query_one("#mem-rss", MemoryGauge).update_gauge(mem.process_rss_gb, mem.total_gb)
        self.query_one("#mem-system", MemoryGauge).update_gauge(mem.used_gb, mem.total_gb)
        self.query_one("#mem-swap", MemoryGauge).update_gauge(mem.swap_used_gb, max(mem.swap_total_gb, 1e-9))

    def show_state(self, state: str) -> None:
        self.sub_title = state

    # ------------------------------------------------------------------ actions
    def action_chart(self) -> None:
        from .chart_screen import ChartScreen

        titles = {key: title for key, title, _ in SERIES}
        self.app.push_screen(ChartScreen({titles[k]: list(v) for k, v in self.history.items()}))
