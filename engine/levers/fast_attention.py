"""Attention with a polynomial-exponential softmax, for MLX's CPU backend.

On the CPU, ``mx.fast.scaled_dot_product_attention`` is plain matmuls around a softmax, and that
softmax calls MLX's scalar ``exp`` once per score, a visible share of a step's profile
(bench/README.md). Here
the same attention is written out with the softmax's exponential taken from
:func:`engine.levers.fast_exp.polynomial_exp` (multiplies and adds that MLX vectorises) and its gradient written
out. Values agree to float32 rounding.

The mlx-lm attention modules call ``scaled_dot_product_attention`` from their own module's
globals. A switched module runs a copy of its class's ``__call__`` whose globals name
:func:`scaled_dot_product_attention` below instead, so nothing global changes and a model that is
not switched keeps mlx-lm's. Cases this does not cover (a KV cache, attention sinks, a mask of an
unusual shape, a dtype other than float32) go to mlx-lm's own function.
"""

from __future__ import annotations

import types

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import scaled_dot_product_attention as _MLX_LM_SDPA

from engine.levers.device import on_cpu
from engine.levers.fast_exp import softmax
from engine.levers.swap import base_linear, is_switched, subclass, switch_if_same


def _grouped_mask(mask, heads: int, groups: int):
    """``mask`` shaped to broadcast against scores of shape (B, KV heads, groups, L, S); None if
    its shape is not one mlx-lm passes (then the caller falls back)."""
    if mask.ndim <= 2:
        return mask
    if mask.ndim == 4 and mask.shape[1] == 1:
        return mx.expand_dims(mask, 2)
    if mask.ndim == 4 and mask.shape[1] == heads:
        return mask.reshape(mask.shape[0], heads // groups, groups, *mask.shape[2:])
    return None


def attention(queries, keys, values, scale: float, mask=None) -> mx.array | None:
    """``mx.fast.scaled_dot_product_attention`` for float32 inputs, or None where it does not apply.

    Queries (B, heads, L, D) attend to keys and values (B, KV heads, S, D); grouped-query heads are
    handled by reshaping the queries, not by repeating the keys. ``mask`` is None, "causal"
    (aligned to the last query, as MLX aligns it), a boolean array (True attends) or an additive one.
    """
    if queries.dtype != mx.float32 or keys.dtype != mx.float32 or values.dtype != mx.float32:
        return None
    batch, heads, length, dim = queries.shape
    kv_heads, span = keys.shape[1], keys.shape[2]
    if heads % kv_heads:
        return None
    groups = heads // kv_heads
    if isinstance(mask, str):
        if mask != "causal":
            return None
        mask = mx.arange(span - length, span)[:, None] >= mx.arange(span)[None]
    elif mask is not None and (mask := _grouped_mask(mask, heads, groups)) is None:
        return None
    # the query heads that share a key head become rows of one matmul: fewer, larger BLAS calls
    q = (queries * scale).reshape(batch, kv_heads, groups * length, dim)
    scores = (q @ keys.swapaxes(-1, -2)).reshape(batch, kv_heads, groups, length, span)
    if mask is not None:
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probabilities = softmax(scores).reshape(batch, kv_heads, groups * length, span)
    return (probabilities @ values).reshape(batch, heads, length, dim)


def scaled_dot_product_attention(queries, keys, values, cache, scale: float, mask, sinks=None) -> mx.array:
    """Stands in for mlx-lm's function of the same name inside switched attention modules."""
    if cache is None and sinks is None:
        out = attention(queries, keys, values, scale, mask)
        if out is not None:
            return out
    return _MLX_LM_SDPA(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)


PREFIX = "FastSoftmax"


def _fast_call(cls: type):
    """``cls``'s own call code, reading :func:`scaled_dot_product_attention` from its globals."""
    call = cls.__call__
    scope = dict(call.__globals__, scaled_dot_product_attention=scaled_dot_product_attention)
    fast_call = types.FunctionType(call.__code__, scope, call.__name__, call.__defaults__, call.__closure__)
    fast_call.__kwdefaults__ = call.__kwdefaults__
    return fast_call


def speed_up_attention(model: nn.Module) -> int:
    """Switch the model's mlx-lm attention modules to :func:`attention` on the CPU backend, in
    float32; returns how many.

    Before or after LoRA layers are added. A module is switched only if its class's call reads
    mlx-lm's ``scaled_dot_product_attention``, its query projection is a float32 ``nn.Linear`` (or
    a LoRA/DoRA layer over one) and a causal probe through it gives what its own call gives
    (:func:`engine.levers.swap.switch_if_same`).
    """
    if not on_cpu():
        return 0
    switched = 0
    for _, module in model.named_modules():
        if is_switched(module, PREFIX):
            switched += 1
            continue
        call = getattr(type(module), "__call__", None)
        if getattr(call, "__globals__", {}).get("scaled_dot_product_attention") is not _MLX_LM_SDPA:
            continue
        projection = getattr(module, "q_proj", None) or getattr(module, "qkv_proj", None)
        base = base_linear(projection) if projection is not None else None
        if base is None or base.weight.dtype != mx.float32:
            continue
        probe = mx.random.normal((2, 6, base.weight.shape[-1]), key=mx.random.key(0))
        if switch_if_same(module, subclass(PREFIX, type(module), _fast_call), lambda m: m(probe, mask="causal")):
            switched += 1
    return switched
