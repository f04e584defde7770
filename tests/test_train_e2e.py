"""End to end on the demo model: the loss falls, the events land on disk, mlx-lm reads the adapter."""

import json
import threading

import mlx.core as mx
import numpy as np
import pytest

from engine import events as ev
from engine.config import load_stages
from engine.runs.control import Control
from engine.runs.metrics import read_events
from engine.training.chain import run_chain

from .conftest import DEMO_DATA, planned, write_config


def train(tmp_path, control=None, **keys):
    seen = []
    stages = load_stages([write_config(tmp_path, **keys)])
    results = run_chain(stages, seen.append, control)
    return results[-1], seen


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-run")
    return train(folder, iters=60, steps_per_eval=30, val_batches=-1, prompt_loss_weight=0.1,
                 samples_per_eval=1, sample_max_tokens=4)


def test_validation_completion_loss_falls(demo_run):
    result, seen = demo_run
    evals = [e for e in seen if isinstance(e, ev.EvalReport)]
    assert [e.step for e in evals] == [0, 30, 60]
    assert evals[-1].completion_loss < evals[0].completion_loss - 0.5
    assert evals[-1].completion_accuracy > evals[0].completion_accuracy
    for e in evals:
        assert e.prompt_tokens > e.completion_tokens > 0
        assert e.full_loss == pytest.approx(
            (e.prompt_loss * e.prompt_tokens + e.completion_loss * e.completion_tokens)
            / (e.prompt_tokens + e.completion_tokens), rel=1e-6)


def test_reports_carry_the_promised_fields(demo_run):
    result, seen = demo_run
    reports = [e for e in seen if isinstance(e, ev.TrainReport)]
    assert [r.step for r in reports] == list(range(5, 61, 5))
    last = reports[-1]
    assert last.tokens_per_second > 0 and last.peak_memory_gb > 0
    assert last.grad_norm > 0 and last.update_norm > 0 and last.learning_rate == pytest.approx(2e-3)
    assert last.trained_tokens > reports[0].trained_tokens
    assert last.epoch == pytest.approx(60 / 100)
    assert isinstance(seen[0], ev.RunStarted) and isinstance(seen[-1], ev.RunFinished)
    assert seen[-1].status == "completed" and seen[0].prompt_loss_weight == 0.1
    assert any(isinstance(e, ev.SampleGenerated) for e in seen)


def test_samples_carry_the_prompt_as_the_model_read_it(demo_run):
    """The whole templated prompt (what the Train screen's v shows), the last user message inside it."""
    _, seen = demo_run
    samples = [e for e in seen if isinstance(e, ev.SampleGenerated)]
    assert samples
    for sample in samples:
        assert sample.prompt in sample.rendered_prompt and len(sample.rendered_prompt) > len(sample.prompt)
        assert "<|im_start|>assistant" in sample.rendered_prompt  # the demo template's generation prompt


def test_reports_say_how_full_the_batches_and_the_machine_are(demo_run):
    result, seen = demo_run
    started = seen[0]
    assert started.flops_per_token > 4 * 900_000  # LoRA: about 4N per token, N ~ 0.9M block weights + head
    assert started.matmul_peak_flops > 0
    for r in (e for e in seen if isinstance(e, ev.TrainReport)):
        assert 0.5 < r.padding_efficiency <= 1.0  # length-grouped batches waste little
        assert r.mfu == pytest.approx(r.tokens_per_second * started.flops_per_token / started.matmul_peak_flops)


def test_metrics_file_holds_the_same_events(demo_run):
    result, seen = demo_run
    on_disk = list(read_events(result.run_dir))
    assert [type(e) for e in on_disk] == [type(e) for e in seen]
    assert on_disk[-1] == seen[-1]
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["event"] for line in lines)


def test_adapter_layout_and_mlx_lm_loads_it(demo_run, demo_model_dir):
    from mlx_lm import generate
    from mlx_lm.utils import load

    result, _ = demo_run
    adapters = result.adapter_dir
    assert (adapters / "adapters.safetensors").exists()
    assert (adapters / "0000030_adapters.safetensors").exists()
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["lora_parameters"]["rank"] == 8
    ckpt = result.run_dir / "checkpoints" / "step-0000060"
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 60 and (ckpt / "optimizer.safetensors").exists()

    base, tokenizer = load(str(demo_model_dir))
    tuned, _ = load(str(demo_model_dir), adapter_path=str(adapters))
    ids = mx.array([tokenizer.encode("What is the capital of")])
    assert not np.allclose(np.array(base(ids)), np.array(tuned(ids)), atol=1e-4)
    text = generate(tuned, tokenizer, "What is", max_tokens=3)
    assert isinstance(text, str)


