"""Datasets: find the rows, detect each record's format, and normalise it.

Sources: a folder with ``train``/``valid``/``test`` files (``.jsonl``, ``.json``, ``.csv`` or
``.parquet``), a single such file (a validation share is split off it), a Hugging Face dataset
id, or mlx-tuning-fork's ``hf_dataset`` list. Each record is detected on its own (mlx-lm looks
at the first row only), so mixed files work:

- chat: ``{"messages": [...], "system"?: str, "tools"?: [...]}``
- prompt/completion: ``{"prompt": str, "completion": str}``
- instruction/input/output (Alpaca): ``{"instruction", "input"?, "output"}``
- plain text: ``{"text": str}``

The field names of chat, prompt, completion and text can be overridden in the config.

Reading is strict by default: training stops at the first bad row, naming its file and line.
The loaders also take an ``errors`` list; with one, a bad row adds its one-line message there
and is skipped, so ``tuner inspect`` can report every bad row and still count the good ones.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from engine.errors import DataError, first_line

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SPLIT_NAMES = {
    "train": ("train",),
    "valid": ("valid", "validation", "val", "dev"),
    "test": ("test",),
}
CHAT_ROLES = {"system", "user", "assistant", "tool", "developer"}


@dataclass(frozen=True)
class Features:
    """Field names to read; mlx-lm's ``*_feature`` keys."""

    prompt: str = "prompt"
    completion: str = "completion"
    text: str = "text"
    chat: str = "messages"


@dataclass(frozen=True)
class Record:
    """One normalised example. ``messages`` is set for every format but plain text."""

    fmt: str  # chat | completion | alpaca | text
    origin: str  # where it came from, e.g. "data/train.jsonl:12"
    messages: tuple[dict, ...] | None = None
    text: str | None = None
    tools: Any = None


@dataclass
class Splits:
    train: list[Record] = field(default_factory=list)
    valid: list[Record] = field(default_factory=list)
    test: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- record parsing


def parse_record(raw: Any, origin: str, features: Features = Features()) -> Record:
    """Detect the format of one row and normalise it, or raise a DataError naming ``origin``."""
    if not isinstance(raw, dict):
        raise DataError(f"{origin}: expected an object with fields, got {type(raw).__name__}")
    # Hugging Face fills a column a row lacks with None, so presence means "not None"
    def has(key: str) -> bool:
        return raw.get(key) is not None

    if has(features.chat):
        return _chat_record(raw, origin, features.chat)
    if has(features.prompt) and has(features.completion):
        prompt = _text_field(raw, features.prompt, origin)
        completion = _text_field(raw, features.completion, origin)
        messages = _with_system(raw, origin, [_msg("user", prompt), _msg("assistant", completion)])
        return Record("completion", origin, messages=messages, tools=raw.get("tools"))
    if has("instruction") and has("output"):
        instruction = _text_field(raw, "instruction", origin)
        extra = raw.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{origin}: field 'input' must be text")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        output = _text_field(raw, "output", origin)
        messages = _with_system(raw, origin, [_msg("user", prompt), _msg("assistant", output)])
        return Record("alpaca", origin, messages=messages)
    if has(features.text):
        return Record("text", origin, text=_text_field(raw, features.text, origin))
    fields = _listing(key for key, value in raw.items() if value is not None) or "none"
    if nulls := _listing(key for key, value in raw.items() if value is None):
        fields += f"; null: {nulls}"  # a null completion is why a prompt/completion row is not one
    raise DataError(
        f"{origin}: unrecognised record (fields: {fields}); expected '{features.chat}', "
        f"'{features.prompt}'+'{features.completion}', 'instruction'+'output' or '{features.text}'"
    )


