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
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError, first_line
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
    """One checkpoint folder of a run. ``skipped``: why a resume passed over newer checkpoints to
    reach this one (each a damaged file), for the notice it shows."""

    run_dir: Path
    folder: Path
    skipped: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    @property
    def step(self) -> int:
        return int(self.folder.name.removeprefix(STEP))

    def load(self) -> Saved:
        """Its position, weights file, optimizer state and pending gradients; a UserError naming
        the file that does not load."""
        import mlx.core as mx  # here, not at the top: see the module docstring

        def arrays(path: Path) -> dict:
            try:
                return mx.load(str(path))
            except (OSError, ValueError, RuntimeError) as e:
                raise UserError(f"{path}: damaged, it does not load ({first_line(e)})") from None

        pending = self.folder / PENDING
        return Saved(
            position=self._position(),
            weights=self.folder / WEIGHTS,
            optimizer=arrays(self.folder / OPTIMIZER),
            pending_grad=arrays(pending) if pending.exists() else None,
        )

    def _position(self) -> Position:
        """``state.json`` read back; a UserError naming it when it is cut off or lacks a value."""
        path = self.folder / STATE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise UserError(f"{path}: unreadable ({e.strerror})") from None
        except ValueError:  # UnicodeDecodeError included
            raise UserError(f"{path}: damaged (cut off or not JSON)") from None
        try:
            return Position.from_json(data)
        except KeyError as e:
            raise UserError(f"{path}: damaged, it lacks the key {e}") from None
        except (ValueError, TypeError, OverflowError):
            raise UserError(f"{path}: damaged (its values are not whole numbers)") from None

    def problem(self) -> str | None:
        """What makes this checkpoint unloadable, naming the file ("PATH: why"); None when every
        file is whole. Reads ``state.json`` and the safetensors headers only, without MLX."""
        try:
            self._position()
        except UserError as e:
            return str(e)
        for name in (WEIGHTS, OPTIMIZER, PENDING):
            path = self.folder / name
            if name == PENDING and not path.exists():
                continue  # saved right after an update: there were no pending gradients
            if (why := safetensors_problem(path)) is not None:
                return f"{path}: {why}"
        return None


@dataclass(frozen=True)
class Best:
    """The run's best validation so far (``best.json``). Step 0 is the weights training started
    from, which no checkpoint holds: ``checkpoint`` is None and ``trained`` is the best of the
    trained steps (None before one was validated)."""

    step: int
    value: float  # of ``metric``
    checkpoint: Checkpoint | None
    trained: Best | None = None
    metric: str = "completion_loss"  # the run's best_metric


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

    def resumable(self) -> Checkpoint:
        """The checkpoint a resume continues from: the one ``latest`` names when its files are
        whole, else the newest earlier one that is, with ``skipped`` saying what was passed over
        (a kill or a full disk can damage a file the atomic writes did not cover: a copy, a
        restore from backup). A UserError naming the damaged file when none is whole."""
        named, skipped = self._named_latest(), []
        if isinstance(named, str):
            skipped.append(named)
            named = None
        older = [c for c in reversed(self.all()) if named is None or c.step < named.step]
        for checkpoint in ([named] if named is not None else []) + older:
            if (why := checkpoint.problem()) is None:
                return dataclasses.replace(checkpoint, skipped=tuple(
                    f"{reason}; resuming from the last whole checkpoint, {FOLDER}/{checkpoint.folder.name}, instead"
                    for reason in skipped))
            skipped.append(why)
        if skipped:
            raise UserError(f"{skipped[0]}; no earlier checkpoint is whole, so the run cannot be resumed")
        raise UserError(f"{self.run_dir}: no checkpoint to resume from")

    def _named_latest(self) -> Checkpoint | str | None:
        """The checkpoint ``latest`` names, None without the file, or why it names none."""
        pointer = self.root / LATEST
        try:
            name = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            return f"{pointer}: damaged ({first_line(e)})"
        if not name:
            return f"{pointer}: empty"
        if not name.startswith(STEP) or not name.removeprefix(STEP).isdigit() or not (self.root / name).is_dir():
            return f"{pointer}: names {name[:80]!r}, which is no checkpoint here"
        return Checkpoint(self.run_dir, self.root / name)

    def mark_best(self, best: tuple[float, int], trained: tuple[float, int] | None = None,
                  metric: str = "completion_loss") -> None:
        """Record the best validation, (value of ``metric``, step): a step's checkpoint (saved
        already), or step 0's starting weights, with ``trained``, the best checkpointed one."""
        data = self._best_entry(*best, metric)
        if best[1] == 0:
            data["before_training"] = True
            data["trained"] = self._best_entry(*trained, metric) if trained is not None else None
        atomic_write_json(self.root / BEST, data)

    @staticmethod
    def _best_entry(value: float, step: int, metric: str) -> dict:
        entry = {"step": step, "metric": metric, "value": value, "checkpoint": folder_name(step) if step else None}
        if metric == "completion_loss":  # what best.json said before best_metric
            entry["completion_loss"] = value
        return entry

    def best(self) -> Best | None:
        try:
            data = json.loads((self.root / BEST).read_text())
        except (OSError, ValueError):
            return None

        def read(entry: dict | None) -> Best | None:
            if entry is None:
                return None
            step = entry["step"]
            value = entry["value"] if "value" in entry else entry["completion_loss"]
            return Best(step, value, self.at(step) if step else None, read(entry.get("trained")),
                        entry.get("metric", "completion_loss"))

        return read(data)

    def all(self) -> list[Checkpoint]:
        """Every complete checkpoint (its ``state.json`` is written last), oldest first."""
        found = [Checkpoint(self.run_dir, p.parent) for p in self.root.glob(f"{STEP}*/{STATE}")
                 if p.parent.name.removeprefix(STEP).isdigit()]
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


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (missing, a folder, empty, cut off, not one at
    all), or None. Reads the header only: 8 bytes of length, a JSON table of tensors whose data
    offsets must end exactly where the file does."""
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            return "a folder, not a file"
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block the read, or never end
            return "not a regular file"
        if info.st_size == 0:
            return "empty (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else info.st_size
            if length > min(info.st_size - 8, _MAX_HEADER):
                return f"cut off ({info.st_size} bytes), or not a safetensors file"
            header = json.loads(f.read(length))
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    except ValueError:
        return "not a safetensors file (its header is not JSON)"
    try:
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "not a safetensors file (its header is not a table of tensors)"
    if end != info.st_size - 8 - length:
        return f"cut off: its tensors need {end + 8 + length} bytes, it holds {info.st_size}"
    return None


_MAX_HEADER = 100_000_000  # the safetensors format's own limit on the header


def adapter_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be loaded as adapter weights (``resume_adapter_file``), or None."""
    why = safetensors_problem(path)
    if why is None:
        return None
    return f"no such file: {path}" if why == "missing" else f"{path}: {why}, so it holds no adapter weights"
