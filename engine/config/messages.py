"""Pydantic's validation errors in our words: one line, at the line of the key the user wrote."""

import datetime
import difflib
from typing import Any

from pydantic import ValidationError

from engine.config.errors import ConfigError, ValueAt
from engine.config.schema import LoraParameters, TrainConfig, model_at
from engine.config.yaml_lines import KeyPath, dotted, show

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "greater_than": "a value > {gt}",
    "greater_than_equal": "a value >= {ge}",
    "less_than": "a value < {lt}",
    "less_than_equal": "a value <= {le}",
    "literal_error": "one of {expected}",
}


def _describe(error: dict) -> str:
    """Pydantic's error in our words: what was expected, and what the user gave."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind == "value_error":
        return str(ctx["error"])
    if kind == "missing":
        return "required key is missing"
    if kind not in _EXPECTED:
        return f"{error['msg']}, got {show(error['input'])}" + _yaml_hint(error["input"])
    ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
    return f"expected {_EXPECTED[kind].format(**ctx)}, got {show(error['input'])}" + _yaml_hint(error["input"])


def _yaml_hint(value: Any) -> str:
    """Why YAML made a value the user did not write: its 1.1 booleans and dates."""
    if isinstance(value, bool):
        return " (YAML reads unquoted yes/no/on/off/true/false as a boolean; quote it to mean the word)"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return " (YAML reads an unquoted date as a date: quote the value)"
    return ""


def _unknown_key(key: str, parent: KeyPath) -> str:
    """An unknown key, with the key it was probably meant to be."""
    if hidden := [ch for ch in key if not ch.isprintable()]:  # e.g. a byte-order mark pasted mid-file
        what = "a byte-order mark (U+FEFF)" if hidden[0] == "\ufeff" else f"an invisible character (U+{ord(hidden[0]):04X})"
        return f"{what} is part of this key name; delete it"
    close = difflib.get_close_matches(key, _known_keys(parent), n=1)
    return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")


def _known_keys(parent: KeyPath) -> list[str]:
    """The keys allowed in the mapping at ``parent``, for did-you-mean suggestions."""
    return list((model_at(parent) or TrainConfig).model_fields)


def _alpha_hint(alpha: Any, lora: Any) -> str:
    """PEFT users write lora_alpha; mlx-lm multiplies by ``scale`` = alpha / rank instead."""
    rank = lora.get("rank", LoraParameters.model_fields["rank"].default) if isinstance(lora, dict) else None
    hint = "mlx-lm uses 'scale', not 'alpha' (scale = alpha / rank"
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (alpha, rank))
    if numbers and rank > 0:
        hint += f"; for alpha={alpha}, rank={rank} write scale: {round(alpha / rank, 4)}"
    return hint + ")"


def _find_line(lines: dict[KeyPath, tuple[str, int | None]], path: KeyPath) -> tuple[str, int | None] | None:
    """Where the key at ``path`` (or failing that, its nearest parent) was written.

    List indices are also tried without, since a single ``hf_dataset`` mapping becomes a list.
    """
    for end in range(len(path), 0, -1):
        prefix = path[:end]
        for candidate in (prefix, tuple(p for p in prefix if not isinstance(p, int))):
            if candidate in lines:
                return lines[candidate]
    return None


def config_error(exc: ValidationError, values: dict, lines: dict, label: str) -> ConfigError:
    """The first problem in file order, as a ConfigError at the line of its key.

    ``lines`` maps each key path to the (file, line) it was written at; ``label`` stands in for
    a key written nowhere (a default).
    """
    found = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        if isinstance(inner := error.get("ctx", {}).get("error"), ValueAt):
            loc += inner.path  # the validator named a key inside the value it checked
        file, line = _find_line(lines, loc) or (label, None)
        if error["type"] == "extra_forbidden" and loc[-2:] == ("lora_parameters", "alpha"):
            message = _alpha_hint(error["input"], values.get("lora_parameters"))
        elif error["type"] == "extra_forbidden":
            message = _unknown_key(str(loc[-1]), loc[:-1])
        else:
            message = _describe(error)
        found.append(ConfigError(message, file, line, dotted(loc) or None))
    return min(found, key=lambda e: (e.line is None, e.line or 0))
