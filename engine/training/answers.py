"""Answer-level validation beyond the token sums: multiple-choice accuracy and exact match.

Answer-token accuracy comes with the validation sums (:func:`engine.loss.example_sums`); the two
measures here look at whole answers, as the PLW article does:

- **choice accuracy**: when every completion is one of a few answers (``answer_choices``, or
  detected: at most :data:`MAX_CHOICES` distinct short validation completions), each choice is
  put in the assistant's turn, rendered with the chat template, and scored by the summed
  log-probability of its content tokens after the prompt (the article's RACE scoring, no
  generation). The prompt is computed once per example (a KV cache trimmed back after each
  choice).
- **exact match**: a greedy generation equals the reference once whitespace runs are collapsed
  and case is folded. A generation stops as soon as it can no longer match (its normalised text
  stopped being a prefix of the reference's, which no later token can undo) or its turn ends (a
  special token), so a wrong answer costs a token or two, not ``max_seq_length``.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

from engine.data.records import Record
from engine.data.tokenize import encode_with_answers, hf_tokenizer

MAX_CHOICES = 8  # more distinct validation completions than this are free-form answers
SHORT = 32  # characters: a detected choice is at most this long


def normalise(text: str) -> str:
    """Whitespace runs collapsed and trimmed, case folded: what exact match compares."""
    return " ".join(text.split()).casefold()


def reference(record: Record) -> str | None:
    """The answer a chat record holds: its last message's content, when that is the assistant's."""
    messages = record.messages
    if messages and messages[-1]["role"] == "assistant" and isinstance(messages[-1]["content"], str):
        return messages[-1]["content"]
    return None


def answered(records: list) -> list[Record]:
    """The records that end with an assistant answer (plain text has none)."""
    return [r for r in records if reference(r) is not None]


def detect_choices(records: list) -> tuple[str, ...] | None:
    """The set of answers the validation completions are drawn from, when they look like one: two
    to :data:`MAX_CHOICES` distinct short values, each seen twice on average. None otherwise."""
    refs = [reference(r).strip() for r in answered(records)]
    seen: dict[str, str] = {}
    for ref in refs:
        seen.setdefault(normalise(ref), ref)
    if not 2 <= len(seen) <= MAX_CHOICES or len(refs) < 2 * len(seen):
        return None
    if any(not key or len(key) > SHORT for key in seen):
        return None
    return tuple(sorted(seen.values()))


def choice_variants(record: Record, choices: tuple[str, ...]) -> tuple[list[Record], int] | None:
    """The record once per choice (the choice in its answer's place, the answer's surrounding
    whitespace kept, since " A" and "A" are different tokens) and the index of the reference's
    choice; None when the reference is none of them."""
    ref = reference(record)
    keys = [normalise(c) for c in choices]
    if ref is None or normalise(ref) not in keys:
        return None
    lead, trail = ref[: len(ref) - len(ref.lstrip())], ref[len(ref.rstrip()):]
    last = record.messages[-1]
    variants = [replace(record, messages=(*record.messages[:-1], {**last, "content": lead + c + trail}))
                for c in choices]
    return variants, keys.index(normalise(ref))


class ChoiceSet:
    """The validation examples a choice accuracy scores, tokenised once: per example, each
    choice's (ids, answer positions) and the right choice's index."""

    def __init__(self, tokenizer, records: list, choices: tuple[str, ...], max_seq_length: int):
        self.items: list[tuple[list[tuple[np.ndarray, np.ndarray]], int]] = []
        found = [f for r in answered(records) if (f := choice_variants(r, choices)) is not None]
        encoded = iter(encode_with_answers(tokenizer, [v for variants, _ in found for v in variants]))  # one call
        for variants, right in found:
            scored = []
            for ids, _, answer in (next(encoded) for _ in variants):
                targets = np.flatnonzero(answer[1:]) + 1
                if len(targets) and targets[-1] < max_seq_length:  # else cut by truncation, or no tokens
                    scored.append((ids[: targets[-1] + 1], targets))
            if len(scored) == len(variants):  # an example is scored over every choice or not at all
                self.items.append((scored, right))

    def __len__(self) -> int:
        return len(self.items)


def choice_scores(model, scored: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Each choice's summed log-probability of its answer tokens, the shared prompt computed once."""
    common = min(_shared_length(scored[0][0], ids) for ids, _ in scored)
    prefix = max(0, min(common, *(int(t[0]) for _, t in scored)) - 1)  # tails start before every answer
    cache, scores = None, []
    for ids, targets in scored:
        if cache is None or not can_trim_prompt_cache(cache):
            cache = make_prompt_cache(model)
            if prefix:
                mx.eval(model(mx.array(ids[:prefix])[None], cache=cache))
        tail = ids[prefix:-1]
        logits = model(mx.array(tail)[None], cache=cache)[0].astype(mx.float32)
        rows = mx.array(targets - prefix - 1)
        picked = logits[rows, mx.array(ids[targets])] - mx.logsumexp(logits[rows], axis=-1)
        scores.append(picked.sum().item())
        trim_prompt_cache(cache, len(tail))
    return scores


def _shared_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class ExactCheck:
    """Follows one greedy answer: ``done(text)`` once its turn ended or it can no longer equal the
    reference; ``matches(text)`` at the end."""

    def __init__(self, tokenizer, ref: str):
        self.want = normalise(ref)
        self.specials = [s for s in hf_tokenizer(tokenizer).all_special_tokens if s]

    def answer(self, text: str) -> str:
        """The text up to the first special token (the template's end of turn)."""
        cut = min((at for s in self.specials if (at := text.find(s)) >= 0), default=len(text))
        return text[:cut]

    def done(self, text: str) -> bool:
        answer = self.answer(text)
        return answer != text or not self.want.startswith(normalise(answer))

    def matches(self, text: str) -> bool:
        return normalise(self.answer(text)) == self.want
