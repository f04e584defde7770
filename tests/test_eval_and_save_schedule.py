"""When a run evaluates and saves: eval requests, evals_per_epoch, the numbered adapter copies,
early stopping when the weights before training stay the best, and the best across a resume."""

import json

from engine import events as ev
from engine.config import load_stages
from engine.loss import EvalTotals
from engine.runs.checkpoints import Checkpoints
from engine.runs.control import Control
from engine.runs.metrics import read_events
from engine.training.chain import resume_run, run_chain
from engine.training.evaluator import Evaluator

from .conftest import write_config


def train(tmp_path, control=None, emit=None, **keys):
    seen = []

    def record(event):
        seen.append(event)
        if emit is not None:
            emit(event)

    [result] = run_chain(load_stages([write_config(tmp_path, **keys)]), record, control)
    return result, seen


def valid_steps(events) -> list[int]:
    return [e.step for e in events if isinstance(e, ev.EvalReport) and e.split == "valid"]


def small_dataset(folder, n: int):
    """``n`` distinct one-line chats for train and a few for valid."""
    folder.mkdir()
    for split, count in (("train", n), ("valid", 4)):
        rows = [{"messages": [{"role": "user", "content": f"What is {i} plus one?"},
                              {"role": "assistant", "content": str(i + 1)}]} for i in range(count)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def test_one_eval_request_is_one_evaluation_at_the_step_it_was_served(tmp_path):
    """e pressed mid-way evaluates that step once; e pressed while the scheduled step-10
    evaluation runs (what happened at step 100 in the report) adds no second one."""
    control = Control()

    def press_e(event):
        if isinstance(event, ev.TrainReport) and event.step == 5:
            control.eval_now()
        if isinstance(event, ev.EvalReport) and event.step == 10:
            control.eval_now()

    result, seen = train(tmp_path, control, press_e, iters=20, steps_per_report=5, steps_per_eval=10,
                         samples_per_eval=1, sample_max_tokens=2)
    assert valid_steps(seen) == [0, 5, 10, 20]
    assert [e.step for e in seen if isinstance(e, ev.SampleGenerated)] == [0, 5, 10, 20]
    assert any(isinstance(e, ev.Notice) and "step 10 has just been evaluated" in e.message for e in seen)
    on_disk = list(read_events(result.run_dir))
    assert valid_steps(on_disk) == [0, 5, 10, 20]
    assert len([e for e in on_disk if isinstance(e, ev.SampleGenerated)]) == 4


def test_evals_per_epoch_counts_epochs_when_the_length_is_in_iters(tmp_path):
    data = small_dataset(tmp_path / "data", 40)  # batch 4: 10 steps per epoch, 2 evals: every 5
    _, seen = train(tmp_path, data=data, batch_size=4, iters=12, evals_per_epoch=2, steps_per_eval=1000,
                    val_batches=1)
    assert seen[0].steps_per_epoch == 10
    assert valid_steps(seen) == [0, 5, 10, 12]


def test_evals_per_epoch_with_epochs_is_unchanged(tmp_path):
    data = small_dataset(tmp_path / "data", 40)
    _, seen = train(tmp_path, data=data, batch_size=4, iters=None, epochs=1.5, evals_per_epoch=2,
                    steps_per_eval=1000, val_batches=1)
    assert valid_steps(seen) == [0, 5, 10, 15]


def test_a_save_every_multiple_that_is_the_last_step_keeps_its_numbered_copy(tmp_path):
    result, seen = train(tmp_path, iters=20, save_every=10, steps_per_eval=1000, val_batches=1)
    numbered = sorted(p.name for p in result.adapter_dir.glob("0*_adapters.safetensors"))
    assert numbered == ["0000010_adapters.safetensors", "0000020_adapters.safetensors"]
    last = result.adapter_dir / "0000020_adapters.safetensors"
    assert last.read_bytes() == (result.adapter_dir / "adapters.safetensors").read_bytes()
    saves = [(e.reason, e.step) for e in seen if isinstance(e, ev.CheckpointSaved)]
    assert saves[0] == ("periodic", 10) and saves[-1] == ("final", 20)


def test_a_last_step_off_the_save_every_grid_gets_no_numbered_copy(tmp_path):
    result, _ = train(tmp_path, iters=10, save_every=4, steps_per_eval=1000, val_batches=1)
    numbered = sorted(p.name for p in result.adapter_dir.glob("0*_adapters.safetensors"))
    assert numbered == ["0000004_adapters.safetensors", "0000008_adapters.safetensors"]


def scripted_losses(monkeypatch, losses):
    """Validation completion losses in order, one per evaluation."""
    losses = iter(losses)

    def scripted(self, examples, max_batches):
        totals = EvalTotals(completion_ce=next(losses) * 10, completion_tokens=10, prompt_ce=40.0,
                            prompt_tokens=10, examples=1)
        return totals, []

    monkeypatch.setattr(Evaluator, "evaluate", scripted)


def test_early_stopping_when_the_weights_before_training_stay_the_best(tmp_path, monkeypatch):
    scripted_losses(monkeypatch, [2.0, 2.5, 2.4, 2.6, 2.7])
    result, seen = train(tmp_path, iters=50, steps_per_eval=1, early_stopping_patience=2, save_every=1000)
    assert result.status == "early_stopped" and result.step == 2
    message = seen[-1].message
    assert "step-0000000" not in message
    assert "best 2.0000 at step 0, before training" in message
    assert "best trained 2.4000 at step 2 (checkpoints/step-0000002)" in message

    best = json.loads((result.run_dir / "checkpoints" / "best.json").read_text())
    assert best == {"step": 0, "metric": "completion_loss", "value": 2.0, "completion_loss": 2.0, "checkpoint": None,
                    "before_training": True, "trained": {"step": 2, "metric": "completion_loss", "value": 2.4,
                                                         "completion_loss": 2.4, "checkpoint": "step-0000002"}}
    read_back = Checkpoints(result.run_dir).best()
    assert read_back.step == 0 and read_back.checkpoint is None
    assert read_back.trained.step == 2 and (read_back.trained.checkpoint.folder / "adapters.safetensors").exists()
    # each better trained step is checkpointed, so the best trained one can be promoted
    assert [(e.reason, e.step) for e in seen if isinstance(e, ev.CheckpointSaved)] == [
        ("best", 1), ("best", 2), ("stopped", 2)]
    Checkpoints(result.run_dir).promote(read_back.trained.step)


def test_a_trained_best_replaces_the_starting_one(tmp_path, monkeypatch):
    scripted_losses(monkeypatch, [2.0, 2.5, 1.5, 1.6, 1.7])
    result, seen = train(tmp_path, iters=50, steps_per_eval=1, early_stopping_patience=2, save_every=1000)
    assert result.status == "early_stopped" and result.step == 4
    assert "best 1.5000 at step 2 (checkpoints/step-0000002)" in seen[-1].message
    best = json.loads((result.run_dir / "checkpoints" / "best.json").read_text())
    assert best == {"step": 2, "metric": "completion_loss", "value": 1.5, "completion_loss": 1.5, "checkpoint": "step-0000002"}


def test_a_resumed_run_keeps_its_best_until_a_better_one(tmp_path, monkeypatch):
    scripted_losses(monkeypatch, [3.0, 1.0, 2.0, 2.5, 2.2, 2.1, 0.5])
    control = Control()

    def stop_at_3(event):
        if isinstance(event, ev.TrainReport) and event.step == 3:
            control.stop()

    stopped, _ = train(tmp_path, control, stop_at_3, iters=6, steps_per_report=1, steps_per_eval=1,
                       save_every=1000)
    assert stopped.status == "stopped" and stopped.step == 3
    best_file = stopped.run_dir / "checkpoints" / "best.json"
    assert json.loads(best_file.read_text())["step"] == 1
    seen = []
    resume_run(stopped.run_dir, seen.append)
    saves = [(e.reason, e.step) for e in seen if isinstance(e, ev.CheckpointSaved)]
    assert saves == [("best", 6), ("final", 6)]  # 2.2 and 2.1 are no better than step 1's 1.0; 0.5 is
    assert json.loads(best_file.read_text()) == {"step": 6, "metric": "completion_loss", "value": 0.5,
                                                 "completion_loss": 0.5, "checkpoint": "step-0000006"}
