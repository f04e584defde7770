"""A Playground conversation as the model reads it: the system prompt, the earlier turns, the new
prompt; and which earlier turns still fit.

No MLX and no Textual: the app keeps each pane's turns on its event loop and the generation
worker renders them, counting tokens with the model's tokenizer (``count``), to drop the oldest
turns that no longer fit before the model sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MOST_TURNS = 20  # earlier turns kept at most, however short: a chat, not a transcript


@dataclass(frozen=True)
class Turn:
    """One exchange: what the user asked and what the model answered (cut short if stopped)."""

    user: str
    assistant: str


def conversation(system: str | None, turns: Sequence[Turn], prompt: str) -> list[dict]:
    """The messages for the chat template: the system prompt when there is one, each earlier turn
    as a user and an assistant message, then ``prompt`` as the last user message."""
    messages = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        messages += [{"role": "user", "content": turn.user}, {"role": "assistant", "content": turn.assistant}]
    return messages + [{"role": "user", "content": prompt}]


def split_record(messages: Sequence[dict]) -> tuple[str | None, tuple[Turn, ...], str]:
    """A validation record's messages before its answer as (system, earlier turns, last question),
    the inverse of :func:`conversation`. An assistant message with no user before it pairs with an
    empty question; two user messages in a row are joined, so no text is lost."""
    system = None
    turns: list[Turn] = []
    asked: str | None = None
    for message in messages:
        role, content = message["role"], str(message["content"])
        if role == "system" and system is None and not turns and asked is None:
            system = content
        elif role == "assistant":
            turns.append(Turn(asked or "", content))
            asked = None
        else:
            asked = content if asked is None else f"{asked}\n{content}"
    return system, tuple(turns), asked or ""


def prompt_budget(context: int, max_tokens: int) -> int:
    """Tokens the rendered prompt may take: the model's context less room for the answer (max
    tokens, but never more than half the context, so a long max tokens does not erase the chat)."""
    return max(1, context - min(max_tokens, context // 2))


def fit_turns(system: str | None, turns: Sequence[Turn], prompt: str, count: Callable[[list[dict]], int],
              budget: int, most: int = MOST_TURNS) -> tuple[Turn, ...]:
    """The latest of ``turns`` that the model still reads: at most ``most``, and only as many as
    keep ``count(messages)`` (the rendered prompt's tokens) within ``budget``. The new prompt
    always goes, even alone over budget (the model then reads what fits of it)."""
    kept = tuple(turns)[-most:] if most > 0 else ()
    while kept and count(conversation(system, kept, prompt)) > budget:
        kept = kept[1:]
    return kept
