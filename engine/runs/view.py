"""A run's state as its events tell it, folded one event at a time: the one place that reads
meaning into the event stream.

The Train screen, the Runs screen, the list of runs and the follower of a live run all need the
same few facts (where the run is, whether it has ended and how, its best validation, its latest
reports, its checkpoints and samples, its compute plan). Each folds its events into a
:class:`RunView` and reads those facts from it, so a live run and one read back from its
``metrics.jsonl`` look the same everywhere. Screens that draw something per event (a chart
point, a log line) compare the view before and after an event to see what is new.

The view is immutable and every buffer in it is bounded, so a run of any length folds in
constant memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import PurePath
from typing import Callable, TypeVar

from engine.events import (
    CheckpointSaved,
    EvalReport,
    Event,
    LeverChoice,
    RunFailed,
    RunFinished,
    RunStarted,
    SampleGenerated,
    StateChanged,
    TrainReport,
)

EVALS_KEPT = 1_000  # validations kept, for the values at each checkpoint of the Runs screen
CHECKPOINTS_KEPT = 1_000
SAMPLES_KEPT = 6  # what the Train screen shows

T = TypeVar("T")


@dataclass(frozen=True)
class RunView:
    """One run's state. :meth:`apply` returns the state after one more event; nothing mutates.

    A run may span several processes: a resume appends to the same folder's ``metrics.jsonl``,
    with a new :class:`RunStarted`. Such a start begins a new *session* of the run: what the
    previous process was doing (its loop state, its end, its latest report, its samples) is
    forgotten, while what the run has gathered (its step, best validation, evaluations,
    checkpoints) stays. A start of another run (a chain's next stage, or a new run in the same
    stream of events) begins a new view.
    """

    started: RunStarted | None = None  # the latest start; None before the run has started
    step: int = 0  # the furthest step any event has reported
    loop_state: str = "running"  # the last StateChanged of this session: running | paused | stopping
    end: RunFinished | RunFailed | None = None  # how this session ended; None while it goes on
    best_completion_loss: float = math.nan  # the lowest finite validation completion loss
    best_step: int = -1  # its step; -1 before any validation
    last_train: TrainReport | None = None  # this session's latest training report
    evals: tuple[EvalReport, ...] = ()  # validations (split "valid"), oldest first, the latest EVALS_KEPT
    checkpoints: tuple[CheckpointSaved, ...] = ()  # oldest first, the latest CHECKPOINTS_KEPT
    samples: tuple[SampleGenerated, ...] = ()  # this session's, oldest first, the latest SAMPLES_KEPT

    def apply(self, event: Event) -> RunView:
        """The view with ``event`` folded in; ``self`` when the event changes nothing."""
        fold = _FOLDS.get(type(event))
        changes = fold(self, event) if fold is not None else {}
        step = getattr(event, "step", 0)
        if step > changes.get("step", self.step):
            changes["step"] = step
        return replace(self, **changes) if changes else self  # one copy per event, however many fields change

    # ------------------------------------------------------------------ what it tells

    @property
    def status(self) -> str:
        """How the session ended (completed, stopped, early_stopped, diverged, failed), or ""
        while it has not: whether it still runs only the run folder can tell."""
        if isinstance(self.end, RunFailed):
            return "failed"
        return self.end.status if self.end is not None else ""

    @property
    def finished(self) -> bool:
        return self.end is not None

    @property
    def error(self) -> str:
        """Why the session failed, or "" when it did not."""
        return self.end.error if isinstance(self.end, RunFailed) else ""

    @property
    def total_steps(self) -> int:
        return self.started.total_steps if self.started is not None else 0

    @property
    def compute_plan(self) -> tuple[LeverChoice, ...]:
        return self.started.compute_plan if self.started is not None else ()

    @property
    def latest_eval(self) -> EvalReport | None:
        return self.evals[-1] if self.evals else None

    @property
    def more_stages(self) -> bool:
        """Whether this stage completed and its chain has another stage after it."""
        started = self.started
        return self.status == "completed" and started is not None and started.stage < started.stages

    def checkpoint_reasons(self) -> dict[int, str]:
        """Step -> why its checkpoint was saved, the later reason where one step was saved twice."""
        return {saved.step: saved.reason for saved in self.checkpoints}

    def evals_by_step(self) -> dict[int, EvalReport]:
        return {report.step: report for report in self.evals}


def _same_run(a: RunStarted, b: RunStarted) -> bool:
    """Whether two starts are of one run folder. Its name tells: a resume may spell the path
    differently (relative or absolute), and folder names are unique within a runs folder."""
    return PurePath(a.run_dir).name == PurePath(b.run_dir).name


def _bounded(items: tuple[T, ...], item: T, limit: int) -> tuple[T, ...]:
    return (*items[-(limit - 1):], item) if limit > 1 else (item,)


# Each fold says what one kind of event changes: the fields to replace.


def _started(view: RunView, event: RunStarted) -> dict:
    if view.started is None or not _same_run(view.started, event):  # another run: all afresh
        return {**_NOTHING_YET, "started": event, "step": event.resumed_from}
    return {"started": event, "loop_state": "running", "end": None, "last_train": None, "samples": ()}


def _state(view: RunView, event: StateChanged) -> dict:
    return {"loop_state": event.state}


def _train(view: RunView, event: TrainReport) -> dict:
    return {"last_train": event}


def _eval(view: RunView, event: EvalReport) -> dict:
    if event.split != "valid":
        return {}
    changes: dict = {"evals": _bounded(view.evals, event, EVALS_KEPT)}
    loss = event.completion_loss
    if math.isfinite(loss) and (math.isnan(view.best_completion_loss) or loss < view.best_completion_loss):
        changes.update(best_completion_loss=loss, best_step=event.step)
    return changes


def _sample(view: RunView, event: SampleGenerated) -> dict:
    return {"samples": _bounded(view.samples, event, SAMPLES_KEPT)}


def _checkpoint(view: RunView, event: CheckpointSaved) -> dict:
    return {"checkpoints": _bounded(view.checkpoints, event, CHECKPOINTS_KEPT)}


def _ended(view: RunView, event: RunFinished | RunFailed) -> dict:
    return {"end": event}


_NOTHING_YET = {f.name: getattr(RunView(), f.name) for f in fields(RunView)}
_FOLDS: dict[type, Callable[[RunView, Event], dict]] = {
    RunStarted: _started,
    StateChanged: _state,
    TrainReport: _train,
    EvalReport: _eval,
    SampleGenerated: _sample,
    CheckpointSaved: _checkpoint,
    RunFinished: _ended,
    RunFailed: _ended,
}
