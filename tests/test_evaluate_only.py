"""``train: false``: evaluate the model (with adapters, if given) on the valid and test splits and
report, without training, as mlx-lm's ``--test`` without ``--train``."""

import asyncio
import subprocess
import sys

import pytest

from engine import events as ev
from engine.config import load_stages
from engine.errors import UserError
from engine.runs.control import Control
from engine.runs.metrics import read_events
from engine.training.chain import resume_run, run_chain
from tui.app import TunerApp

from .conftest import REPO, wait_until, write_config

KEYS = dict(iters=10, steps_per_eval=1000, val_batches=2, test_batches=2, save_every=1000, steps_per_report=5)


def run(folder, **keys):
    folder.mkdir(exist_ok=True)
    seen = []
    results = run_chain(load_stages([write_config(folder, **{**KEYS, **keys})]), seen.append)
    return results[-1], seen


def evals(events) -> dict:
    return {e.split: e for e in events if isinstance(e, ev.EvalReport)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short trained run, tested at its end (test: true), to evaluate again."""
    return run(tmp_path_factory.mktemp("trained"), test=True)


def test_it_evaluates_the_given_adapters_without_training(tmp_path, trained):
    result, trained_events = trained
    adapters = result.adapter_dir / "adapters.safetensors"
    before = adapters.read_bytes()
    _, seen = run(tmp_path, train=False, resume_adapter_file=str(adapters))
    assert not [e for e in seen if isinstance(e, (ev.TrainReport, ev.CheckpointSaved))]
    reports = evals(seen)
    assert sorted(reports) == ["test", "valid"] and all(e.step == 0 for e in reports.values())
    # the same weights on the same batches: the trained run's last numbers again
    final = {e.split: e for e in trained_events if isinstance(e, ev.EvalReport) and e.step == 10}
    for split in ("valid", "test"):
        assert reports[split].completion_loss == pytest.approx(final[split].completion_loss, rel=1e-5)
    finished = seen[-1]
    assert isinstance(finished, ev.RunFinished) and finished.status == "completed" and finished.step == 0
    assert "no training" in finished.message and str(adapters) in finished.message
    assert seen[0].total_steps == 0
    assert adapters.read_bytes() == before  # evaluating writes no adapters


def test_without_adapters_it_evaluates_the_base_model(tmp_path, trained):
    _, trained_events = trained
    result, seen = run(tmp_path, train=False)
    reports = evals(seen)
    base = {e.split: e for e in trained_events if isinstance(e, ev.EvalReport) and e.step == 0}
    assert reports["valid"].completion_loss == pytest.approx(base["valid"].completion_loss, rel=1e-5)
    assert reports["test"].completion_loss > reports["valid"].completion_loss - 5  # it ran on the test split
    assert "the base model" in seen[-1].message
    assert not (result.run_dir / "adapters").exists()  # nothing for mlx-lm to mistake for trained adapters
    assert not (result.run_dir / "checkpoints").exists()
    assert [type(e) for e in read_events(result.run_dir)] == [type(e) for e in seen]


def test_adapter_path_names_the_adapters_as_in_mlx_lm(tmp_path, trained):
    result, trained_events = trained
    _, seen = run(tmp_path, train=False, adapter_path=str(result.adapter_dir))
    final = {e.split: e for e in trained_events if isinstance(e, ev.EvalReport) and e.step == 10}
    assert evals(seen)["valid"].completion_loss == pytest.approx(final["valid"].completion_loss, rel=1e-5)
    with pytest.raises(UserError, match="adapter_path.*train: false evaluates the adapters there"):
        run(tmp_path / "missing", train=False, adapter_path=str(tmp_path / "nowhere"))


def test_only_a_chains_last_stage_can_evaluate_only(tmp_path):
    first = write_config(tmp_path, "a.yaml", train=False)
    second = write_config(tmp_path, "b.yaml")
    with pytest.raises(UserError, match="a.yaml.*train.*only a chain's last stage"):
        run_chain(load_stages([first, second]), lambda e: None)


def test_a_stopped_runs_config_saying_train_false_still_resumes_training(tmp_path):
    """Run folders written before ``train`` meant anything say ``train: false``."""
    control = Control()

    def stop_at_5(event):
        if isinstance(event, ev.TrainReport) and event.step == 5:
            control.stop()

    [stopped] = run_chain(load_stages([write_config(tmp_path, **KEYS)]), stop_at_5, control)
    config = stopped.run_dir / "config.yaml"
    assert "train: true" in config.read_text()
    config.write_text(config.read_text().replace("train: true", "train: false"))
    seen = []
    resumed = resume_run(stopped.run_dir, seen.append)
    assert resumed.status == "completed" and resumed.step == 10
    assert [e.step for e in seen if isinstance(e, ev.TrainReport)] == [10]


def test_tuner_train_with_train_false_prints_the_evaluations(tmp_path, trained):
    result, _ = trained
    config = write_config(tmp_path, train=False, resume_adapter_file=str(result.adapter_dir / "adapters.safetensors"),
                          **KEYS)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "train", str(config)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "valid" in out and "test" in out and "completed at step 0" in out
    assert "train: false: evaluated" in out


def test_nothing_to_evaluate_is_a_config_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"prompt": "Opposite of hot?", "completion": "cold"}\n' * 8)
    with pytest.raises(UserError, match="train: false evaluates the valid and test splits, and there is neither: the data has no test split"):
        run(tmp_path, train=False, data=str(data), val_batches=0)


def test_t_in_the_app_evaluates_and_shows_the_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path, train=False, **KEYS)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.5)
            await pilot.press("t")
            assert await wait_until(pilot, lambda: any(isinstance(e, ev.RunFinished) for e in app.history), 60)
            assert await wait_until(pilot, lambda: app.control is None, 10)
            splits = sorted(e.split for e in app.history if isinstance(e, ev.EvalReport))
            assert splits == ["test", "valid"]
            assert not any(isinstance(e, (ev.TrainReport, ev.RunFailed)) for e in app.history)
            assert app.current_mode == "train"

    asyncio.run(scenario())
