"""A model loaded once for talking to it, switched between its base weights and a run's adapters.

A run's trainable layers (LoRA, DoRA or whole layers) are built as training built them, from the
run's own ``config.yaml``; right after they are added, before any adapter is loaded, their
values *are* the base model (LoRA's ``B`` starts at zero, DoRA's magnitude at the weight's norm,
full tuning's layers at the base's). Those arrays are kept, so "base" is loading them back and a
checkpoint is loading its ``adapters.safetensors``: switching costs one small file, not a reload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import yaml

from engine.config import load_stages
from engine.errors import UserError
from engine.model.load import LoadedModel, load_base, load_trained_weights, setup_trainable, trainable_weights
from engine.runs.checkpoints import Checkpoints

BASE = "base"
FINAL = "final"


def is_run_folder(source: str | Path) -> bool:
    return (Path(source).expanduser() / "config.yaml").is_file()


def model_stage(model: str):
    """A one-key config naming ``model``, so a bare model resolves and loads as training's would."""
    label = "tuner generate"  # stands in for a config file in error messages
    return load_stages([label], texts={label: yaml.safe_dump({"model": model})})[0]


@dataclass
class Playground:
    """The loaded model and what it can be switched to (``BASE``, ``FINAL`` or a checkpoint's step)."""

    loaded: LoadedModel
    run_dir: Path | None
    checkpoints: Checkpoints | None
    base_weights: dict = field(default_factory=dict)
    using: str | int = BASE

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def context_length(self) -> int:
        """Tokens the model was built to read (its config's ``max_position_embeddings``, else its
        tokenizer's ``model_max_length`` when that is a real number, else 2,048)."""
        length = self.loaded.config.get("max_position_embeddings")
        if not length:
            length = getattr(self.tokenizer, "model_max_length", 0)
            length = length if 0 < int(length or 0) < 10**7 else 2048  # transformers' "no limit" is 1e30
        return int(length)

    def steps(self) -> list[int]:
        """The run's checkpoints, oldest first (none for a bare model)."""
        return [c.step for c in self.checkpoints.all()] if self.checkpoints is not None else []

    def has_final(self) -> bool:
        return self.checkpoints is not None and self.checkpoints.adapter_file.is_file()

    def use(self, which: str | int) -> None:
        """Switch to the base (``BASE``), the run's final adapter (``FINAL``) or checkpoint ``which``."""
        if which == self.using:
            return
        if which == BASE:
            self.model.load_weights(list(self.base_weights.items()), strict=False)
        else:
            load_trained_weights(self.model, self.weights_file(which))
        settle(self.model)
        self.using = which

    def weights_file(self, which: str | int) -> Path:
        if self.checkpoints is None:
            raise UserError(f"{self.loaded.path}: a model, not a run folder, so it has no adapters (only the base)")
        return weights_file(self.checkpoints, which)


def weights_file(checkpoints: Checkpoints, which: str | int) -> Path:
    """The adapter file of the run's final adapter (``FINAL``) or of checkpoint ``which``; a
    UserError naming what is there when it is missing."""
    if which == FINAL:
        path = checkpoints.adapter_file
    else:
        path = checkpoints.at(int(which)).folder / "adapters.safetensors"
        if not path.is_file():
            steps = ", ".join(str(c.step) for c in checkpoints.all()) or "none"
            raise UserError(f"{checkpoints.run_dir}: no checkpoint at step {which} (its checkpoints: {steps})")
    if not path.is_file():
        raise UserError(f"{path}: missing, so the run has no trained adapter yet")
    return path


def run_checkpoints(run_dir: Path) -> Checkpoints:
    """A run folder's checkpoints, where its config puts its adapters (reads the config only)."""
    stage = load_stages([Path(run_dir) / "config.yaml"])[0]
    return Checkpoints(Path(run_dir), stage.config.adapter_path)


def settle(model) -> None:
    """Evaluate the weights now. MLX computes lazily on the thread's own stream, and the app
    loads on one worker thread and answers on others: an array left unevaluated here would be
    computed later on a thread that lacks the stream it was made on."""
    mx.eval(model.parameters())


def open_playground(source: str | Path) -> Playground:
    """Load a run folder's base model with its trainable layers (starting on the base weights), or
    a bare model (a folder, a hub id, ``builtin:...``, a ``.gguf``). Takes seconds: keep it off a
    UI's event loop."""
    if not is_run_folder(source):
        loaded = load_base(model_stage(str(source)))
        loaded.model.eval()
        settle(loaded.model)
        return Playground(loaded, None, None)
    run_dir = Path(source).expanduser().resolve()
    stage = load_stages([run_dir / "config.yaml"])[0]
    loaded = load_base(stage)
    setup_trainable(loaded.model, stage.config)
    loaded.model.eval()  # no dropout while answering
    settle(loaded.model)
    base = trainable_weights(loaded.model)  # arrays are immutable: these stay the base's
    return Playground(loaded, run_dir, Checkpoints(run_dir, stage.config.adapter_path), base)
