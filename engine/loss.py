"""The prompt-loss-weight objective and the split validation metrics.

A batch holds token ids and a per-token role (PAD, PROMPT, COMPLETION). Position t of the
targets is token t+1 of the input, so its weight is the role of token t+1:
``w = 1`` on completion tokens, ``w = PLW`` on prompt tokens, ``w = 0`` on padding, and

    loss = sum(w * ce) / sum(w)

(normalised by the sum of the weights, as in Vaughn's reference code; not by the count of
non-zero weights as in WIT). PLW = 0 is prompt masking; PLW = 1 is the plain full-sequence
loss. Validation ignores PLW and reports the prompt and completion losses separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from engine.roles import ANSWER, COMPLETION, PROMPT, role_weights


def token_cross_entropy(model, ids: mx.array) -> tuple[mx.array, mx.array]:
    """Per-target-token cross entropy (float32) and the logits it came from."""
    logits = model(ids[:, :-1])
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), ids[:, 1:], reduction="none")
    return ce, logits


def token_weights(roles: mx.array, plw: float) -> mx.array:
    """Weights of the target positions (roles of tokens 1..L-1)."""
    return role_weights(roles[:, 1:], plw, mx).astype(mx.float32)


def plw_loss(model, ids: mx.array, roles: mx.array, plw: float, denominator: mx.array | None = None):
    """Training objective. Returns (loss, aux) where aux carries sums for reporting.

    aux = [sum of weights, prompt CE sum, prompt token count, completion CE sum,
    completion token count]; the first element of the return value is what gets
    differentiated. ``denominator``: see :func:`weighted_objective`.
    """
    ce, _ = token_cross_entropy(model, ids)
    return weighted_objective(ce, token_weights(roles, plw), roles[:, 1:], denominator)


def weighted_objective(ce: mx.array, weights: mx.array, target_roles: mx.array, denominator: mx.array | None = None):
    """(sum(w * ce) / sum(w), aux) from per-target cross entropies, weights and roles.

    Shared by the plain loss and :mod:`engine.levers.linear_ce`, which computes ``ce`` on fewer positions.
    ``denominator`` replaces this batch's own sum(w): a rank that holds part of a global batch
    divides by the global sum (over the number of ranks, see :func:`rank_denominator`), so the
    ranks' averaged gradients are those of the whole batch, not an average of per-rank averages.
    """
    is_prompt = (target_roles == PROMPT).astype(mx.float32)
    is_completion = (target_roles == COMPLETION).astype(mx.float32)
    wsum = weights.sum()
    loss = (ce * weights).sum() / mx.maximum(wsum if denominator is None else denominator, 1e-9)
    aux = mx.stack([wsum, (ce * is_prompt).sum(), is_prompt.sum(), (ce * is_completion).sum(), is_completion.sum()])
    return loss, aux


def rank_denominator(global_roles: list[np.ndarray], plw: float, ranks: int) -> mx.array:
    """What each of ``ranks`` ranks divides its weighted CE sum by: the global sum(w) / ranks.

    Averaging the ranks' losses (and gradients) then gives sum over all ranks of sum(w * ce)
    divided by the global sum(w): the PLW loss of the whole batch.
    """
    total = sum(float(role_weights(np.asarray(roles[1:]), plw).sum()) for roles in global_roles)
    return mx.array(total / ranks, dtype=mx.float32)


def mean_or_nan(total: float, n: float) -> float:
    """``total / n``, or NaN when nothing was counted (a split or window without such tokens)."""
    return total / n if n else float("nan")


@dataclass
class EvalTotals:
    """Running sums over validation batches; turned into means at the end."""

    prompt_ce: float = 0.0
    prompt_tokens: int = 0
    completion_ce: float = 0.0
    completion_tokens: int = 0
    completion_correct: int = 0
    examples: int = 0
    answer_tokens: int = 0
    answer_correct: int = 0

    def add(self, sums: mx.array, examples: int) -> None:
        """Add :func:`eval_sums` of a batch (one row per example)."""
        p_ce, p_n, c_ce, c_n, c_ok, a_n, a_ok = sums.sum(axis=0).tolist()
        self.prompt_ce += p_ce
        self.prompt_tokens += int(p_n)
        self.completion_ce += c_ce
        self.completion_tokens += int(c_n)
        self.completion_correct += int(c_ok)
        self.answer_tokens += int(a_n)
        self.answer_correct += int(a_ok)
        self.examples += examples

    @property
    def prompt_loss(self) -> float:
        return mean_or_nan(self.prompt_ce, self.prompt_tokens)

    @property
    def completion_loss(self) -> float:
        return mean_or_nan(self.completion_ce, self.completion_tokens)

    @property
    def full_loss(self) -> float:
        return mean_or_nan(
            self.prompt_ce + self.completion_ce, self.prompt_tokens + self.completion_tokens
        )

    def weighted_loss(self, plw: float) -> float:
        return mean_or_nan(
            plw * self.prompt_ce + self.completion_ce,
            plw * self.prompt_tokens + self.completion_tokens,
        )

    @property
    def completion_accuracy(self) -> float:
        """Greedy hits over every completion token, the template's end-of-turn markup included."""
        return mean_or_nan(self.completion_correct, self.completion_tokens)

    @property
    def answer_accuracy(self) -> float:
        """Greedy hits over the assistant's content tokens only (ANSWER roles): on one-letter
        answers the completion is mostly markup, and this is what says whether the letter is right."""
        return mean_or_nan(self.answer_correct, self.answer_tokens)


def eval_sums(model, ids: mx.array, roles: mx.array) -> mx.array:
    """Per example: [prompt CE sum, prompt count, completion CE sum, completion count, completion hits,
    answer count, answer hits].

    Kept per example (shape (B, 7)) so a run can list its worst validation examples. Answer tokens
    (role ANSWER, validation only) count as completion too.
    """
    ce, logits = token_cross_entropy(model, ids)
    hits = mx.argmax(logits, axis=-1) == ids[:, 1:]
    return example_sums(ce, hits, roles[:, 1:])


def example_sums(ce: mx.array, hits: mx.array, target_roles: mx.array) -> mx.array:
    """:func:`eval_sums`' rows from per-target cross entropies and greedy hits, both (B, L-1)."""
    is_prompt = (target_roles == PROMPT).astype(mx.float32)
    is_answer = (target_roles == ANSWER).astype(mx.float32)
    is_completion = (target_roles == COMPLETION).astype(mx.float32) + is_answer
    hits = hits.astype(mx.float32)
    return mx.stack(
        [
            (ce * is_prompt).sum(axis=1),
            is_prompt.sum(axis=1),
            (ce * is_completion).sum(axis=1),
            is_completion.sum(axis=1),
            (hits * is_completion).sum(axis=1),
            is_answer.sum(axis=1),
            (hits * is_answer).sum(axis=1),
        ],
        axis=1,
    )
