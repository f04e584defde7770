"""The Runs screen's table rows and summary line: each run's cells, cut to the terminal's width."""

from __future__ import annotations

import math
import time

from engine.runs.listing import RunSummary

from .screens.run_history import RunFiles

COLUMNS = ("name", "status", "stage", "steps", "best valid loss", "PLW", "model", "started")
# below this width every column still shows: the stage folds away (the summary line of an opened
# run has it), headers shorten, long names, models and dates are cut
NARROW = 100
NARROW_COLUMNS = ("name", "status", "steps", "best", "PLW", "model", "started")
MARK = "● "  # before the name of a run marked for comparing


def row_cells(run: RunSummary, narrow: bool = False, marked: bool = False) -> tuple[str, ...]:
    """One table row; plain strings so that an unchanged scan can be recognised and skipped.
    A run marked for comparing has MARK before its name."""
    mark = MARK if marked else ""
    if narrow:
        return (mark + _cut(run.name, 18 - len(mark), middle=True), _cut(run.status, 11), f"{run.step}/{run.total_steps}",
                _loss(run.best_completion_loss), f"{run.plw:g}", _cut(_model_name(run.model), 10),
                time.strftime("%m-%d %H:%M", time.localtime(run.started)))
    return (
        mark + run.name,
        run.status,
        f"{run.stage}/{run.stages}",
        f"{run.step}/{run.total_steps}",
        _loss(run.best_completion_loss),
        f"{run.plw:g}",
        run.model,
        time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started)),
    )


def describe(run: RunSummary, files: RunFiles = RunFiles()) -> str:
    """The summary line(s) above the chart of an opened run."""
    if math.isfinite(run.best_completion_loss):
        best = f"best valid completion loss {_loss(run.best_completion_loss)} at step {run.best_step}"
    else:
        best = "no validation yet"
    stage = f"stage {run.stage}/{run.stages} · " if run.stages > 1 else ""
    text = f"{run.name}: {run.status} · {stage}step {run.step}/{run.total_steps} · {best}"
    if files.final_step is not None:
        text += f" · final adapter: step {files.final_step}"
    if files.next_run is not None:
        text += f" · continued in {files.next_run.name}"
    return f"{text} · {run.run_dir}"


def _loss(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "—"


def _cut(text: str, width: int, middle: bool = False) -> str:
    """``text`` in ``width`` characters; ``middle`` keeps both ends (run names differ at the end)."""
    if len(text) <= width:
        return text
    if middle:
        return text[: (width - 1) // 2] + "…" + text[-(width // 2):]
    return text[: width - 1] + "…"


def _model_name(model: str) -> str:
    """A model's last path part: ``mlx-community/Qwen…`` -> ``Qwen…``, ``builtin:tiny-llama`` -> ``tiny-llama``."""
    return model.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] or model
