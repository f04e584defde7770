"""A short trained run shared by the playground's and ``tuner generate``'s tests (trained once per
test session): the demo model, checkpoints at steps 3 and 6, a learning rate high enough that
the adapter's answers differ from the base's."""

from __future__ import annotations

from pathlib import Path

from .conftest import write_config

_TRAINED: dict[str, Path] = {}


def trained_run(tmp_path_factory) -> Path:
    if "run" not in _TRAINED:
        from engine.config import load_stages
        from engine.training.chain import run_chain

        folder = tmp_path_factory.mktemp("playground-run")
        config = write_config(folder, iters=6, save_every=3, steps_per_eval=100, val_batches=1,
                              learning_rate=3e-2)
        [result] = run_chain(load_stages([config]), lambda e: None)
        assert result.status == "completed"
        _TRAINED["run"] = result.run_dir
    return _TRAINED["run"]
