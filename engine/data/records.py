"""One dataset row as a :class:`Record`: detect the row's format and normalise it.

Each record is detected on its own (mlx-lm looks at the first row only), so mixed files work:

- chat: ``{"messages": [...], "system"?: str, "tools"?: [...]}``
- prompt/completion: ``{"prompt": str, "completion": str}``
- instruction/input/output (Alpaca): ``{"instruction", "input"?, "output"}``
- plain text: ``{"text": str}``

The field names of chat, prompt, completion, text and system can be overridden in the config
(:class:`Features`); the system field, where a row has one, opens the chat as a system message. A row that fits none of them is a :class:`DataError` naming where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import DataError

CHAT_ROLES = {"system", "user", "assistant", "tool", "developer"}


@dataclass(frozen=True)
class Features:
    """Field names to read; mlx-lm's ``*_feature`` keys."""

    prompt: str = "prompt"
    completion: str = "completion"
    text: str = "text"
    chat: str = "messages"
    system: str = "system"


@dataclass(frozen=True)
class Record:
    """One normalised example. ``messages`` is set for every format but plain text."""

    fmt: str  # chat | completion | alpaca | text
    origin: str  # where it came from, e.g. "data/train.jsonl:12"
    messages: tuple[dict, ...] | None = None
    text: str | None = None
    tools: Any = None


def parse_record(raw: Any, origin: str, features: Features = Features()) -> Record:
    """Detect the format of one row and normalise it, or raise a DataError naming ``origin``."""
    if not isinstance(raw, dict):
        raise DataError(f"{origin}: expected an object with fields, got {type(raw).__name__}")
    # Hugging Face fills a column a row lacks with None, so presence means "not None"
    def has(key: str) -> bool:
        return raw.get(key) is not None

    if has(features.chat):
        return _chat_record(raw, origin, features)
    if has(features.prompt) and has(features.completion):
        prompt = _text_field(raw, features.prompt, origin)
        completion = _text_field(raw, features.completion, origin)
        messages = _with_system(raw, origin, features.system, [_msg("user", prompt), _msg("assistant", completion)])
        return Record("completion", origin, messages=messages, tools=raw.get("tools"))
    if has("instruction") and has("output"):
        instruction = _text_field(raw, "instruction", origin)
        extra = raw.get("input") or ""
        if not isinstance(extra, str):
            raise DataError(f"{origin}: field 'input' must be text")
        prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        output = _text_field(raw, "output", origin)
        messages = _with_system(raw, origin, features.system, [_msg("user", prompt), _msg("assistant", output)])
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


def _with_system(raw: dict, origin: str, key: str, messages: list[dict]) -> tuple[dict, ...]:
    system = raw.get(key)
    if system:
        if not isinstance(system, str):
            raise DataError(f"{origin}: field '{key}' must be text")
        messages = [_msg("system", system), *messages]
    return tuple(messages)


def _chat_record(raw: dict, origin: str, features: Features) -> Record:
    key = features.chat
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
            content = _text_parts(content, where)
        if content is None and turn.get("tool_calls"):
            content = ""
        if not isinstance(content, str):
            raise DataError(f"{where}: 'content' must be text")
        messages.append({**turn, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{origin}: chat has no assistant message, so there is nothing to learn")
    if raw.get(features.system) and messages[0]["role"] != "system":
        messages.insert(0, _msg("system", _text_field(raw, features.system, origin)))
    return Record("chat", origin, messages=tuple(messages), tools=raw.get("tools"))


def _text_parts(parts: list, where: str) -> str:
    """OpenAI-style content parts (``[{"type": "text", "text": ...}]``) joined into the message's
    text, as chat templates that take parts render them. Anything but text parts (an image, a
    bare string) is refused: dropping it would train on a message the data does not say."""
    if not parts:
        raise DataError(f"{where}: 'content' is an empty list; give the message's text")
    texts = []
    for j, part in enumerate(parts):
        kind = part.get("type", "text") if isinstance(part, dict) else None
        text = part.get("text") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(text, str):
            what = f"of type {kind!r}" if isinstance(kind, str) and kind != "text" else _short(part)
            raise DataError(
                f"{where}: 'content' must be text or text parts, and its part {j} is {what}; "
                'give it as text or as [{"type": "text", "text": "..."}]'
            )
        texts.append(text)
    return "".join(texts)


def _short(value: Any, most: int = 40) -> str:
    """``value``'s type and repr, cut to ``most`` characters: "str 'hello'"."""
    text = repr(value)
    return f"{type(value).__name__} " + (text if len(text) <= most else text[: most - 1] + "…")


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
