"""The cache of per-example measurements behind ``tuner inspect`` and the Data screen.

Tokenising is the slow part of the statistics, so what it measures is kept as JSON under
``$TUNER_CACHE/stats/``, keyed by the data files (path, size, mtime) or the Hugging Face ids,
the tokenizer, its chat template and ``max_seq_length``. PLW is not part of the key: it only
changes the guidance, which is written fresh each time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from engine.data.rows import FILE_SUFFIXES
from engine.data.sources import data_path
from engine.data.tokenize import hf_tokenizer
from engine.files import atomic_write_text, cache_root

CACHE_VERSION = 1  # bump when the cached measurements change meaning


def data_fingerprint(stage) -> dict:
    """What identifies the records read: the files' path, size and mtime, or the dataset ids."""
    cfg = stage.config
    reading = {
        key: getattr(cfg, key)
        for key in ("prompt_feature", "completion_feature", "text_feature", "chat_feature", "system_feature",
                    "valid_fraction", "seed")
    }
    if cfg.hf_dataset:
        return {"hf_dataset": [entry.model_dump() for entry in cfg.hf_dataset], **reading}
    path = data_path(stage) if cfg.data else None
    if path is None:
        return {"data": cfg.data, **reading}  # a Hugging Face id (or no data: an error load_splits reports)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES) if path.is_dir() else [path]
    return {"files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files], **reading}


def _tokenizer_fingerprint(tokenizer) -> dict:
    tok = hf_tokenizer(tokenizer)
    backend = getattr(tok, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    return {
        "class": type(tok).__name__,
        "tokenizer": hashlib.sha256(vocab.encode()).hexdigest(),
        "eos_token_id": tok.eos_token_id,
        "chat_template": hashlib.sha256(json.dumps(tok.chat_template).encode()).hexdigest(),
    }


def cache_path(stage, tokenizer) -> Path:
    """Where the measurements of this stage's data, as ``tokenizer`` counts it, are kept."""
    key = {
        "version": CACHE_VERSION,
        "data": data_fingerprint(stage),
        **_tokenizer_fingerprint(tokenizer),
        "max_seq_length": stage.config.max_seq_length,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root() / "stats" / f"{digest[:32]}.json"


def read_cache(path: Path) -> dict | None:
    """The cached measurements, or None when there are none (or they are half-readable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or half-readable: measure again


def write_cache(path: Path, measured: dict) -> None:
    try:
        atomic_write_text(path, json.dumps(measured, separators=(",", ":")))
    except OSError:
        pass  # a read-only cache costs speed next time, never the result
