"""Measuring a dataset for its statistics: every example tokenised as training tokenises it.

Reading is lenient here (a bad row becomes an error line and the rest is still counted), and the
records read last are kept, so the Data screen can step through examples without reading again.
What comes out is one list per column (:data:`COLUMNS`), the form the cache stores.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
from jinja2 import TemplateError

from engine.data.records import Record
from engine.data.sources import SPLIT_NAMES, Splits, data_path, load_splits
from engine.data.stats_cache import data_fingerprint
from engine.data.tokenize import encode_records
from engine.errors import first_line
from engine.roles import COMPLETION, PROMPT

SPLITS = ("train", "valid", "test")
CHUNK = 2048  # records per batched tokenizer call, and per progress report
# the per-example measurements, cached as one list per column
COLUMNS = (
    "index", "origin", "fmt", "prompt", "completion", "total",
    "truncated", "completion_cut", "zero_completion", "content",
)

_recent: dict[str, Splits] = {}  # the last dataset read, so browsing examples reads it once


def load_record(stage, split: str, index: int) -> Record:
    """Record ``index`` of ``split``, read leniently as ``compute_stats`` read it (rows' ``index``)."""
    return getattr(read_splits(stage), split)[index]


def read_splits(stage, errors: list[str] | None = None) -> Splits:
    """Read the dataset leniently (a fresh read when the unreadable rows are wanted) and keep it."""
    key = json.dumps(data_fingerprint(stage), sort_keys=True)
    if errors is not None or key not in _recent:
        splits = load_splits(stage, errors=[] if errors is None else errors)
        _recent.clear()
        _recent[key] = splits
    return _recent[key]


def measure(stage, tokenizer, progress: Callable[[int, int], None] | None) -> dict:
    """Tokenise every split in chunks; return the per-example columns and the unreadable rows."""
    errors: list[str] = []
    splits = read_splits(stage, errors)
    records = {name: getattr(splits, name) for name in SPLITS}
    total, done = sum(map(len, records.values())), 0
    contents: dict[bytes, int] = {}  # token ids -> a small id shared by all splits
    max_len = stage.config.max_seq_length
    out = {}
    for name in SPLITS:
        split_errors = [e for e in errors if _error_split(e, stage) == name]
        columns: dict[str, list] = {column: [] for column in COLUMNS}
        for start in range(0, len(records[name]), CHUNK):
            if progress:
                progress(done, total)
            chunk = records[name][start : start + CHUNK]
            for i, (ids, roles) in _encode_chunk(tokenizer, chunk, split_errors):
                digest = hashlib.blake2b(ids.tobytes(), digest_size=16).digest()
                row = (
                    start + i,
                    chunk[i].origin,
                    chunk[i].fmt,
                    int(np.count_nonzero(roles == PROMPT)),
                    int(np.count_nonzero(roles == COMPLETION)),
                    len(ids),
                    len(ids) > max_len,
                    bool((roles[max_len:] == COMPLETION).any()),
                    not (roles[1:max_len] == COMPLETION).any(),  # tokenize_split drops these
                    contents.setdefault(digest, len(contents)),
                )
                for column, value in zip(COLUMNS, row):
                    columns[column].append(value)
            done += len(chunk)
        if columns["index"] or split_errors:
            out[name] = {"columns": columns, "errors": split_errors}
    if progress:
        progress(done, total)
    return {"splits": out}


def _encode_chunk(tokenizer, records: list[Record], errors: list[str]) -> list[tuple[int, tuple]]:
    """(position, (ids, roles)) for a chunk, in one batched call.

    A chat template can refuse a record (many reject a system turn, or turns that do not
    alternate); training would stop there, so here that record becomes an error line instead.
    """
    try:
        return list(enumerate(encode_records(tokenizer, records)))
    except (TemplateError, ValueError):
        pass
    encoded = []
    for i, record in enumerate(records):
        try:
            encoded.append((i, encode_records(tokenizer, [record])[0]))
        except (TemplateError, ValueError) as e:
            errors.append(f"{record.origin}: the chat template failed: {first_line(e)}")
    return encoded


def source_of(origin: str) -> str:
    """The file or dataset split an origin (or an error line) names: its row marker cut off."""
    match = re.match(r"(.*?)(?::\d+|#\d+)(?=:|$)", origin)
    return match.group(1) if match else origin


def _error_split(message: str, stage) -> str:
    """The split an unreadable row belongs to, from the file or dataset split its message names."""
    cfg = stage.config
    if cfg.hf_dataset:
        for entry in cfg.hf_dataset:
            for split in SPLITS:
                hf_split = getattr(entry, f"{split}_split")
                if hf_split and message.startswith(f"{entry.path}[{hf_split}]"):
                    return split
        return "train"
    path = data_path(stage)
    if path is not None and path.is_file():
        return "train"  # a single file: the validation split is held out of it
    source = source_of(message)
    name = source[source.rfind("[") + 1 : -1] if source.endswith("]") else Path(source).stem
    return next((split for split, names in SPLIT_NAMES.items() if name in names), "train")
