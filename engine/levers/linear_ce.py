"""The PLW loss without [batch, seq, vocab] logits: selected positions, vocabulary in chunks.

:func:`engine.loss.plw_loss` runs the output layer on every position, takes a softmax over the
whole vocabulary there, and multiplies most of it by zero: at PLW 0 on data whose completions are
2% of the tokens, 98% of that work is wasted, and the float32 [positions, vocab] logits (1.2 GB
at 2,048 tokens and Qwen's 151,936 ids, several copies with their softmax and gradient) dominate
training memory on a large vocabulary. Two levers:

1. :func:`select_targets` (on the host, from the batch's roles) lists the target positions whose
   weight is not zero, padded with weight-0 entries to one of a few bucketed sizes so that
   ``mx.compile`` sees few distinct shapes. The loss gathers the hidden states there ([K, D])
   before the output layer, so positions with weight 0 never get logits.
2. :func:`linear_cross_entropy` computes the cross entropy of ``h @ W.T`` with a custom
   gradient, a vocabulary slice at a time: the forward pass keeps one number per row (its cross
   entropy, from which the backward pass gets the logsumexp back), the backward pass recomputes
   each slice's logits and turns them straight into ``(softmax - onehot) * w``. The
   slices are chained with ``mx.depends`` so MLX cannot schedule them side by side; peak memory
   follows ``chunk_elements``, not positions x vocabulary. On the CPU backend their exponentials
   come from :mod:`engine.levers.fast_exp` (MLX's CPU ``exp`` is scalar; same values to float32 rounding).

:func:`plw_loss_fast` puts both together as a drop-in for ``plw_loss``; :func:`eval_sums_fast`
is ``loss.eval_sums`` a slice of positions at a time (validation needs every position).

Why slices of the vocabulary rather than of the rows: the head's gradient dW [V, D] is then a
concatenation of per-slice blocks instead of a sum of one full [V, D] partial per row chunk, and
W is read once per pass instead of once per row chunk; it took less memory and time than row
chunks when both were measured (``bench/linear_ce_memory.py``, bench/README.md).

Aux at PLW 0: prompt positions carry weight 0, so they are not selected and their cross entropy
is never computed. The aux sums are over *computed* positions: prompt CE sum 0 and prompt count 0,
which the trainer's report turns into "prompt loss unavailable" (0/0), while sums across steps
stay finite. Validation (:func:`eval_sums_fast`) still measures the prompt loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from engine.levers.fast_exp import exp, logsumexp
from engine.roles import role_weights
from engine.loss import example_sums, weighted_objective
from engine.levers.shared_prefix import hidden_at
from engine.levers.sparse_tail import probe_cut_first

CHUNK_ELEMENTS = 1 << 22  # logits computed at once: 16 MB of float32 (MLX keeps ~10 in flight)
MIN_SELECTED = 64


def bucket_size(n: int, minimum: int = MIN_SELECTED) -> int:
    """``n`` rounded up to a bucketed size: multiples of ``minimum`` up to 16 x ``minimum``,
    then 8 sizes per doubling. So the compiled step sees few shapes, and padding stays under
    ``minimum`` rows or 1/8 of the selection."""
    step = max(minimum, (1 << (max(n, 1).bit_length() - 1)) // 8)
    return max(minimum, -(-n // step) * step)


@dataclass(frozen=True)
class Selection:
    """Target positions the loss needs, as flat indices into the (B, L-1) targets."""

    positions: np.ndarray  # int32 [K]
    weights: np.ndarray  # float32 [K]; 0 on padding entries
    roles: np.ndarray  # int8 [K], the targets' roles; PAD on padding entries

    def arrays(self) -> tuple[mx.array, mx.array, mx.array]:
        """(positions, weights, roles) as MLX arrays: the extra inputs of :func:`plw_loss_fast`."""
        return mx.array(self.positions), mx.array(self.weights), mx.array(self.roles)


def select_targets(roles: np.ndarray, plw: float, minimum: int = MIN_SELECTED) -> Selection:
    """The targets with a non-zero weight (completion tokens, and prompt tokens when PLW > 0),
    padded to :func:`bucket_size` with entries of weight 0 (they point at position 0).

    Padding targets are never selected, at any PLW. Under ``mx.compile`` every new pair of
    (batch shape, selection size) is one more trace; the buckets keep the second factor small."""
    target_roles = roles[:, 1:].reshape(-1)
    weights = role_weights(target_roles, plw)
    keep = np.flatnonzero(weights)
    pad = (0, bucket_size(len(keep), minimum) - len(keep))
    return Selection(
        np.pad(keep, pad).astype(np.int32),
        np.pad(weights[keep], pad).astype(np.float32),
        np.pad(target_roles[keep], pad).astype(np.int8),
    )


def linear_cross_entropy(
    h: mx.array,
    weight: mx.array,
    targets: mx.array,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
    weight_grad: bool = True,
) -> mx.array:
    """Per-row cross entropy (float32, [N]) of the logits ``h @ weight.T`` against ``targets``,
    without ever holding more than about ``chunk_elements`` logits.

    ``h`` [N, D], ``weight`` [V, D] (the head matrix, in the model's dtype), ``targets`` [N].
    Logits are computed in the model's dtype, as the model's own head does, and the cross
    entropy from them in float32. The caller weights and sums the rows; the backward pass gets
    each row's ``w * cotangent`` and forms ``(softmax - onehot) * that`` slice by slice.

    ``weight_grad=False`` treats ``weight`` as a constant (a frozen head, e.g. LoRA): its
    gradient is then zero and never computed, which saves a third of the backward pass.
    """
    n, vocab = h.shape[0], weight.shape[0]
    cols = max(128, chunk_elements // max(n, 1) // 128 * 128)
    slices = [(v, min(v + cols, vocab)) for v in range(0, vocab, cols)]

    def target_logit(h, w, t):
        # The same dot product the head computes for the target, rounded to the model's dtype.
        return (h[:, None, :] @ w[t][:, :, None]).reshape(-1).astype(mx.float32)

    @mx.custom_function
    def cross_entropy(h, w, t):
        lse = []
        for a, b in slices:
            hs = mx.depends(h, lse[-1]) if lse else h
            lse.append(logsumexp((hs @ w[a:b].T).astype(mx.float32)))
        total = lse[0] if len(lse) == 1 else logsumexp(mx.stack(lse, axis=1))
        return total - target_logit(h, w, t)

    @cross_entropy.vjp
    def cross_entropy_vjp(primals, cotangent, ce):
        h, w, t = primals
        lse = (ce + target_logit(h, w, t))[:, None]
        c = cotangent[:, None]
        dh, dw = mx.zeros(h.shape, mx.float32), []
        for a, b in slices:
            hs = mx.depends(h, [dh, *dw[-1:]])  # this slice after the previous one
            softmax = exp((hs @ w[a:b].T).astype(mx.float32) - lse)
            onehot = mx.arange(a, b)[None, :] == t[:, None]
            g = ((softmax - onehot) * c).astype(w.dtype)
            dh = dh + (g @ w[a:b]).astype(mx.float32)
            if weight_grad:
                dw.append(g.T @ h)
        # zeros, not None: MLX turns a None cotangent into an array of the wrong shape
        return dh.astype(h.dtype), mx.concatenate(dw) if weight_grad else mx.zeros_like(w), None

    return cross_entropy(h, weight, targets)


@dataclass(frozen=True)
class Head:
    """The model's output layer, as :func:`output_head` found it."""

    logits: Callable[[mx.array], mx.array]  # hidden [..., D] -> logits [..., V], as the model does it
    weight: mx.array | None  # the [V, D] matrix when the head is a plain one; None: call ``logits``
    trainable: bool  # whether that matrix gets a gradient (full fine-tuning)


def output_head(model: nn.Module) -> Head:
    """The head of an mlx-lm model: ``lm_head``, or the tied embedding used as a matrix.

    Only a plain ``nn.Linear`` without bias or a plain ``nn.Embedding`` yields a matrix; a
    quantized head, a LoRA-wrapped ``lm_head`` or anything else is called as a module (on the
    selected rows only). Subclasses are treated as "anything else", since they may change what
    the call computes.
    """
    body = model.model
    if getattr(getattr(model, "args", None), "tie_word_embeddings", False) or not hasattr(model, "lm_head"):
        module, call = body.embed_tokens, body.embed_tokens.as_linear
        plain = type(module) is nn.Embedding
    else:
        module = call = model.lm_head
        plain = type(module) is nn.Linear and "bias" not in module
    trainable = plain and "weight" in module.trainable_parameters()
    return Head(call, module.weight if plain else None, trainable)


def head_matches(model: nn.Module) -> bool:
    """Whether ``model(x)`` is ``head(model.model(x))`` on a few tokens, i.e. whether the fast loss
    computes the model's real logits. False for models that scale or cap their logits after the
    head (Cohere's logit scale, Gemma 2's soft cap) or whose body wants other arguments. Evaluates
    the model (in eval mode, so dropout cannot tell the two calls apart): call it once, before
    training, not inside ``mx.compile``."""
    probe = mx.array([[1, 2, 3, 4, 5, 6, 7, 8]])

    def agrees() -> bool:
        expected, got = model(probe), output_head(model).logits(model.model(probe))
        return expected.shape == got.shape and mx.allclose(expected, got, rtol=1e-4, atol=1e-4).item()

    return probe_cut_first(model, agrees)  # False for a body that wants other arguments, or no model.model


def plw_loss_fast(
    model: nn.Module,
    ids: mx.array,
    positions: mx.array,
    weights: mx.array,
    target_roles: mx.array,
    denominator: mx.array | None = None,
    *,
    chunk_elements: int = CHUNK_ELEMENTS,
    shared_prefix: int = 0,
):
    """:func:`engine.loss.plw_loss` over the :func:`select_targets` positions only: (loss, aux).

    ``positions``, ``weights``, ``target_roles`` are :meth:`Selection.arrays`; PLW is in the weights.
    ``denominator``: see :func:`engine.loss.weighted_objective`.
    The loss and its gradients equal ``plw_loss``'s. aux = [sum of weights, prompt CE sum,
    prompt count, completion CE sum, completion count] over the selected positions: equal to
    ``plw_loss``'s when PLW > 0; at PLW 0 the prompt entries are 0 (see the module docstring).
    """
    hidden = hidden_at(model, ids[:, :-1], positions, shared_prefix)  # engine/levers/shared_prefix.py
    targets = ids[:, 1:].reshape(-1)[positions]
    head = output_head(model)
    if head.weight is None:
        logits = head.logits(hidden).astype(mx.float32)
        ce = nn.losses.cross_entropy(logits, targets, reduction="none")
    else:
        ce = linear_cross_entropy(
            hidden, head.weight, targets, chunk_elements=chunk_elements, weight_grad=head.trainable
        )
    return weighted_objective(ce, weights, target_roles, denominator)


def eval_sums_fast(
    model: nn.Module, ids: mx.array, roles: mx.array, *, chunk_elements: int = CHUNK_ELEMENTS, shared_prefix: int = 0
) -> mx.array:
    """:func:`engine.loss.eval_sums` ([B, 7] per example: prompt CE sum, prompt count, completion
    CE sum, completion count, completion argmax hits, answer count, answer hits) computed on slices
    of positions, so
    validation never holds [B, L, V] logits either. No gradient.

    Slices of rows rather than of the vocabulary: there is no backward pass here, and any head
    (quantized too) can be called on rows.
    """
    head = output_head(model)
    inputs = ids[:, :-1]
    if shared_prefix:  # as in plw_loss_fast, every position's hidden state
        hidden = hidden_at(model, inputs, mx.arange(inputs.size), shared_prefix).reshape(*inputs.shape, -1)
    else:
        hidden = model.model(inputs)
    batch, length, dim = hidden.shape
    hidden, targets = hidden.reshape(-1, dim), ids[:, 1:].reshape(-1)
    vocab = head.logits(hidden[:1]).shape[-1]  # only its shape: never evaluated
    rows = max(1, chunk_elements // vocab)
    parts = []
    for a in range(0, hidden.shape[0], rows):
        h = mx.depends(hidden[a : a + rows], parts[-1]) if parts else hidden[a : a + rows]
        logits = head.logits(h).astype(mx.float32)
        t = targets[a : a + rows]
        ce = logsumexp(logits) - mx.take_along_axis(logits, t[:, None], axis=-1).squeeze(-1)
        hit = (mx.argmax(logits, axis=-1) == t).astype(mx.float32)
        parts.append(mx.stack([ce, hit], axis=1))  # one array per slice, so the slice's logits go at once
    per_target = mx.concatenate(parts).reshape(batch, length, 2)
    return example_sums(per_target[..., 0], per_target[..., 1], roles[:, 1:])
