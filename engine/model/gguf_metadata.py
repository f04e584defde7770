"""Every GGUF metadata value the import reads, checked for type and range before it is used.

A GGUF header is whatever its writer put there: a head count of 0 divides by zero, a block count
that is a string fails deep in the converter, and a block count of four billion makes the
import build a list of 36 billion tensor names until the kernel kills it. So each value is
checked here first, against its type, its range and the tensors the file really holds, and a
bad one is one line naming the file, the key and the value.
"""

from __future__ import annotations

import math
from pathlib import Path

from engine.errors import UserError

LAYER_TENSORS = 9  # each Llama block has nine weight tensors (see gguf_llama.LAYER_NAMES)
BIG = 1 << 24  # no dimension, head count or context of a model this imports comes near it
_REQUIRED = object()


def _bad(path: Path, key: str, value, expected: str) -> UserError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return UserError(f"{path}: metadata {key} is {shown}; expected {expected}")


def whole(path: Path, metadata: dict, key: str, low: int, high: int, default=_REQUIRED) -> int:
    """``metadata[key]``, a whole number in [low, high]; ``default`` when absent (required without)."""
    if key not in metadata:
        if default is _REQUIRED:
            raise UserError(f"{path}: metadata {key} is missing")
        return default
    value = metadata[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(path, key, value, f"a whole number from {low:,} to {high:,}")
    return value


def number(path: Path, metadata: dict, key: str, default=_REQUIRED) -> float:
    """``metadata[key]``, a finite number above 0; ``default`` when absent (required without)."""
    if key not in metadata:
        if default is _REQUIRED:
            raise UserError(f"{path}: metadata {key} is missing")
        return default
    value = metadata[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise _bad(path, key, value, "a number above 0")
    return value


def text(path: Path, metadata: dict, key: str, default=None) -> str | None:
    value = metadata.get(key, default)
    if value is not None and not isinstance(value, str):
        raise _bad(path, key, value, "text")
    return value


def llama_dimensions(path: Path, metadata: dict, tensors: dict) -> dict:
    """The Llama sizes the config is made of, checked against each other and the tensors."""
    layers = whole(path, metadata, "llama.block_count", 1, BIG)
    if layers * LAYER_TENSORS > len(tensors):
        raise UserError(f"{path}: metadata llama.block_count is {layers:,}, but the file holds "
                        f"{len(tensors):,} tensors, too few for that many layers")
    hidden = whole(path, metadata, "llama.embedding_length", 1, BIG)
    heads = whole(path, metadata, "llama.attention.head_count", 1, hidden)
    kv_heads = whole(path, metadata, "llama.attention.head_count_kv", 1, heads, heads)
    if heads % kv_heads:
        raise UserError(f"{path}: metadata llama.attention.head_count {heads} is not a multiple of "
                        f"llama.attention.head_count_kv {kv_heads}")
    if "llama.attention.key_length" not in metadata and hidden % heads:
        raise UserError(f"{path}: metadata llama.embedding_length {hidden} is not a multiple of "
                        f"llama.attention.head_count {heads}")
    head_dim = whole(path, metadata, "llama.attention.key_length", 2, BIG, hidden // heads)
    if head_dim % 2:
        raise _bad(path, "llama.attention.key_length", head_dim, "an even number (rotary pairs)")
    dims = {
        "layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
        "rope_dims": whole(path, metadata, "llama.rope.dimension_count", 1, BIG, head_dim),
        "intermediate": whole(path, metadata, "llama.feed_forward_length", 1, BIG),
        "context": whole(path, metadata, "llama.context_length", 1, BIG),
        "rms_eps": number(path, metadata, "llama.attention.layer_norm_rms_epsilon"),
        "rope_theta": number(path, metadata, "llama.rope.freq_base", 10000.0),
        "rope_scaling": text(path, metadata, "llama.rope.scaling.type", "none"),
    }
    _check_shapes(path, tensors, dims)
    return dims


def _check_shapes(path: Path, tensors: dict, dims: dict) -> None:
    """The embedding and the query and key projections must have the shapes the sizes say."""
    expected = {"token_embd.weight": (None, dims["hidden"])}
    for i in range(dims["layers"]):
        expected[f"blk.{i}.attn_q.weight"] = (dims["heads"] * dims["head_dim"], dims["hidden"])
        expected[f"blk.{i}.attn_k.weight"] = (dims["kv_heads"] * dims["head_dim"], dims["hidden"])
    for name, want in expected.items():
        if name not in tensors:
            continue  # a missing tensor is named by the converter's own check
        shape = tuple(tensors[name][1])
        if len(shape) != 2 or shape[0] < 1 or any(w is not None and s != w for s, w in zip(shape, want)):
            wanted = " x ".join("N" if w is None else str(w) for w in want)
            raise UserError(f"{path}: tensor {name} has shape {shape}; the metadata's sizes need {wanted}")


def check_tokenizer(path: Path, metadata: dict) -> None:
    """The tokenizer's lists and ids: tokens as text, merges as "a b" pairs, types and special
    ids as whole numbers that fit the vocabulary."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise _bad(path, "tokenizer.ggml.tokens", _summary(tokens), "a non-empty list of token texts")
    merges = metadata.get("tokenizer.ggml.merges", [])
    if not isinstance(merges, list) or not all(isinstance(m, str) and " " in m for m in merges):
        raise _bad(path, "tokenizer.ggml.merges", _summary(merges), 'a list of "left right" pairs')
    types = metadata.get("tokenizer.ggml.token_type", [])
    if (not isinstance(types, list) or len(types) > len(tokens)
            or not all(isinstance(t, int) and not isinstance(t, bool) for t in types)):
        raise _bad(path, "tokenizer.ggml.token_type", _summary(types),
                   f"a list of at most {len(tokens):,} whole numbers")
    for name in ("bos", "eos", "padding", "unknown"):
        whole(path, metadata, f"tokenizer.ggml.{name}_token_id", 0, len(tokens) - 1, None)
    for key in ("tokenizer.ggml.pre", "tokenizer.chat_template"):
        text(path, metadata, key)


def _summary(value) -> object:
    """A long list shortened for a message: its length and first items."""
    if isinstance(value, list) and len(value) > 3:
        return f"a list of {len(value):,} items starting {value[:3]!r}"
    return value
