"""What the app's training worker trains: a run resumed, trained further or again with other
values, a sweep, or a chain of configs. Kept out of ``tui/app.py``, which owns the worker, its
events and its failures; MLX loads here, when a run starts, not with the app."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from engine import events as ev
from engine.config import load_stages
from engine.config.load import load_sweep
from engine.runs.control import Control


def train(config_paths: list[Path], emit: Callable[[ev.Event], None], control: Control, resume: Path | None = None,
          more: dict | None = None, rerun_with: dict | None = None) -> None:
    """``resume`` with ``rerun_with`` (new values) or ``more`` (steps or epochs), or alone; else
    the configs, as a sweep when they hold lists."""
    from engine.training.chain import continue_run, resume_run, run_chain
    from engine.training.sweep import rerun, run_sweep

    if resume is not None and rerun_with is not None:
        rerun(resume, rerun_with, emit, control)
    elif resume is not None and more is not None:
        continue_run(resume, emit, control, **more)
    elif resume is not None:
        resume_run(resume, emit, control)
    elif (sweep := load_sweep(config_paths)) is not None:
        run_sweep(sweep, emit, control)
    else:
        run_chain(load_stages(config_paths), emit, control)
