"""The LR preview evaluates the trainer's own schedule."""

import math

import pytest

from engine.config import load_stages
from engine.training.schedule import schedule_curve, updates_in_run


def stage(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\n" + text)
    return load_stages([path])[0].config


def test_warmup_then_cosine(tmp_path):
    cfg = stage(tmp_path, "iters: 100\ngrad_accumulation_steps: 2\nlr_schedule:\n  name: cosine_decay\n"
                          "  arguments: [1.0e-3, 40, 0.0]\n  warmup: 10\n")
    updates = updates_in_run(cfg, None)
    assert updates == 50
    curve = dict(schedule_curve(cfg, updates))
    assert curve[0] == pytest.approx(0.0)
    assert curve[10] == pytest.approx(1e-3, rel=1e-5)
    # mlx-lm joins the cosine at update warmup + 1, so update 30 is cosine step 19
    assert curve[30] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 19 / 40)), rel=1e-4)


def test_constant_and_epochs(tmp_path):
    cfg = stage(tmp_path, "epochs: 2\nbatch_size: 4\nlearning_rate: 3.0e-4\n")
    assert updates_in_run(cfg, None) is None
    assert updates_in_run(cfg, 10) == 6  # ceil(10 / 4) = 3 batches per epoch
    assert schedule_curve(cfg, 6) == [(0, 3e-4), (6, 3e-4)]
