"""Snapshot tests pin the look of the Config and Train screens (events injected, no thread)."""

import math

from engine import events as ev
from tui.app import TunerApp

CONFIG = """\
model: builtin:tiny-llama
prompt_loss_weight: 0.1
learning_rate: 1.0e-3
lr_schedule:
  name: cosine_decay
  arguments: [1.0e-3, 100, 1.0e-5]
  warmup: 10
iters: 100
batch_size: 8
"""


PLAN = (
    ev.LeverChoice("fast BLAS", True, "MLX's matmuls run on an optimised BLAS"),
    ev.LeverChoice("sparse logits", True, "the loss computes logits only at the positions it weighs"),
    ev.LeverChoice("fast SiLU", True, "22 MLPs: the MLP's sigmoid uses a polynomial exponential"),
    ev.LeverChoice("shared prefix", False, "no common prefix"),
    ev.LeverChoice("gradient checkpointing", False, "grad_checkpoint: false (faster; more memory)"),
)


def fake_run() -> list[ev.Event]:
    events = [
        ev.RunStarted(run_dir="runs/demo", adapter_dir="runs/demo/adapters", stage=1, stages=1,
                      config_file="demo.yaml", model="builtin:tiny-llama", fine_tune_type="lora",
                      prompt_loss_weight=0.1, total_steps=100, steps_per_epoch=50, train_examples=400,
                      valid_examples=50, trainable_params=167936, total_params=1000576, device="CPU",
                      compute_dtype="float32", time=0.0, compute_plan=PLAN),
        ev.Notice(message="computing in float32", time=0.0),
    ]
    for step in range(5, 65, 5):
        loss = 2.0 + 5.0 * math.exp(-step / 15)
        events.append(ev.TrainReport(
            step=step, total_steps=100, epoch=step / 50, loss=loss, prompt_loss=loss + 1, completion_loss=loss - 0.5,
            learning_rate=1e-3 * min(1, step / 10), grad_norm=1.0 / step ** 0.5, update_norm=step / 10,
            tokens_per_second=2000 + step, trained_tokens=step * 250, peak_memory_gb=0.5, active_memory_gb=0.3,
            cache_memory_gb=0.1, elapsed=step * 0.2, time=0.0))
        if step % 20 == 0:
            events.append(ev.EvalReport(
                step=step, split="valid", prompt_loss=loss + 1, completion_loss=loss - 0.4,
                full_loss=loss + 0.8, weighted_loss=loss, completion_accuracy=0.2 + step / 200,
                completion_perplexity=math.exp(loss - 0.4), prompt_tokens=1300, completion_tokens=200,
                examples=50, seconds=0.4, time=0.0))
            events.append(ev.SampleGenerated(step=step, prompt="What is the capital of Norvania?",
                                             completion="Velspar", reference="Velspar", time=0.0))
    events.append(ev.TrainReport(
        step=65, total_steps=100, epoch=1.3, loss=float("nan"), prompt_loss=float("nan"), completion_loss=float("nan"),
        learning_rate=8e-4, grad_norm=float("inf"), update_norm=6.6, tokens_per_second=2050, trained_tokens=16250,
        peak_memory_gb=0.5, active_memory_gb=0.3, cache_memory_gb=0.1, elapsed=13.0, time=0.0))
    return events


def make_app(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text(CONFIG)
    app = TunerApp("demo.yaml", runs_dir="runs", poll_memory=False)
    app.machine_memory_gb = 16.0
    monkeypatch.setattr("engine.levers.memory_plan.machine_memory", lambda: (16 * 10**9, None))  # the plan's "of 16 GB"
    return app


def test_train_screen(snap_compare, tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)

    async def inject(pilot):
        app.switch_mode("train")
        await pilot.pause(0.2)
        events = fake_run()
        for event in events:
            app.events.put(event)
        for _ in range(200):  # drained and shown, however busy the machine is
            await pilot.pause(0.05)
            if len(app.history) >= len(events) and app.events.empty():
                break
        await pilot.pause(0.3)
        app.train_screen.query_one("#train-log").scroll_end(animate=False)  # the log may still be scrolling
        await pilot.pause(0.3)

    assert snap_compare(app, run_before=inject, terminal_size=(120, 44))


def test_config_screen(snap_compare, tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)

    async def settle(pilot):
        screen = app.config_screen
        for _ in range(100):
            await pilot.pause(0.1)
            if "valid" in str(screen.query_one("#config-check").render()):
                break
        await pilot.pause(0.3)

    assert snap_compare(app, run_before=settle, terminal_size=(120, 36))