def _listing(names, most: int = 10) -> str:
    """Sorted field names, the first ``most`` of them: a record with 10,000 fields stays one short line."""
    names = sorted(map(str, names))
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _text_field(raw: dict, key: str, origin: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise DataError(f"{origin}: field '{key}' must be text, got {type(value).__name__}")
    return value


def _with_system(raw: dict, origin: str, messages: list[dict]) -> tuple[dict, ...]:
    system = raw.get("system")
    if system:
        if not isinstance(system, str):
            raise DataError(f"{origin}: field 'system' must be text")
        messages = [_msg("system", system), *messages]
    return tuple(messages)


def _chat_record(raw: dict, origin: str, key: str) -> Record:
    turns = raw[key]
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{origin}: field '{key}' must be a non-empty list of messages")
    messages = []
    for i, turn in enumerate(turns):
        where = f"{origin}: {key}[{i}]"
        if not isinstance(turn, dict) or "role" not in turn:
            raise DataError(f"{where}: each message needs a 'role' and 'content'")
        role = turn["role"]
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise DataError(f"{where}: unknown role {role!r} (expected one of {sorted(CHAT_ROLES)})")
        content = turn.get("content")
        if isinstance(content, list):  # OpenAI-style content parts
            texts = [p.get("text", "") for p in content if isinstance(p, dict)]
            content = "".join(texts) if all(isinstance(t, str) for t in texts) else texts
        if content is None and turn.get("tool_calls"):
            content = ""
        if not isinstance(content, str):
            raise DataError(f"{where}: 'content' must be text")
        messages.append({**turn, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{origin}: chat has no assistant message, so there is nothing to learn")
    if raw.get("system") and messages[0]["role"] != "system":
        messages.insert(0, _msg("system", _text_field(raw, "system", origin)))
    return Record("chat", origin, messages=tuple(messages), tools=raw.get("tools"))


# --------------------------------------------------------------------------- files


def _reject(message: str, errors: list[str] | None) -> None:
    """Raise ``message`` when reading strictly; otherwise note it so the row can be skipped."""
    if errors is None:
        raise DataError(message) from None
    errors.append(message)


def _not_utf8(path: Path, line: int, byte: int) -> str:
    return f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8"


def _open(path: Path):
    try:
        return open(path, "rb")
    except OSError as e:  # a folder named train.jsonl, no permission, ...
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_text(path: Path) -> str:
    """The file as text, without a byte-order mark; a DataError names the line of a bad byte."""
    with _open(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(_not_utf8(path, data.count(b"\n", 0, e.start) + 1, data[e.start])) from None


def read_rows(path: Path, errors: list[str] | None = None) -> Iterator[tuple[Any, str]]:
    """Yield (row, origin) from a JSONL, JSON, CSV or Parquet file (see ``errors`` above)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with _open(path) as f:
            for n, raw in enumerate(f, 1):
                try:  # line by line, so that one bad byte costs one row
                    line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    _reject(_not_utf8(path, n, raw[e.start]), errors)
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    _reject(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})", errors)
                    continue
                except RecursionError:
                    _reject(f"{path}:{n}: JSON nested too deeply to read", errors)
                    continue
                yield row, f"{path}:{n}"
    elif suffix == ".json":
        try:
            data = json.loads(_read_text(path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        except RecursionError:
            raise DataError(f"{path}: JSON nested too deeply to read") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DataError(f"{path}: a .json dataset must hold a list of records")
        for i, row in enumerate(data):
            yield row, f"{path}#{i}"
    elif suffix == ".csv":
        csv.field_size_limit(2**31 - 1)  # a long document is one field; the default stops at 128 KiB
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        try:
            rows = [(row, reader.line_num) for row in reader]
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
        for row, n in rows:
            yield row, f"{path}:{n}"
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: cannot read as Parquet ({first_line(e)})") from None
        for i, row in enumerate(rows):
            yield row, f"{path}#{i}"
    else:
        raise DataError(f"{path}: unsupported file type (use {', '.join(FILE_SUFFIXES)})")


def parse_rows(rows, features: Features, errors: list[str] | None = None) -> list[Record]:
    """``parse_record`` over (row, origin) pairs; a bad row raises, or is noted in ``errors``."""
    records = []
    for row, origin in rows:
        try:
            records.append(parse_record(row, origin, features))
        except DataError as e:
            if errors is None:
                raise
            errors.append(str(e))
    return records


def read_records(path: Path, features: Features, errors: list[str] | None = None) -> list[Record]:
    return parse_rows(read_rows(path, errors), features, errors)


def _split_file(folder: Path, split: str) -> Path | None:
    for name in SPLIT_NAMES[split]:
        for suffix in FILE_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.exists():
                return candidate
    return None


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
        files = {split: _split_file(path, split) for split in SPLIT_NAMES}
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

    from engine.hub import offline_unless_reachable

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

    from engine.hub import offline_unless_reachable

    offline_unless_reachable()
    splits = Splits()
    for entry in entries:
        features = Features(
            prompt=entry.prompt_feature or base.prompt,
            completion=entry.completion_feature or base.completion,
            text=entry.text_feature or base.text,
            chat=entry.chat_feature or base.chat,
        )
        wanted = {"train": entry.train_split, "valid": entry.valid_split, "test": entry.test_split}
        for split, hf_split in wanted.items():
            if hf_split:
                rows = datasets.load_dataset(entry.path, split=hf_split, **(entry.config or {}))
                origin = f"{entry.path}[{hf_split}]"
                getattr(splits, split).extend(_hf_records(rows, origin, features, errors))
    return splits


# --------------------------------------------------------------------------- entry point


def looks_like_local_path(value: str) -> bool:
    """Paths and Hugging Face ids share the ``a/b`` shape; these hints say "a path"."""
    return (
        value.startswith((".", "/", "~"))
        or value.endswith("/")
        or value.lower().endswith(FILE_SUFFIXES)
        or value.count("/") > 1
        or "\\" in value
    )


def load_splits(stage, errors: list[str] | None = None) -> Splits:
    """The train / valid / test records of a config stage; bad rows raise unless ``errors`` is given."""
    cfg = stage.config
    features = Features(
        prompt=cfg.prompt_feature,
        completion=cfg.completion_feature,
        text=cfg.text_feature,
        chat=cfg.chat_feature,
    )
    if cfg.hf_dataset:
        try:
            splits = load_hf_list(cfg.hf_dataset, features, errors)
        except DataError:
            raise
        except Exception as e:  # the hub raises many types; the user needs one line
            from engine.hub import explain_failure

            raise stage.error("hf_dataset", f"could not load: {explain_failure(e, 'dataset')}") from None
    elif cfg.data is None:
        raise stage.error("data", "no dataset: set 'data' (a folder, a file or a Hugging Face id) or 'hf_dataset'")
    else:
        path = Path(cfg.data).expanduser()
        if path.exists():
            splits = load_local(path, features, cfg.valid_fraction, cfg.seed, errors)
        elif looks_like_local_path(cfg.data):
            raise stage.error("data", f"no such file or folder: {cfg.data}")
        else:
            try:
                splits = load_hf_id(cfg.data, features, cfg.valid_fraction, cfg.seed, errors)
            except DataError:
                raise
            except Exception as e:
                from engine.hub import explain_failure

                why = explain_failure(e, "dataset")
                raise stage.error(
                    "data",
                    f"{cfg.data!r} is not a local file or folder, and loading it as a Hugging Face "
                    f"dataset failed: {why}",
                ) from None
    if not splits.train:
        unread = f" ({len(errors)} rows could not be read; the first: {errors[0]})" if errors else ""
        raise stage.error("data", f"the training split is empty{unread}")
    return splits
