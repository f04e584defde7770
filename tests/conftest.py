"""Shared fixtures: the demo model is built once per session into a temporary cache."""

import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "sample_configs" / "data" / "demo"


@pytest.fixture(scope="session")
def demo_model_dir(_private_cache) -> Path:
    from engine.model.demo import ensure_demo_model

    return ensure_demo_model()


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(demo_model_dir)


@pytest.fixture(scope="session", autouse=True)
def _process_settings():
    """The process-wide settings the tuner command makes first, made before any test runs MLX."""
    from engine.levers.process import prepare_process

    prepare_process()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Tests never touch the user's ~/.cache/tuner: builtin models go to a session folder."""
    if "TUNER_CACHE" not in os.environ:
        os.environ["TUNER_CACHE"] = str(tmp_path_factory.mktemp("tuner-cache"))
    yield


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """``tmp_path`` as the working folder: a command that got too far would write ``runs/`` there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(folder: Path, name: str = "run.yaml", **keys) -> Path:
    """A YAML config in ``folder`` training the demo model on the bundled demo data."""
    import yaml

    base = {
        "model": "builtin:tiny-llama",
        "data": str(DEMO_DATA),
        "runs_dir": str(folder / "runs"),
        "num_layers": -1,
        "lora_parameters": {"rank": 8, "scale": 2.0, "dropout": 0.0},
        "learning_rate": 2e-3,
        "batch_size": 8,
        "iters": 20,
        "steps_per_report": 5,
        "steps_per_eval": 10,
        "val_batches": 4,
        "save_every": 10,
        "max_seq_length": 256,
    }
    base.update(keys)
    path = folder / name
    path.write_text(yaml.safe_dump(base))
    return path


def planned(events: list, name: str):
    """The compute plan's choice for lever ``name``, from a run's run-started event."""
    started = next(e for e in events if e.kind == "run_started")
    return next(choice for choice in started.compute_plan if choice.name == name)


async def wait_until(pilot, predicate, seconds: float = 10.0) -> bool:
    """Let a Textual app run until ``predicate()`` holds; False if it never does in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await pilot.pause(0.05)
        if predicate():
            return True
    return False
