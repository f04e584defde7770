"""A run that goes wrong ends cleanly: divergence, skipped batches, early stopping."""

import json

import mlx.core as mx
import numpy as np

from engine import events as ev
from engine.config import load_stages
from engine.loss import EvalTotals
from engine.runs.checkpoints import Checkpoints
from engine.runs.metrics import read_events
from engine.training.chain import run_chain
from engine.training.evaluator import Evaluator

from .conftest import write_config

EXPLODE = dict(optimizer="sgd", learning_rate=1.0e30, iters=30, steps_per_report=1, steps_per_eval=1000,
               val_batches=1)


def test_non_finite_loss_stops_the_run_and_says_where(tmp_path):
    seen = []
    [result] = run_chain(load_stages([write_config(tmp_path, **EXPLODE)]), seen.append)
    finished = seen[-1]
    assert result.status == "diverged" and finished.status == "diverged"
    assert f"at step {result.step + 1}" in finished.message
    assert "last finite" in finished.message
    on_disk = list(read_events(result.run_dir))
    assert on_disk[-1].status == "diverged"
    saved = mx.load(str(result.adapter_dir / "adapters.safetensors"))
    assert all(np.isfinite(np.array(v)).all() for v in saved.values())


def test_skipping_is_bounded(tmp_path):
    seen = []
    run_chain(load_stages([write_config(tmp_path, skip_nonfinite_batches=2, **EXPLODE)]), seen.append)
    skipped = [e for e in seen if isinstance(e, ev.Notice) and "batch skipped" in e.message]
    assert len(skipped) == 2 and "1 of 2" in skipped[0].message
    assert seen[-1].status == "diverged"


def test_early_stopping_keeps_a_pointer_to_the_best_checkpoint(tmp_path, monkeypatch):
    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8, 2.9])

    def scripted(self, examples, max_batches):
        totals = EvalTotals(completion_ce=next(losses) * 10, completion_tokens=10, prompt_ce=40.0,
                            prompt_tokens=10, examples=1)
        return totals, []

    monkeypatch.setattr(Evaluator, "evaluate", scripted)
    seen = []
    config = write_config(tmp_path, iters=50, steps_per_eval=1, early_stopping_patience=2, save_every=1000)
    [result] = run_chain(load_stages([config]), seen.append)
    assert result.status == "early_stopped" and result.step == 3
    assert "best 2.0000 at step 1" in seen[-1].message
    best = json.loads((result.run_dir / "checkpoints" / "best.json").read_text())
    assert best["step"] == 1 and (result.run_dir / "checkpoints" / best["checkpoint"] / "adapters.safetensors").exists()
    read_back = Checkpoints(result.run_dir).best()
    assert (read_back.step, read_back.value, read_back.checkpoint.folder.name) == (1, 2.0, best["checkpoint"])
    reasons = [e.reason for e in seen if isinstance(e, ev.CheckpointSaved)]
    assert reasons == ["best", "stopped"]
