"""What a generation yields, and how it samples: frozen values, no MLX (the app imports them)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import UserError

MAX_TOKENS_LIMIT = 32_768  # longer answers than any model here was trained on


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: ``temp`` 0 is greedy (what the evaluator's samples use);
    ``top_p`` below 1 keeps only the likeliest tokens that together reach that probability."""

    temp: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.temp <= 10:
            raise UserError(f"temperature: {self.temp:g} is not between 0 and 10")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top-p: {self.top_p:g} is not above 0 and at most 1")
        if not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise UserError(f"max tokens: {self.max_tokens} is not between 1 and {MAX_TOKENS_LIMIT:,}")

    def describe(self) -> str:
        how = "greedy" if self.temp == 0 else f"temp {self.temp:g}, top-p {self.top_p:g}"
        return f"{how}, up to {self.max_tokens} tokens"


def chat_messages(prompt: str, system: str | None = None) -> list[dict]:
    """One user turn, after a system prompt when there is one."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


@dataclass(frozen=True)
class Chunk:
    """Text the model added since the last chunk (may be empty while a character is incomplete),
    and how many tokens it has generated so far."""

    text: str
    tokens: int


@dataclass(frozen=True)
class Finished:
    """The end of one answer: ``reason`` is "stop" (the model ended it), "length" (max tokens)
    or "stopped" (asked to stop); ``text`` is the whole answer."""

    reason: str
    tokens: int
    seconds: float
    text: str

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ValidPrompt:
    """One validation record's question: the messages before its answer, and the answer."""

    messages: tuple[dict, ...]  # system and user turns (and earlier turns), as the model reads them
    reference: str
    origin: str  # the file and line it came from

    @property
    def question(self) -> str:
        return str(self.messages[-1]["content"]) if self.messages else ""

    @property
    def system(self) -> str | None:
        first = self.messages[0] if self.messages else None
        return str(first["content"]) if first is not None and first["role"] == "system" else None
