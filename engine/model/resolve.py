"""Where a config's ``model`` is: the one place that turns its value into a folder or a hub id.

Training (:func:`engine.model.load.load_base`), ``tuner inspect`` and the Data screen (through
:func:`engine.data.stats.load_stage_tokenizer`) all ask :func:`resolve_model`, so every value that
works for one works for all:

- ``builtin:tiny-llama`` and ``builtin:smollm2-135m``: built or fetched once into the cache;
- ``x.gguf``: a llama.cpp file, imported once into the cache as an mlx-lm folder;
- an existing folder (``~`` expanded): used as it is;
- anything that looks like a path but is not there: a mistake at the ``model`` key;
- anything else: a Hugging Face id, left for the loader (and the hub) to find.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.hub import looks_like_local_path
from engine.model.demo import resolve_builtin
from engine.model.gguf import ensure_imported

GGUF_SUFFIX = ".gguf"
# any one of these lets transformers build a tokenizer (fast, sentencepiece, BPE or WordPiece)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


@dataclass(frozen=True)
class ModelLocation:
    """A resolved ``model``: a local folder, or a Hugging Face id to fetch (or find in its cache)."""

    path: str
    local: bool


def resolve_model(stage) -> ModelLocation:
    """The stage's model as a local folder or a hub id; mistakes are errors at its ``model`` key."""
    name = stage.config.model
    try:
        if name.lower().endswith(GGUF_SUFFIX):
            path = str(ensure_imported(Path(name).expanduser()))
        else:
            path = resolve_builtin(name)
    except (ValueError, UserError) as e:  # an unknown builtin id, or a .gguf that cannot be imported
        raise stage.error("model", str(e)) from None
    local = Path(path).expanduser()
    if local.is_dir() and (missing := missing_model_files(local)):
        raise stage.error("model", f"{path} is not a model folder: {missing}")
    if local.exists():
        return ModelLocation(str(local), True)
    if looks_like_local_path(path):
        raise stage.error("model", f"no such model folder: {path}")
    return ModelLocation(path, False)


def missing_model_files(folder: Path) -> str | None:
    """What a local model folder lacks for tuner to load it, said in one phrase; None if nothing.

    Asked before the loaders, whose own messages for an arbitrary folder end in a dangling
    "from one of:" or name a file deep in their code.
    """
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("no config.json")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"no tokenizer ({', '.join(TOKENIZER_FILES[:3])} or the like)")
    return " and ".join(missing) or None
