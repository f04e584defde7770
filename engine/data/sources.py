"""Where a stage's records come from, split into train, valid and test.

Sources: a folder with ``train``/``valid``/``test`` files (see :mod:`engine.data.rows` for the
file types), a single such file (a validation share is split off it), a Hugging Face dataset id,
or mlx-tuning-fork's ``hf_dataset`` list. Every row becomes a :class:`~engine.data.records.Record`.

The loaders take the ``errors`` list of :mod:`engine.data.rows`: without one, the first bad row
stops the load; with one, bad rows are noted there and skipped.

``datasets`` is imported only when a hub dataset is read: it takes seconds to import, and most
datasets are local files.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.records import Features, Record, parse_rows
from engine.data.rows import FILE_SUFFIXES, read_records
from engine.errors import DataError
from engine.files import not_a_regular_file
from engine.hub import explain_failure, looks_like_local_path, offline_unless_reachable

SPLIT_NAMES = {
    "train": ("train",),
    "valid": ("valid", "validation", "val", "dev"),
    "test": ("test",),
}


@dataclass
class Splits:
    """A stage's records by split, with notes on how they were found (a held-out share, say)."""

    train: list[Record] = field(default_factory=list)
    valid: list[Record] = field(default_factory=list)
    test: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def split_file(folder: Path, split: str) -> Path | None:
    """The one file of ``split`` in ``folder``, or None. Two (``train.jsonl`` and ``train.csv``,
    or ``valid.jsonl`` and ``validation.jsonl``) are refused: reading one would silently drop the
    other. A broken link counts as there, so that reading it says what is wrong with it."""
    found = [
        folder / f"{name}{suffix}"
        for name in SPLIT_NAMES[split]
        for suffix in FILE_SUFFIXES
        if os.path.lexists(folder / f"{name}{suffix}")
    ]
    if len(found) > 1:
        names = ", ".join(f.name for f in found[:-1]) + f" and {found[-1].name}"
        raise DataError(f"{folder}: {names} each hold the {split} split; keep one and move the "
                        "others out of the folder (tuner would read only one)")
    return found[0] if found else None


def hold_out(records: list[Record], fraction: float, seed: int) -> tuple[list, list]:
    """Split a deterministic random ``fraction`` off ``records`` for validation."""
    if fraction <= 0 or len(records) < 2:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(len(records) * fraction))
    held = set(order[:n_valid])
    train = [r for i, r in enumerate(records) if i not in held]
    valid = [r for i, r in enumerate(records) if i in held]
    return train, valid


def load_local(
    path: Path, features: Features, valid_fraction: float, seed: int, errors: list[str] | None = None
) -> Splits:
    """A folder of split files, or one file that a validation share is split off."""
    splits = Splits()
    if path.is_dir():
        files = {split: split_file(path, split) for split in SPLIT_NAMES}
        if files["train"] is None:
            raise DataError(f"{path}: no train file (expected train.jsonl, .json, .csv or .parquet)")
        for split, file in files.items():
            if file is not None:
                setattr(splits, split, read_records(file, features, errors))
        if not splits.valid and valid_fraction > 0:
            splits.train, splits.valid = hold_out(splits.train, valid_fraction, seed)
            splits.notes.append(f"no valid file: held out {len(splits.valid)} training records")
        return splits
    records = read_records(path, features, errors)
    splits.train, splits.valid = hold_out(records, valid_fraction, seed)
    if splits.valid:
        splits.notes.append(f"held out {len(splits.valid)} of {len(records)} records for validation")
    return splits


# --------------------------------------------------------------------------- Hugging Face


def _hf_records(rows, origin: str, features: Features, errors: list[str] | None) -> list[Record]:
    return parse_rows(((dict(row), f"{origin}#{i}") for i, row in enumerate(rows)), features, errors)


def load_hf_id(
    data_id: str, features: Features, valid_fraction: float, seed: int, errors: list[str] | None = None
) -> Splits:
    """``datasets.load_dataset(id)`` with its train / valid(ation) / test splits."""
    import datasets

    offline_unless_reachable()
    dataset = datasets.load_dataset(data_id)
    splits = Splits()
    for split, names in SPLIT_NAMES.items():
        for name in names:
            if name in dataset:
                setattr(splits, split, _hf_records(dataset[name], f"{data_id}[{name}]", features, errors))
                break
    if not splits.train:
        raise DataError(f"{data_id}: the dataset has no 'train' split")
    if not splits.valid:
        splits.train, splits.valid = hold_out(splits.train, valid_fraction, seed)
    return splits


