"""A run killed at any moment (SIGKILL, mid-save) leaves a checkpoint that loads."""

import json
import os
import signal
import subprocess
import sys
import time

import mlx.core as mx

from engine.runs.checkpoints import Checkpoints

from .conftest import REPO, write_config


def test_sigkill_while_saving_every_step_leaves_a_loadable_checkpoint(tmp_path):
    config = write_config(tmp_path, iters=100000, save_every=1, steps_per_eval=100000, steps_per_report=1)
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(tmp_path.glob("runs/*/checkpoints/step-*"))) < 6:
            time.sleep(0.1)
        time.sleep(0.137)  # somewhere inside the next save, most likely
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    [run_dir] = tmp_path.glob("runs/*")
    ckpt = Checkpoints(run_dir).latest().folder
    state = json.loads((ckpt / "state.json").read_text())
    assert ckpt.name == f"step-{state['step']:07d}" and state["step"] >= 5
    assert mx.load(str(ckpt / "adapters.safetensors")) and mx.load(str(ckpt / "optimizer.safetensors"))
    assert mx.load(str(run_dir / "adapters" / "adapters.safetensors"))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines[:-1])  # only the very last line may be torn


def test_appending_after_a_torn_line_keeps_the_new_events(tmp_path):
    from engine import events as ev
    from engine.runs.metrics import MetricsWriter, read_events

    (tmp_path / "metrics.jsonl").write_text('{"event": "notice", "message": "ok"}\n{"event": "tra')
    writer = MetricsWriter(tmp_path)
    writer(ev.Notice(message="after the crash"))
    writer.close()
    assert [e.message for e in read_events(tmp_path)] == ["ok", "after the crash"]