def test_pause_resume_stop_from_another_thread(tmp_path):
    control = Control()
    seen = []
    reports = threading.Event()

    def emit(event):
        seen.append(event)
        if isinstance(event, ev.TrainReport):
            reports.set()

    def drive():
        reports.wait(60)
        control.pause()
        # wait until the loop has really paused, then ask for a save while paused
        for _ in range(600):
            if any(isinstance(e, ev.StateChanged) and e.state == "paused" for e in seen):
                break
            threading.Event().wait(0.05)
        control.save_now()
        threading.Event().wait(0.5)
        control.resume()
        threading.Event().wait(0.3)
        control.stop()

    driver = threading.Thread(target=drive)
    driver.start()
    stages = load_stages([write_config(tmp_path, iters=100000, steps_per_report=2, steps_per_eval=1000)])
    result = run_chain(stages, emit, control)[-1]
    driver.join()
    states = [e.state for e in seen if isinstance(e, ev.StateChanged)]
    assert states[:2] == ["paused", "running"]
    saves = [e.reason for e in seen if isinstance(e, ev.CheckpointSaved)]
    assert saves[0] == "requested" and saves[-1] == "stopped"
    assert result.status == "stopped" and 0 < result.step < 100000
    assert (result.adapter_dir / "adapters.safetensors").exists()


def test_epochs_train_the_partial_last_batch(tmp_path):
    # 800 training examples, batch 48 -> 17 batches per epoch, the last one with 32 examples
    result, seen = train(tmp_path, iters=None, epochs=1, batch_size=48, steps_per_eval=1000, val_batches=1)
    started = seen[0]
    assert started.steps_per_epoch == 17 and started.total_steps == 17
    finished = seen[-1]
    assert finished.step == 17


def test_fuse_and_test_split(tmp_path, demo_model_dir):
    from mlx_lm.utils import load

    result, seen = train(tmp_path, iters=4, steps_per_eval=100, val_batches=1, fuse=True, test=True, test_batches=2)
    tests = [e for e in seen if isinstance(e, ev.EvalReport) and e.split == "test"]
    assert len(tests) == 1 and tests[0].examples == 16
    fused_dir = seen[-1].fused_dir
    assert fused_dir
    fused, tokenizer = load(fused_dir)
    tuned, _ = load(str(demo_model_dir), adapter_path=str(result.adapter_dir))
    ids = mx.array([tokenizer.encode("The capital of Norvania is")])
    assert np.allclose(np.array(fused(ids)), np.array(tuned(ids)), atol=1e-4)


def test_latest_validation_is_kept_per_example_worst_first(demo_run):
    result, seen = demo_run
    data = json.loads((result.run_dir / "eval_examples.json").read_text())
    last_eval = [e for e in seen if isinstance(e, ev.EvalReport)][-1]
    assert data["step"] == last_eval.step
    rows = data["examples"]
    assert len(rows) == last_eval.examples
    losses = [r["completion_loss"] for r in rows]
    assert losses == sorted(losses, reverse=True)
    total = sum(r["completion_loss"] * r["completion_tokens"] for r in rows)
    assert total / sum(r["completion_tokens"] for r in rows) == pytest.approx(last_eval.completion_loss, rel=1e-4)
    assert all(r["origin"].startswith(str(DEMO_DATA)) for r in rows)


