"""The learning rate a config will use at each optimizer update, for previews.

It evaluates the same mlx-lm schedule the trainer builds, so the preview cannot drift from the
run.
"""

from __future__ import annotations

import math

from engine.data.batching import total_steps


def updates_in_run(cfg, train_examples: int | None) -> int | None:
    """Optimizer updates in the run, or None when epochs are set and the data size is unknown.

    The trainer's arithmetic: its step count (:func:`engine.data.batching.total_steps`), with an
    update every ``grad_accumulation_steps`` steps and one more at the last step.
    """
    if cfg.epochs is not None and train_examples is None:
        return None
    steps = total_steps(train_examples or 0, cfg.batch_size, cfg.iters, cfg.epochs)
    return math.ceil(steps / cfg.grad_accumulation_steps)


def schedule_curve(cfg, updates: int, points: int = 200) -> list[tuple[int, float]]:
    """(update, learning rate) pairs sampled evenly over ``updates``."""
    if cfg.lr_schedule is None:
        return [(0, cfg.learning_rate), (updates, cfg.learning_rate)]
    from mlx_lm.tuner.utils import build_schedule

    schedule = build_schedule(cfg.lr_schedule.model_dump())
    stride = max(1, updates // points)
    return [(u, float(schedule(u))) for u in range(0, updates + 1, stride)]
