"""A run's checkpoints on disk: the one place that knows their layout.

Under the run folder (the adapter folder is ``adapters/`` unless the config's ``adapter_path``
puts it elsewhere)::

    adapters/adapters.safetensors             the latest weights, where mlx-lm loads an adapter
    adapters/0000100_adapters.safetensors     a periodic save's copy, as mlx-lm keeps them
    checkpoints/step-0000100/                 one checkpoint, enough to resume exactly:
        adapters.safetensors                  the trainable weights
        optimizer.safetensors                 the optimizer state, flattened
        pending_grad.safetensors              gradients summed since the last update (saved
                                              between two updates of an accumulation only)
        state.json                            the data position (:class:`Position`)
    checkpoints/latest                        the newest checkpoint's folder name
    checkpoints/best.json                     the best validation: step, loss, folder name (null
                                              when it is step 0's, the weights before training;
                                              ``trained`` then names the best checkpoint)
    checkpoints/final.json                    the checkpoint the final adapter holds (the last save, or
                                              one promoted since), with the adapter file's size and time

Every file is written atomically (:mod:`engine.files`), and ``latest`` after the checkpoint it
names, so a run killed at any moment leaves one that loads. Randomness needs no state: training
reseeds every step from (seed, step).

Only rank 0 of a data-parallel run has a :class:`Checkpoints`; what goes into a save (the ranks'
pending gradients summed, the weights evaluated) is training's part (:mod:`engine.training.state`).
MLX is imported only where arrays are read back, so finding, listing and promoting checkpoints
(the CLI's check before a detached resume, the Runs screen) need no MLX.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.files import (
    atomic_save_safetensors,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

FOLDER = "checkpoints"
LATEST = "latest"
BEST = "best.json"
FINAL = "final.json"  # which checkpoint the final adapter holds (the last save, or one promoted since)
WEIGHTS = "adapters.safetensors"
OPTIMIZER = "optimizer.safetensors"
PENDING = "pending_grad.safetensors"
STATE = "state.json"
STEP = "step-"  # a checkpoint folder's name: STEP and its step in seven digits


def folder_name(step: int) -> str:
    return f"{STEP}{step:07d}"


@dataclass(frozen=True)
class Position:
    """Where training stood at a save: all that ``state.json`` holds, all a resume reads."""

    step: int  # the last step trained
    epoch: int  # the batch stream's epoch
    batch_index: int  # and the next batch within it
    trained_tokens: int  # real tokens trained on so far, over all ranks

    @classmethod
    def from_json(cls, data: dict) -> Position:
        """Read ``state.json``; older runs wrote more keys (the seed, the config file), skipped here."""
        return cls(**{f.name: int(data[f.name]) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Saved:
    """A checkpoint's contents as training restores them (flat name -> array dicts)."""

    position: Position
    weights: Path  # the trainable weights' file, loaded by engine.model.load.load_trained_weights
    optimizer: dict
    pending_grad: dict | None  # None when saved right after an update


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint folder of a run."""

    run_dir: Path
    folder: Path

    @property
    def step(self) -> int:
        return int(self.folder.name.removeprefix(STEP))

    def load(self) -> Saved:
        """Its position, weights file, optimizer state and pending gradients."""
        import mlx.core as mx  # here, not at the top: see the module docstring

        position = Position.from_json(json.loads((self.folder / STATE).read_text()))
        pending = self.folder / PENDING
        return Saved(
            position=position,
            weights=self.folder / WEIGHTS,
            optimizer=mx.load(str(self.folder / OPTIMIZER)),
            pending_grad=mx.load(str(pending)) if pending.exists() else None,
        )


@dataclass(frozen=True)
class Best:
    """The run's best validation so far (``best.json``). Step 0 is the weights training started
    from, which no checkpoint holds: ``checkpoint`` is None and ``trained`` is the best of the
    trained steps (None before one was validated)."""

    step: int
    completion_loss: float
    checkpoint: Checkpoint | None
    trained: Best | None = None


class Checkpoints:
    """A run folder's checkpoints: save, find (latest, best, every one), load, promote."""

    def __init__(self, run_dir: Path, adapter_dir: str | Path | None = None):
        self.run_dir = Path(run_dir)
        self.adapter_dir = Path(adapter_dir) if adapter_dir else self.run_dir / "adapters"
        self.root = self.run_dir / FOLDER

    @property
    def adapter_file(self) -> Path:
        """The latest weights, where mlx-lm loads an adapter (and a chain's next stage starts)."""
        return self.adapter_dir / WEIGHTS

    @staticmethod
    def relative(step: int) -> str:
        """The checkpoint of ``step`` as a path inside the run folder, for messages."""
        return f"{FOLDER}/{folder_name(step)}"

    def at(self, step: int) -> Checkpoint:
        return Checkpoint(self.run_dir, self.root / folder_name(step))

    def save(self, position: Position, weights: dict, optimizer: dict, pending_grad: dict | None,
             periodic: bool) -> Checkpoint:
        """Write a checkpoint of evaluated flat arrays, the adapter beside it, then ``latest``.

        ``adapters.safetensors`` in the adapter folder is always the latest weights; a periodic
        save (every ``save_every`` steps, the last step included) also keeps a numbered copy
        there, as mlx-lm does.
        """
        step = position.step
        atomic_save_safetensors(self.adapter_file, weights)
        if periodic:
            atomic_save_safetensors(self.adapter_dir / f"{step:07d}_{WEIGHTS}", weights)
        checkpoint = self.at(step)
        atomic_save_safetensors(checkpoint.folder / WEIGHTS, weights)
        atomic_save_safetensors(checkpoint.folder / OPTIMIZER, optimizer)
        if pending_grad is not None:
            atomic_save_safetensors(checkpoint.folder / PENDING, pending_grad)
        atomic_write_json(checkpoint.folder / STATE, dataclasses.asdict(position))
        atomic_write_text(self.root / LATEST, checkpoint.folder.name + "\n")
        self._mark_final(step)
        return checkpoint

    def latest(self) -> Checkpoint:
        """The checkpoint ``latest`` names (written last, atomically); a UserError when none."""
        pointer = self.root / LATEST
        if not pointer.exists():
            raise UserError(f"{self.run_dir}: no checkpoint to resume from")
        return Checkpoint(self.run_dir, self.root / pointer.read_text().strip())

    def mark_best(self, best: tuple[float, int], trained: tuple[float, int] | None = None) -> None:
        """Record the best validation, (completion loss, step): a step's checkpoint (saved
        already), or step 0's starting weights, with ``trained``, the best checkpointed one."""
        data = self._best_entry(*best)
        if best[1] == 0:
            data["before_training"] = True
            data["trained"] = self._best_entry(*trained) if trained is not None else None
        atomic_write_json(self.root / BEST, data)

    @staticmethod
    def _best_entry(completion_loss: float, step: int) -> dict:
        return {"step": step, "completion_loss": completion_loss, "checkpoint": folder_name(step) if step else None}

    def best(self) -> Best | None:
        try:
            data = json.loads((self.root / BEST).read_text())
        except (OSError, ValueError):
            return None

        def read(entry: dict | None) -> Best | None:
            if entry is None:
                return None
            step = entry["step"]
            return Best(step, entry["completion_loss"], self.at(step) if step else None, read(entry.get("trained")))

        return read(data)

    def all(self) -> list[Checkpoint]:
        """Every complete checkpoint (its ``state.json`` is written last), oldest first."""
        found = [Checkpoint(self.run_dir, p.parent) for p in self.root.glob(f"{STEP}*/{STATE}")]
        return sorted(found, key=lambda c: c.step)

    def final_step(self) -> int | None:
        """The step of the checkpoint whose weights the final adapter holds now: the last save, or
        the checkpoint promoted since. None when none matches.

        Read from ``final.json``, which saves and promotions write, while the adapter file is the
        one it describes (same size and modification time); otherwise (a run older than that
        file, a crash between the two writes, an adapter copied in by hand) the files are
        compared byte for byte, which reads them: callers keep it off a UI's event loop.
        """
        try:
            data = json.loads((self.root / FINAL).read_text())
            if data["adapter"] == self._adapter_stamp():
                return int(data["step"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return self._matching_step()

    def _matching_step(self) -> int | None:
        """The newest checkpoint whose weights are the final adapter's, byte for byte."""
        try:
            final = self.adapter_file.read_bytes()
        except OSError:
            return None
        for checkpoint in reversed(self.all()):
            weights = checkpoint.folder / WEIGHTS
            try:
                if weights.stat().st_size == len(final) and weights.read_bytes() == final:
                    return checkpoint.step
            except OSError:  # removed meanwhile
                continue
        return None

    def _adapter_stamp(self) -> list[int]:
        stat = self.adapter_file.stat()
        return [stat.st_size, stat.st_mtime_ns]

    def _mark_final(self, step: int) -> None:
        atomic_write_json(self.root / FINAL, {"step": step, "adapter": self._adapter_stamp()})

    def promote(self, step: int) -> Path:
        """Make a checkpoint's weights the run's final adapter (``adapters.safetensors``).

        The file mlx-lm loads is replaced atomically by the checkpoint's copy; the checkpoint itself
        and the numbered files stay, so any checkpoint can be promoted again later.
        """
        source = self.at(step).folder / WEIGHTS
        if not source.exists():
            raise UserError(f"{source}: no such checkpoint")
        atomic_write_bytes(self.adapter_file, source.read_bytes())
        self._mark_final(step)
        return self.adapter_file