def load_hf_list(entries, base: Features, errors: list[str] | None = None) -> Splits:
    """mlx-lm / mlx-tuning-fork ``hf_dataset`` entries, concatenated split by split."""
    import datasets

    offline_unless_reachable()
    splits = Splits()
    for entry in entries:
        features = Features(
            prompt=entry.prompt_feature or base.prompt,
            completion=entry.completion_feature or base.completion,
            text=entry.text_feature or base.text,
            chat=entry.chat_feature or base.chat,
            system=entry.system_feature or base.system,
        )
        wanted = {"train": entry.train_split, "valid": entry.valid_split, "test": entry.test_split}
        for split, hf_split in wanted.items():
            if hf_split:
                rows = datasets.load_dataset(entry.path, split=hf_split, **(entry.config or {}))
                origin = f"{entry.path}[{hf_split}]"
                getattr(splits, split).extend(_hf_records(rows, origin, features, errors))
    return splits


# --------------------------------------------------------------------------- entry point


def data_path(stage) -> Path | None:
    """The local file or folder the stage's ``data`` names, or None for a Hugging Face dataset id.

    A name that looks like a path (see :func:`engine.hub.looks_like_local_path`) but is not
    there is a mistake at the ``data`` key, not a hub id to try.
    """
    data = stage.config.data
    path = Path(data).expanduser()
    if path.exists():
        return path
    if path.is_symlink():  # a dangling link or a loop: not a hub id, and not "missing" either
        raise stage.error("data", f"{data}: {not_a_regular_file(path)}")
    if looks_like_local_path(data, FILE_SUFFIXES):
        raise stage.error("data", f"no such file or folder: {data}")
    return None


def check_local_data(stages) -> None:
    """Refuse a chain whose local data is missing in any stage before the first trains, so a
    mistake in stage 3 does not wait for stages 1 and 2. Only that the files are there: their
    records are read (and checked) when each stage starts, hub datasets when they are loaded."""
    for stage in stages:
        cfg = stage.config
        if cfg.hf_dataset:
            continue
        if cfg.data is None:
            raise stage.error("data", "no dataset: set 'data' (a folder, a file or a Hugging Face id) or 'hf_dataset'")
        path = data_path(stage)  # raises for a local path that is not there
        if path is not None and path.is_dir() and split_file(path, "train") is None:
            raise stage.error("data", f"{path}: no train file (expected train.jsonl, .json, .csv or .parquet)")


def load_splits(stage, errors: list[str] | None = None) -> Splits:
    """The train / valid / test records of a config stage; bad rows raise unless ``errors`` is given."""
    cfg = stage.config
    features = Features(
        prompt=cfg.prompt_feature,
        completion=cfg.completion_feature,
        text=cfg.text_feature,
        chat=cfg.chat_feature,
        system=cfg.system_feature,
    )
    if cfg.hf_dataset:
        try:
            splits = load_hf_list(cfg.hf_dataset, features, errors)
        except DataError:
            raise
        except Exception as e:  # the hub raises many types; the user needs one line
            raise stage.error("hf_dataset", f"could not load: {explain_failure(e, 'dataset')}") from None
    elif cfg.data is None:
        raise stage.error("data", "no dataset: set 'data' (a folder, a file or a Hugging Face id) or 'hf_dataset'")
    elif (path := data_path(stage)) is not None:
        splits = load_local(path, features, cfg.valid_fraction, cfg.seed, errors)
    else:
        try:
            splits = load_hf_id(cfg.data, features, cfg.valid_fraction, cfg.seed, errors)
        except DataError:
            raise
        except Exception as e:
            why = explain_failure(e, "dataset")
            raise stage.error(
                "data",
                f"{cfg.data!r} is not a local file or folder, and loading it as a Hugging Face dataset failed: {why}",
            ) from None
    if not splits.train:
        unread = f" ({len(errors)} rows could not be read; the first: {errors[0]})" if errors else ""
        raise stage.error("data", f"the training split is empty{unread}")
    return splits
