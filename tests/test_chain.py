"""Chained stages: the second starts exactly where the first ended."""

import pytest

from engine import events as ev
from engine.config import load_stages
from engine.training.chain import run_chain

from .conftest import write_config


def test_second_stage_starts_from_first_stage_adapters(tmp_path):
    first = write_config(tmp_path, "a.yaml", iters=12, steps_per_eval=12, val_batches=2)
    second = tmp_path / "b.yaml"
    second.write_text("iters: 4\nlearning_rate: 1.0e-3\nname: second\n")
    seen = []
    results = run_chain(load_stages([first, second]), seen.append)
    assert [r.status for r in results] == ["completed", "completed"]
    evals = [e for e in seen if isinstance(e, ev.EvalReport)]
    stage_one_final = evals[1]
    stage_two_start = evals[2]
    assert stage_one_final.step == 12 and stage_two_start.step == 0
    # same validation batches, same weights: the same numbers
    assert stage_two_start.completion_loss == pytest.approx(stage_one_final.completion_loss, rel=1e-5)
    started = [e for e in seen if isinstance(e, ev.RunStarted)]
    assert [(s.stage, s.stages) for s in started] == [(1, 2), (2, 2)]
    assert results[1].run_dir.name == "second"
    assert started[1].config["learning_rate"] == 1e-3 and started[1].config["batch_size"] == 8


def test_stage_with_own_resume_file_skips_shape_check_but_loads_it(tmp_path):
    first = write_config(tmp_path, "a.yaml", iters=3, steps_per_eval=100, val_batches=1)
    [result] = run_chain(load_stages([first]), lambda e: None)
    other = write_config(tmp_path, "c.yaml", iters=2, steps_per_eval=100, val_batches=1,
                         resume_adapter_file=str(result.adapter_dir / "adapters.safetensors"))
    seen = []
    run_chain(load_stages([other]), seen.append)
    assert any(isinstance(e, ev.Notice) and "continuing from" in e.message for e in seen)