def test_gradient_checkpointing_changes_memory_not_results(tmp_path):
    keys = dict(iters=4, steps_per_report=1, steps_per_eval=100, val_batches=1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, plain = train(tmp_path / "a", **keys)
    _, checkpointed = train(tmp_path / "b", grad_checkpoint=True, **keys)
    losses = lambda seen: [e.loss for e in seen if isinstance(e, ev.TrainReport)]
    assert losses(plain) == pytest.approx(losses(checkpointed), rel=1e-4)


def test_schedule_counts_optimizer_updates_under_accumulation(tmp_path):
    schedule = {"name": "linear_schedule", "arguments": [0.0, 1.0e-3, 10]}
    _, seen = train(tmp_path, iters=8, steps_per_report=2, steps_per_eval=100, val_batches=1,
                    grad_accumulation_steps=2, lr_schedule=schedule)
    lrs = [e.learning_rate for e in seen if isinstance(e, ev.TrainReport)]
    # steps 2, 4, 6, 8 are updates 1-4; each report shows the rate the latest update used,
    # schedule(0..3): the schedule advances once per update, not per step
    assert lrs == pytest.approx([0.0, 1e-4, 2e-4, 3e-4], rel=1e-4, abs=1e-9)


def test_mlx_lm_fuse_accepts_the_adapter(demo_run, demo_model_dir, tmp_path):
    import subprocess
    import sys

    from mlx_lm.utils import load

    result, _ = demo_run
    out = tmp_path / "fused"
    done = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "fuse", "--model", str(demo_model_dir),
         "--adapter-path", str(result.adapter_dir), "--save-path", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    fused, tokenizer = load(str(out))
    tuned, _ = load(str(demo_model_dir), adapter_path=str(result.adapter_dir))
    ids = mx.array([tokenizer.encode("The capital of Norvania is")])
    assert np.allclose(np.array(fused(ids)), np.array(tuned(ids)), atol=1e-4)


def test_gradient_checkpointing_wraps_the_block_class_once(tmp_path):
    from mlx_lm.models.llama import TransformerBlock

    keys = dict(iters=2, steps_per_eval=100, val_batches=1, grad_checkpoint=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train(tmp_path / "a", **keys)
    wrapped = TransformerBlock.__call__
    train(tmp_path / "b", **keys)  # a second run in the same process, as in the app
    assert TransformerBlock.__call__ is wrapped


def test_val_batches_0_trains_without_validation(tmp_path):
    result, seen = train(tmp_path, iters=3, steps_per_report=1, steps_per_eval=1, val_batches=0)
    assert not [e for e in seen if isinstance(e, ev.EvalReport)]
    assert any(isinstance(e, ev.Notice) and "no validation" in e.message for e in seen)
    assert seen[0].valid_examples == 0 and seen[-1].step == 3


def test_early_stopping_without_validation_is_a_config_error(tmp_path):
    from engine.errors import UserError

    with pytest.raises(UserError, match="early_stopping_patience.*val_batches is 0"):
        train(tmp_path, iters=3, val_batches=0, early_stopping_patience=2)


def test_each_batch_shape_is_traced_once(tmp_path, monkeypatch):
    """The optimizer's state exists before the step is compiled, so its first update does not
    change the compiled step's inputs and trace every shape again (bench/README.md, "One trace per batch shape")."""
    from engine.training.loss_path import SparseLogits

    data = tmp_path / "same"
    data.mkdir()
    chat = {"messages": [{"role": "user", "content": "What is the opposite of 'loud'?"},
                         {"role": "assistant", "content": "quiet"}]}
    for split in ("train", "valid"):
        (data / f"{split}.jsonl").write_text((json.dumps(chat) + "\n") * 8)
    traced = []
    real = SparseLogits.loss
    monkeypatch.setattr(SparseLogits, "loss", lambda *a, **k: traced.append(1) or real(*a, **k))
    _, seen = train(tmp_path, data=str(data), iters=4, batch_size=4, val_batches=0, steps_per_report=1,
                    cpu_streams=1)  # the loss is called once per trace (split rows would call it once per part)
    assert [e.step for e in seen if isinstance(e, ev.TrainReport)] == [1, 2, 3, 4]
    assert len(traced) == 1  # one shape (every example is the same), one trace


def test_the_sparse_last_block_is_announced_only_where_it_can_apply(tmp_path):
    said = {}
    for plw in (0.0, 0.1):
        folder = tmp_path / str(plw)
        folder.mkdir()
        _, seen = train(folder, iters=1, val_batches=0, prompt_loss_weight=plw)
        said[plw] = planned(seen, "sparse last block")
    assert said[0.0].on and not said[0.1].on
    assert said[0.1].reason == "PLW > 0 reads every real position"
    assert not any(isinstance(e, ev.Notice) and "last block" in e.message for e in seen)  # one plan, not notices


def test_denormal_flushing_is_announced_where_it_applies(demo_run):
    from .test_denormals import X86_LINUX

    _, seen = demo_run
    assert planned(seen, "denormals flushed").on == (X86_LINUX and mx.default_device() == mx.cpu)

