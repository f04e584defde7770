"""The memory guard checkpoints, then stops (headless) or pauses (app), before swapping starts."""

import threading

from engine import events as ev
from engine.config import load_stages
from engine.runs.control import Control
from engine.training.memory_guard import MemoryGuard, MemoryReading
from engine.training.chain import run_chain

from .conftest import write_config


def readings(*values):
    it = iter(values)
    return lambda: next(it)


def test_guard_fires_on_memory_use_and_on_swap_growth():
    guard = MemoryGuard(90, 2.0, readings(MemoryReading(50, 1.0), MemoryReading(91, 1.0)))
    assert "91% used" in guard.check()
    guard = MemoryGuard(90, 2.0, readings(MemoryReading(50, 1.0), MemoryReading(60, 2.5), MemoryReading(60, 3.5)),
                        every_seconds=0.0)
    assert guard.check() is None
    assert "swap grew by 2.5 GB" in guard.check()


def test_guard_reads_memory_at_most_once_per_interval():
    guard = MemoryGuard(90, 2.0, readings(MemoryReading(50, 1.0), MemoryReading(50, 1.0), MemoryReading(95, 1.0)),
                        every_seconds=3600)
    assert guard.check() is None
    assert guard.check() is None  # within the hour: the 95% reading is not taken yet


def test_headless_run_stops_with_a_checkpoint(tmp_path, monkeypatch):
    from engine.runs.checkpoints import Checkpoints

    written = []
    real_save = Checkpoints.save
    monkeypatch.setattr(Checkpoints, "save", lambda self, position, *a, **k: written.append(position.step)
                        or real_save(self, position, *a, **k))
    seen = []
    config = write_config(tmp_path, memory_limit_percent=0.1, iters=50, steps_per_eval=100, val_batches=1)
    [result] = run_chain(load_stages([config]), seen.append)
    assert result.status == "stopped" and result.step == 1
    assert "memory" in seen[-1].message
    reasons = [e.reason for e in seen if isinstance(e, ev.CheckpointSaved)]
    assert reasons == ["memory", "stopped"]
    assert written == [1]  # the stop's save of the same step is told, not written a second time
    assert (result.run_dir / "checkpoints" / "step-0000001" / "optimizer.safetensors").exists()


def test_app_style_control_pauses_instead(tmp_path):
    seen = []
    control = Control(pause_on_memory_pressure=True)
    paused = threading.Event()

    def emit(event):
        seen.append(event)
        if isinstance(event, ev.StateChanged) and event.state == "paused":
            paused.set()

    def stop_when_paused():
        paused.wait(60)
        control.stop()

    threading.Thread(target=stop_when_paused).start()
    config = write_config(tmp_path, memory_limit_percent=0.1, iters=50, steps_per_eval=100, val_batches=1)
    [result] = run_chain(load_stages([config]), emit, control)
    assert paused.is_set() and result.status == "stopped"
    assert any(isinstance(e, ev.Notice) and "checkpoint saved" in e.message for e in seen)
