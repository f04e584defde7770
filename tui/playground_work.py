"""What the Playground's generation worker does and sends back: each pane's chat fitted to the
model's context, then its answer, a few tokens per message. Kept out of the screen so the screen
file holds the screen only."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from engine.errors import UserError
from engine.playground.chat import Turn, conversation, fit_turns, prompt_budget
from engine.playground.stream import Chunk, Sampling

from .messages import (AnswerFinished, AnswerStarted, AnswerStreamed, GenerationEnded, PlaygroundFailed,
                       PlaygroundLoaded, ValidPromptsRead, WorkerResult)

BASE, FINAL = "base", "final"  # as engine.playground.weights names them (not imported: it loads MLX)
THROTTLE = 0.05  # seconds between two messages of one streaming answer


def weights_label(which: str | int) -> str:
    return {BASE: "base model", FINAL: "final adapter"}.get(which, f"checkpoint {which}")


SAMPLING_FIELDS = {"temp": float, "top-p": float, "max-tokens": int}  # the screen's fields, by id


def read_sampling(fields: dict[str, str]) -> Sampling:
    """The sampling the fields ask for, or a one-line UserError naming the field."""
    values = []
    for name, kind in SAMPLING_FIELDS.items():
        raw = fields[name].strip()
        try:
            values.append(kind(raw))
        except ValueError:
            raise UserError(f"{name.replace('-', ' ')}: {raw!r} is not a number") from None
    return Sampling(*values)


def read_valid_prompts(source: str) -> ValidPromptsRead:
    """A run folder's validation prompts (none for a bare model), or why they cannot be read (on a
    worker: it reads the run's data)."""
    from engine.playground.prompts import validation_prompts
    from engine.playground.weights import is_run_folder

    if not is_run_folder(source):
        return ValidPromptsRead([])
    try:
        return ValidPromptsRead(validation_prompts(source))
    except (UserError, OSError) as e:
        return ValidPromptsRead([], f"no validation prompts: {e}")


@dataclass(frozen=True)
class Request:
    """One send: the new prompt, how to sample, and which weights answer into which pane, each pane
    with its own earlier turns (the chat so far)."""

    source: str
    system: str | None
    prompt: str
    sampling: Sampling
    targets: tuple[tuple[str, str | int, tuple[Turn, ...]], ...]  # (pane, weights, its earlier turns)
    stop: threading.Event


class TurnsFitted(WorkerResult):
    """The earlier turns of ``pane`` that the model read this time: the oldest ones that no longer
    fit (the model's context, or ``MOST_TURNS``) were dropped; ``dropped`` says how many."""

    def __init__(self, pane: str, kept: tuple[Turn, ...], dropped: int) -> None:
        super().__init__()
        self.pane, self.kept, self.dropped = pane, kept, dropped


def open_source(source: str):
    """(the playground, PlaygroundLoaded) for a run folder or model, or (None, PlaygroundFailed)
    with one line saying why (on the worker: it loads MLX and the weights)."""
    from engine.playground.weights import open_playground

    try:
        playground = open_playground(source)
    except Exception as e:  # a UserError, or a bug or an odd model: one line, the app goes on
        why = str(e) if isinstance(e, UserError) else f"could not load {source}: {type(e).__name__}: {e}"
        return None, PlaygroundFailed(why)
    title = playground.run_dir.name if playground.run_dir is not None else str(source)
    return playground, PlaygroundLoaded(source, title, playground.steps(), playground.has_final())


def answer_safely(playground, request: Request, post: Callable, stop: Callable[[], bool]) -> None:
    """:func:`answer_request`, a failure said in one line, always ending with GenerationEnded."""
    try:
        answer_request(playground, request, post, stop)
    except UserError as e:
        post(PlaygroundFailed(str(e)))
    except Exception as e:  # a bug: one line, the app goes on
        post(PlaygroundFailed(f"generation failed: {type(e).__name__}: {e}"))
    finally:
        post(GenerationEnded())


def answer_request(playground, request: Request, post: Callable, stop: Callable[[], bool]) -> None:
    """Each pane's answer in turn (on the worker, holding the model): its chat rendered through
    the chat template, trimmed to fit, then streamed."""
    from engine.playground.generate import generate, prompt_ids  # MLX: on the worker only

    tokenizer = playground.tokenizer
    budget = prompt_budget(playground.context_length, request.sampling.max_tokens)
    for pane, which, turns in request.targets:
        if stop():
            return
        kept = fit_turns(request.system, turns, request.prompt,
                         lambda messages: len(prompt_ids(tokenizer, messages)), budget)
        if len(kept) < len(turns):
            post(TurnsFitted(pane, kept, len(turns) - len(kept)))
        ids = prompt_ids(tokenizer, conversation(request.system, kept, request.prompt))
        playground.use(which)
        post(AnswerStarted(pane, weights_label(which)))
        stream_answer(generate(playground.model, tokenizer, ids, request.sampling, stop), pane, post)


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
