"""One answer, token by token: the prompt through the model's chat template, mlx-lm's
``stream_generate`` with a temperature / top-p sampler, and a stop flag asked between tokens."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing

from mlx_lm.generate import stream_generate
from mlx_lm.sample_utils import make_sampler

from engine.playground.stream import Chunk, Finished, Sampling


def prompt_ids(tokenizer, messages: list[dict] | tuple[dict, ...]) -> list[int]:
    """The tokens the model reads before answering: its chat template with the generation prompt,
    as the evaluator's samples render it; without a template, the turns each on a line, as
    training rendered them (:mod:`engine.data.tokenize`)."""
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template(list(messages), add_generation_prompt=True))
    return list(tokenizer.encode("".join(str(m["content"]) + "\n" for m in messages)))


def generate(model, tokenizer, ids: list[int], sampling: Sampling,
             stop: Callable[[], bool] = lambda: False) -> Iterator[Chunk | Finished]:
    """Yield a :class:`Chunk` per token and one :class:`Finished` at the end. ``stop()`` is asked
    after every token; once it says yes the answer ends there, ``reason`` "stopped"."""
    sampler = make_sampler(temp=sampling.temp, top_p=sampling.top_p if sampling.top_p < 1 else 0.0)
    start, text, tokens, reason = time.perf_counter(), "", 0, "length"
    responses = stream_generate(model, tokenizer, ids, max_tokens=sampling.max_tokens, sampler=sampler)
    with closing(responses):  # a stop leaves mlx-lm's generator mid-way: close it
        for response in responses:
            text += response.text
            tokens = response.generation_tokens
            if response.finish_reason is not None:
                reason = response.finish_reason
                if response.text:
                    yield Chunk(response.text, tokens)
                break
            yield Chunk(response.text, tokens)
            if stop():
                reason = "stopped"
                break
    yield Finished(reason, tokens, time.perf_counter() - start, text)
