"""What the Playground's generation worker sends back: one request's answers, a few tokens per
message. Kept out of the screen so the screen file holds the screen only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.playground.stream import Chunk, Sampling

from .messages import AnswerFinished, AnswerStreamed

BASE, FINAL = "base", "final"  # as engine.playground.weights names them (not imported: it loads MLX)
THROTTLE = 0.05  # seconds between two messages of one streaming answer


def weights_label(which: str | int) -> str:
    return {BASE: "base model", FINAL: "final adapter"}.get(which, f"checkpoint {which}")


@dataclass(frozen=True)
class Request:
    """One send: the conversation, how to sample, and which weights answer into which pane."""

    source: str
    messages: tuple[dict, ...]
    sampling: Sampling
    targets: tuple[tuple[str, str | int], ...]  # (pane, weights)
    stop: threading.Event


def stream_answer(items: Iterable, pane: str, post: Callable) -> None:
    """Post an answer's text at most every ``THROTTLE`` seconds, then how it ended (on the worker:
    the event loop gets a handful of messages a second, however fast the model is)."""
    pending, tokens, sent = "", 0, time.monotonic()
    for item in items:
        if not isinstance(item, Chunk):
            if pending:
                post(AnswerStreamed(pane, pending, tokens))
            post(AnswerFinished(pane, item))
            return
        pending, tokens = pending + item.text, item.tokens
        if pending and time.monotonic() - sent >= THROTTLE:
            post(AnswerStreamed(pane, pending, tokens))
            pending, sent = "", time.monotonic()
