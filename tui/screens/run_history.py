"""An opened run on the Runs screen: its events followed from its file, folded, its loss series,
and what its folder says beyond the events. Built and read in the screen's thread workers."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from engine.events import Event
from engine.runs.checkpoints import Checkpoints
from engine.runs.folder import next_stage_dir
from engine.runs.listing import RunSummary, summary_of
from engine.runs.metrics import EventTail
from engine.runs.view import RunView

from ..widgets.loss_chart import SERIES

SERIES_LIMIT = 10_000  # points kept per chart series; plotext rebuilds every point on each render


@dataclass(frozen=True)
class RunFiles:
    """What an opened run's folder says beyond its events (read off the event loop)."""

    final_step: int | None = None  # the checkpoint the final adapter holds now, promoted or last
    next_run: Path | None = None  # the run that continues it (a chain's next stage, or "train more")


def read_files(run_dir: Path, adapter_dir: Path) -> RunFiles:
    return RunFiles(Checkpoints(run_dir, adapter_dir).final_step(), next_stage_dir(run_dir))


class RunHistory:
    """An opened run: the tail that follows its file, its view so far and its loss series.

    The initial read goes through the same tail as the live polls, so nothing written between
    the two is missed or counted twice.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.tail = EventTail(run_dir)
        self.view = RunView()
        self.files = RunFiles()
        self.series: dict[str, deque[tuple[int, float]]] = {
            name: deque(maxlen=SERIES_LIMIT) for name, _, _ in SERIES
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
