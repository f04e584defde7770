"""Exact resume: stop at step k, resume, and the loss trajectory matches the straight run."""

import pytest

from engine import events as ev
from engine.config import load_stages
from engine.runs.control import Control
from engine.training.chain import resume_run, run_chain

from .conftest import write_config

KEYS = dict(iters=12, steps_per_report=1, steps_per_eval=1000, val_batches=1, save_every=1000,
            grad_accumulation_steps=2, batch_size=4,
            lora_parameters={"rank": 8, "scale": 2.0, "dropout": 0.1})


def losses(events):
    return {e.step: e.loss for e in events if isinstance(e, ev.TrainReport)}


def test_stop_at_step_5_and_resume_matches_the_straight_run(tmp_path):
    (tmp_path / "straight").mkdir()
    (tmp_path / "interrupted").mkdir()
    straight = []
    run_chain(load_stages([write_config(tmp_path / "straight", **KEYS)]), straight.append)

    control = Control()
    first = []

    def stop_after_five(event):
        first.append(event)
        if isinstance(event, ev.TrainReport) and event.step == 5:
            control.stop()

    [stopped] = run_chain(load_stages([write_config(tmp_path / "interrupted", **KEYS)]), stop_after_five, control)
    assert stopped.status == "stopped" and stopped.step == 5
    assert (stopped.run_dir / "checkpoints" / "step-0000005" / "pending_grad.safetensors").exists()

    second = []
    resumed = resume_run(stopped.run_dir, second.append)
    assert resumed.status == "completed" and resumed.run_dir == stopped.run_dir
    assert [e.resumed_from for e in second if isinstance(e, ev.RunStarted)] == [5]

    expected, got = losses(straight), {**losses(first), **losses(second)}
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    # dropout really draws randomness: without it the trajectory differs
    (tmp_path / "no-dropout").mkdir()
    plain = []
    keys = {**KEYS, "lora_parameters": {"rank": 8, "scale": 2.0, "dropout": 0.0}}
    run_chain(load_stages([write_config(tmp_path / "no-dropout", **keys)]), plain.append)
    assert losses(plain)[12] != pytest.approx(expected[12], rel=1e-4)


def test_a_checkpoint_with_the_keys_older_runs_wrote_still_resumes(tmp_path):
    """state.json holds the data position only; older runs also stored the seed and the config
    file, which a resume skips."""
    import json

    from engine.runs.checkpoints import Checkpoints

    control = Control()

    def stop_after_three(event):
        if isinstance(event, ev.TrainReport) and event.step == 3:
            control.stop()

    config = write_config(tmp_path, **{**KEYS, "iters": 6})
    [stopped] = run_chain(load_stages([config]), stop_after_three, control)
    checkpoints = Checkpoints(stopped.run_dir)
    latest = checkpoints.latest()
    state = latest.folder / "state.json"
    assert latest.step == 3 and sorted(json.loads(state.read_text())) == ["batch_index", "epoch", "step", "trained_tokens"]
    state.write_text(json.dumps({**json.loads(state.read_text()), "seed": 0, "config": str(config)}))
    seen = []
    resumed = resume_run(stopped.run_dir, seen.append)
    assert resumed.status == "completed" and resumed.step == 6
    assert [e.resumed_from for e in seen if isinstance(e, ev.RunStarted)] == [3]
    assert [c.step for c in checkpoints.all()] == [3, 6] and checkpoints.latest().step == 6
