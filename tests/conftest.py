"""Shared fixtures: the demo model is built once per session into a temporary cache."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "sample_configs" / "data" / "demo"


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    from engine.demo_model import ensure_demo_model

    cache = Path(os.environ.get("TUNER_CACHE") or tmp_path_factory.mktemp("tuner-cache"))
    return ensure_demo_model(cache)


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(demo_model_dir)
