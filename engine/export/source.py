"""What an export starts from: a run folder's base model, its adapter settings and the weights of
one checkpoint (or of the final adapter), found and checked without MLX.

A run folder keeps what mlx-lm needs to rebuild its model: ``adapter_config.json`` in the adapter
folder names the base model (the resolved local folder the run trained on) and the adapter kind,
rank and layers; ``adapters.safetensors`` beside it is the final adapter, and each
``checkpoints/step-NNNNNNN/adapters.safetensors`` a saved step's. Everything here is read before
any work, so a wrong run folder, step or base is one line naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.runs.checkpoints import WEIGHTS, Checkpoints, safetensors_problem
from engine.runs.folder import check_folder
from engine.runs.listing import read_view

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class ExportSource:
    """One run's trained model, as parts: the base folder (or hub id), the adapter settings and
    the weights file to apply to it."""

    run_dir: Path
    base: str  # the base model's local folder, or a Hugging Face id in the local cache
    adapter_config: dict  # adapter_config.json: fine_tune_type, num_layers, lora_parameters
    weights: Path  # the adapter (or full fine-tune) weights to apply
    step: int | None  # the checkpoint's step; None when it is the final adapter's (step unknown)

    @property
    def base_config(self) -> dict:
        """The base model's ``config.json`` (architecture, sizes, dtype, quantization)."""
        return json.loads(base_file(self.base, "config.json").read_text(encoding="utf-8"))

    @property
    def label(self) -> str:
        """The run's name and step, for file names and messages: ``myrun-step100``."""
        return f"{self.run_dir.name}-step{self.step}" if self.step is not None else self.run_dir.name


def find_source(run_dir: Path, checkpoint: int | None = None) -> ExportSource:
    """The parts of ``run_dir`` to export (``checkpoint``'s weights, else the final adapter's).

    UserErrors, one line each: not a run folder, no adapter, a checkpoint that does not exist
    (naming the ones that do), a damaged weights file, a base model that is gone.
    """
    run_dir = check_folder(Path(run_dir)).resolve()
    view = read_view(run_dir)
    adapter_dir = Path(view.started.adapter_dir) if view.started is not None else run_dir / "adapters"
    checkpoints = Checkpoints(run_dir, adapter_dir)
    settings = _adapter_config(run_dir, adapter_dir)
    if checkpoint is None:
        weights, step = checkpoints.adapter_file, checkpoints.final_step()
        if not weights.exists():
            raise UserError(f"{run_dir}: no trained adapter to export ({weights} is missing)")
    else:
        steps = [c.step for c in checkpoints.all()]
        if checkpoint not in steps:
            have = ", ".join(str(s) for s in steps) if steps else "none"
            raise UserError(f"{run_dir}: no checkpoint at step {checkpoint} (saved steps: {have})")
        weights, step = checkpoints.at(checkpoint).folder / WEIGHTS, checkpoint
    if (why := safetensors_problem(weights)) is not None:
        raise UserError(f"{weights}: {why}, so it holds no adapter weights to export")
    base = settings.get("model")
    if not isinstance(base, str) or not base:
        raise UserError(f"{adapter_dir / ADAPTER_CONFIG}: names no base model (key 'model')")
    base_file(base, "config.json")  # the base must still be there: a cleared cache, a moved folder
    return ExportSource(run_dir, base, settings, weights, step)


def _adapter_config(run_dir: Path, adapter_dir: Path) -> dict:
    path = adapter_dir / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{run_dir}: no trained adapter to export ({path} is missing)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({getattr(e, 'strerror', None) or 'not JSON'})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not an adapter config (expected a JSON object)")
    return data


def base_file(base: str, name: str) -> Path:
    """``name`` in the base model's folder, or in the Hugging Face cache for a hub id; a
    UserError when it is not there (nothing is downloaded to export)."""
    folder = Path(base).expanduser()
    if folder.is_dir():
        path = folder / name
        if path.is_file():
            return path
        raise UserError(f"{folder}: the run's base model has no {name}")
    if folder.is_absolute() or base.startswith((".", "~")):
        raise UserError(f"{base}: the run's base model folder is gone; it is needed to export the run")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(base, name)
    if isinstance(cached, str):
        return Path(cached)
    raise UserError(f"{base}: the run's base model is not in the local Hugging Face cache ({name})")
