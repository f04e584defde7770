"""The loss without the logits nobody needs: selected positions, vocabulary in chunks.

The plain objective (:func:`engine.loss.plw_loss`) runs the output layer on every position and
takes a softmax over the whole vocabulary there, then multiplies most of it by zero: with PLW 0
on multiple-choice data (Rg ~0.02) 98% of that work, and of the [batch, seq, vocab] logits held
for the backward pass, is waste. Measured on SmolLM2-135M (batch 4 x 152 tokens, CPU) the output
layer and its softmax are a third of a training step. So here:

* The model is split into its *body* (``model.model``: embeddings, blocks, final norm) and its
  *head* (``lm_head``, or the tied embedding used as a matrix). :func:`split_model` checks on a
  few tokens that ``head(body(x))`` really is ``model(x)`` before anything relies on it; models
  that scale or cap their logits differently keep the plain path.
* :func:`select_targets` (on the host, from the batch's roles) lists the target positions whose
  weight is not zero. At PLW 0 those are the completion tokens only, padded up to a multiple of
  :data:`SELECT_MULTIPLE` so ``mx.compile`` sees few distinct shapes; the padding entries carry
  weight 0. At PLW > 0 every position is kept (the shape then follows the batch's).
* The head and cross entropy run over those rows in chunks of at most :data:`CHUNK_ELEMENTS`
  logits, each under ``mx.checkpoint``: the backward pass recomputes one chunk's logits at a
  time instead of keeping them all, so a 151k-word vocabulary at 2,048 tokens never holds the
  full [positions, vocab] matrix.

The result is the same loss and the same gradients as the plain path (tests compare both at PLW
0, 0.1 and 1); only the reporting differs: at PLW 0 no prompt position is computed, so the
training report's prompt loss is unknown (NaN), while validation still measures it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .loss import COMPLETION, PROMPT

SELECT_MULTIPLE = 64
CHUNK_ELEMENTS = 1 << 24  # logits per chunk: 64 MB of float32


@dataclass(frozen=True)
class SplitModel:
    body: Callable[[mx.array], mx.array]  # token ids -> final hidden states
    head: Callable[[mx.array], mx.array]  # hidden states -> logits
    vocab_size: int


def split_model(model: nn.Module) -> SplitModel | None:
    """Body and head of an mlx-lm model, or None when ``model(x)`` is something else."""
    inner = getattr(model, "model", None)
    if not callable(inner):
        return None
    if isinstance(getattr(model, "lm_head", None), nn.Module):
        head = model.lm_head
    elif hasattr(getattr(inner, "embed_tokens", None), "as_linear"):
        head = inner.embed_tokens.as_linear
    else:
        return None
    probe = mx.array([[1, 2, 3, 4, 5, 6, 7, 8]])
    try:
        expected, got = model(probe), head(inner(probe))
        same = expected.shape == got.shape and mx.allclose(expected, got, rtol=1e-4, atol=1e-4).item()
    except Exception:  # a model whose body wants other arguments
        return None
    return SplitModel(inner, head, expected.shape[-1]) if same else None


@dataclass(frozen=True)
class Targets:
    """Flat indices into the (B, L-1) target positions, with each one's weight and role."""

    positions: np.ndarray  # int32 [K]
    weights: np.ndarray  # float32 [K]; 0 on padding entries
    roles: np.ndarray  # int8 [K]; PAD on padding entries


def select_targets(roles: np.ndarray, plw: float) -> Targets:
    """The target positions the loss needs: those with a non-zero weight (all of them if PLW > 0)."""
    target_roles = roles[:, 1:].reshape(-1)
    if plw > 0:
        positions = np.arange(target_roles.size, dtype=np.int32)
    else:
        positions = np.flatnonzero(target_roles == COMPLETION).astype(np.int32)
        size = max(SELECT_MULTIPLE, SELECT_MULTIPLE * math.ceil(len(positions) / SELECT_MULTIPLE))
        positions = np.pad(positions, (0, size - len(positions)))
    kept_roles = target_roles[positions].copy()
    if plw <= 0:
        kept_roles[int((target_roles == COMPLETION).sum()):] = 0  # the padding entries
    weights = np.where(kept_roles == COMPLETION, 1.0, np.where(kept_roles == PROMPT, plw, 0.0)).astype(np.float32)
    return Targets(positions, weights, kept_roles.astype(np.int8))


def chunked_cross_entropy(head: Callable, hidden: mx.array, targets: mx.array, vocab_size: int) -> mx.array:
    """Cross entropy (float32) of ``head(hidden)`` against ``targets`` per row, a chunk at a time."""
    rows = max(1, CHUNK_ELEMENTS // vocab_size)

    def chunk_ce(h, t):
        logits = head(h).astype(mx.float32)
        t = mx.stop_gradient(t)  # ids: mx.checkpoint asks every input for a gradient
        return mx.logsumexp(logits, axis=-1) - mx.take_along_axis(logits, t[:, None], axis=-1)[:, 0]

    if hidden.shape[0] <= rows:
        return chunk_ce(hidden, targets)
    checkpointed = mx.checkpoint(chunk_ce)
    parts = [checkpointed(hidden[i : i + rows], targets[i : i + rows]) for i in range(0, hidden.shape[0], rows)]
    return mx.concatenate(parts)


def plw_loss_selected(split: SplitModel, ids: mx.array, positions: mx.array, weights: mx.array, roles: mx.array):
    """:func:`engine.loss.plw_loss` over the selected target positions only: (loss, aux)."""
    hidden = split.body(ids[:, :-1])
    hidden = hidden.reshape(-1, hidden.shape[-1])[positions]
    targets = ids[:, 1:].reshape(-1)[positions]
    ce = chunked_cross_entropy(split.head, hidden, targets, split.vocab_size)
    is_prompt = (roles == PROMPT).astype(mx.float32)
    is_completion = (roles == COMPLETION).astype(mx.float32)
    wsum = weights.sum()
    loss = (ce * weights).sum() / mx.maximum(wsum, 1e-9)
    aux = mx.stack([wsum, (ce * is_prompt).sum(), is_prompt.sum(), (ce * is_completion).sum(), is_completion.sum()])
    return loss, aux


def eval_sums_chunked(split: SplitModel, ids: mx.array, roles: mx.array) -> mx.array:
    """:func:`engine.loss.eval_sums`, evaluated a slice of positions at a time (no gradient), so
    validation never holds the [batch, seq, vocab] logits either."""
    hidden = split.body(ids[:, :-1])
    targets, target_roles = ids[:, 1:], roles[:, 1:]
    batch, length = targets.shape
    step = max(1, CHUNK_ELEMENTS // (split.vocab_size * batch))
    sums = mx.zeros((batch, 5))
    for start in range(0, length, step):
        logits = split.head(hidden[:, start : start + step]).astype(mx.float32)
        t, r = targets[:, start : start + step], target_roles[:, start : start + step]
        ce = mx.logsumexp(logits, axis=-1) - mx.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
        is_prompt = (r == PROMPT).astype(mx.float32)
        is_completion = (r == COMPLETION).astype(mx.float32)
        hits = (mx.argmax(logits, axis=-1) == t).astype(mx.float32) * is_completion
        part = mx.stack([(ce * is_prompt).sum(1), is_prompt.sum(1), (ce * is_completion).sum(1),
                         is_completion.sum(1), hits.sum(1)], axis=1)
        sums = sums + part
        mx.eval(sums)  # free this slice's logits before the next
    return sums
