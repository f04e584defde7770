"""A run's validation prompts and their reference answers, to ask the model one after another."""

from __future__ import annotations

from pathlib import Path

from engine.config import load_stages
from engine.data.sources import load_splits
from engine.playground.stream import ValidPrompt
from engine.training.answers import answered, reference

MOST = 500  # prompts kept: far more than anyone steps through by hand


def validation_prompts(run_dir: Path, most: int = MOST) -> list[ValidPrompt]:
    """The validation records of the run's data that end in an answer, as the run's config reads
    them (the same held-out share when the data has no validation file). Reads the data: keep it
    off a UI's event loop."""
    stage = load_stages([Path(run_dir) / "config.yaml"])[0]
    records = answered(load_splits(stage).valid)[:most]
    return [ValidPrompt(tuple(r.messages[:-1]), reference(r) or "", r.origin) for r in records]
