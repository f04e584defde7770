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
    if local.exists():
        return ModelLocation(str(local), True)
    if looks_like_local_path(path):
        raise stage.error("model", f"no such model folder: {path}")
    return ModelLocation(path, False)
