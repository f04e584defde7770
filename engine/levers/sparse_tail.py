"""The last transformer block computed only at the positions the loss reads.

With sparse logits (engine/levers/linear_ce.py) the loss reads the final hidden states at a few
selected positions: at PLW 0 on short-completion data, a few percent of them. Every block but
the last is still needed everywhere, since the last block's keys and values read every position.
The last block's queries, attention, output projection and MLP, though, matter only at the
selected rows; computing them there alone saves nearly all of that block (bench/README.md has
its share of a step). On any backend.

The block is written out for the Llama form that Llama, Mistral, Qwen2, Qwen3 and SmolLM share:
input norm, attention with q/k/v/o projections, RoPE (and Qwen3's per-head norms), a residual,
the post-attention norm, the MLP, a residual. A model's last block is switched only if its
attention is plainly causal (:func:`plain_causal`: a probe this short cannot see a sliding
window) and a probe through the model's body gives the same hidden states at the selected rows
as the full block; a family whose block differs keeps the full computation.

The selected rows reach the switched block through :data:`_ROWS`, set by :func:`hidden_at` for
one call of the body, because mlx-lm's bodies pass nothing but the hidden states, mask and cache
to their blocks.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.rope_utils import Llama3RoPE, SuScaledRoPE, YarnRoPE

from engine.levers.fast_exp import polynomial_applies, softmax
from engine.levers.swap import is_switched, subclass, switch_if

_ROWS: ContextVar[mx.array | None] = ContextVar("sparse_tail_rows", default=None)


def attend_rows(attn: nn.Module, queries: mx.array, keys: mx.array, values: mx.array, allowed: mx.array) -> mx.array:
    """The attention module's output [K, D] for K query rows over N flat key rows.

    ``queries`` [K, heads, hd] (RoPE applied), ``keys`` [N, KV heads, hd] (RoPE applied),
    ``values`` [N, KV heads, hd]; ``allowed`` [K, N] says which keys each query may read.
    """
    heads, kv_heads = attn.n_heads, attn.n_kv_heads
    selected, span, dim = queries.shape[0], keys.shape[0], queries.shape[-1]
    groups = heads // kv_heads
    # query heads sharing a key head become rows of one matmul, as in engine/levers/fast_attention.py
    q = (queries * attn.scale).reshape(selected, kv_heads, groups, dim).transpose(1, 0, 2, 3)
    q = q.reshape(kv_heads, selected * groups, dim)
    k, v = keys.transpose(1, 0, 2), values.transpose(1, 0, 2)  # [kvh, N, hd]
    scores = (q @ k.swapaxes(-1, -2)).reshape(kv_heads, selected, groups, span)
    scores = mx.where(allowed[:, None, :], scores, mx.finfo(scores.dtype).min)
    probabilities = softmax(scores) if polynomial_applies(scores) else mx.softmax(scores, axis=-1, precise=True)
    out = probabilities.reshape(kv_heads, selected * groups, span) @ v
    out = out.reshape(kv_heads, selected, groups, dim).transpose(1, 0, 2, 3).reshape(selected, heads * dim)
    return attn.o_proj(out)


def _attend(attn: nn.Module, h: mx.array, rows: mx.array) -> mx.array:
    """The attention module's output [K, D] at flat ``rows`` of ``h`` [B, L, D], causal.

    Keys and values come from every position; queries only from the selected ones. The batch is
    flattened into one key axis and a query may read only its own example's earlier positions.
    """
    batch, length, _ = h.shape
    heads, kv_heads = attn.n_heads, attn.n_kv_heads

    def split(x, n):  # [B, L, n * hd] -> [B, L, n, hd], the form Qwen3's per-head norms take
        return x.reshape(batch, length, n, -1)

    queries, keys = split(attn.q_proj(h), heads), split(attn.k_proj(h), kv_heads)
    if "q_norm" in attn:
        queries, keys = attn.q_norm(queries), attn.k_norm(keys)
    queries = attn.rope(queries.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    keys = attn.rope(keys.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    values = split(attn.v_proj(h), kv_heads)

    def flat(x):  # [B, L, n, hd] -> [B * L, n, hd]
        return x.reshape(batch * length, *x.shape[2:])

    key = mx.arange(batch * length)
    allowed = (key[None] // length == (rows // length)[:, None]) & (key[None] <= rows[:, None])
    return attend_rows(attn, flat(queries)[rows], flat(keys), flat(values), allowed)


def _position_only_rope(rope: nn.Module) -> bool:
    """Whether ``rope`` rotates by position alone, not by the length of what it is given (as
    dynamic NTK scaling does): engine/levers/shared_prefix.py rotates a prefix and suffixes apart."""
    return type(rope) in (nn.RoPE, Llama3RoPE, SuScaledRoPE, YarnRoPE)


# attributes that mark attention which is not plain causal over every earlier position
_WINDOW_MARKS = ("sliding_window", "use_sliding", "is_sliding", "is_sliding_window", "attention_chunk_size",
                 "sinks", "attention_sink_bias", "scaling_beta", "attn_temperature_tuning")


def plain_causal(body: nn.Module, layers: list) -> bool:
    """``layers`` all of one kind, attending causally to every earlier position: no sliding windows,
    chunks, sinks or position-dependent scales, however the model marks them. The probes here are
    too short to see a window, and run through the last block or two only."""
    kinds = {(type(getattr(layer, "self_attn", None)), type(getattr(layer, "mlp", None))) for layer in layers}
    if len(kinds) != 1 or any(not isinstance(layer, type(layers[0])) for layer in layers):
        return False
    layer_types = getattr(getattr(body, "args", None), "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types):
        return False
    holders = [body, getattr(body, "args", None)] + [x for layer in layers for x in (layer, layer.self_attn)]
    if any(getattr(holder, mark, None) for holder in holders for mark in _WINDOW_MARKS):
        return False
    return all(_position_only_rope(getattr(layer.self_attn, "rope", None)) for layer in layers)


PREFIX = "SparseTail"


def _sparse_call(cls: type):
    """A block call that, while :data:`_ROWS` is set, returns [1, K, D]: its output at those rows."""

    def __call__(self, x, mask=None, cache=None):
        rows = _ROWS.get()
        if rows is None or cache is not None or not (isinstance(mask, str) and mask == "causal"):
            return cls.__call__(self, x, mask, cache)  # looked up now: gradient checkpointing patches it
        h = x.reshape(-1, x.shape[-1])[rows] + _attend(self.self_attn, self.input_layernorm(x), rows)
        return (h + self.mlp(self.post_attention_layernorm(h)))[None]

    return __call__


def is_sparse(layer: nn.Module) -> bool:
    """Whether ``layer`` was switched to its sparse form by :func:`sparse_last_block`."""
    return is_switched(layer, PREFIX)


def hidden_at(model: nn.Module, inputs: mx.array, rows: mx.array) -> mx.array:
    """``model.model(inputs)`` at the flat ``rows`` of its [B, L] positions: [K, D].

    Through the sparse last block when the model has one and the rows are at most half of the
    positions (a static choice of shapes, so ``mx.compile`` traces each case once); otherwise the
    full body, then the rows.
    """
    layers = getattr(model.model, "layers", None)
    if layers and is_sparse(layers[-1]) and 2 * rows.shape[0] <= inputs.size:
        token = _ROWS.set(rows)
        try:
            hidden = model.model(inputs)
        finally:
            _ROWS.reset(token)
        return hidden.reshape(-1, hidden.shape[-1])
    hidden = model.model(inputs)
    return hidden.reshape(-1, hidden.shape[-1])[rows]


@contextmanager
def last_block_only(model: nn.Module, keep: int = 1):
    """The model's body cut to its last ``keep`` blocks while inside, for probes before training.

    What the probes check (how a block and the body end, how the head follows it) does not depend
    on the blocks before, and an eager call through one block costs a thirtieth of one through thirty.
    A body that cannot run cut (it indexes its blocks) raises inside; callers then probe the
    whole body.
    """
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if not layers or len(layers) <= keep:
        yield
        return
    body.layers = layers[-keep:]
    try:
        yield
    finally:
        body.layers = layers


def probe_cut_first(model: nn.Module, probe: Callable[[], bool], keep: int = 1) -> bool:
    """``probe()`` in eval mode (no dropout to tell two calls apart) inside :func:`last_block_only`,
    again on the whole body if that raised; False if both raise (a body or block of another form)."""
    training = model.training
    model.eval()
    try:
        try:
            with last_block_only(model, keep):
                return probe()
        except Exception:
            pass
        try:
            return probe()
        except Exception:
            return False
    finally:
        model.train(training)


def same_hidden(full: mx.array, got: mx.array) -> bool:
    """Whether a switched path's hidden states ``got`` are the body's own ``full``, to rounding."""
    tolerance = 1e-4 if full.dtype == mx.float32 else 5e-2  # 16-bit sums round differently
    limit = tolerance * mx.abs(full).max().item() + 1e-6
    return full.shape == got.shape and mx.abs(full - got).max().item() <= limit


def _probe_agrees(model: nn.Module) -> bool:
    """Whether the switched body gives the full body's hidden states at a probe's rows."""
    ids = mx.array([[1, 5, 2, 7, 3, 4, 6, 1], [2, 2, 4, 1, 7, 5, 3, 6]])
    rows = mx.array([2, 7, 8, 12, 15, 0])
    full = model.model(ids)
    full = full.reshape(-1, full.shape[-1])[rows]
    return same_hidden(full, hidden_at(model, ids, rows))


def sparse_last_block(model: nn.Module) -> bool:
    """Switch the model's last block to its sparse form if a probe shows the same hidden states;
    returns whether it is switched. Works before or after LoRA layers are added."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not layers:
        return False
    last = layers[-1]
    if is_sparse(last):
        return True
    if not plain_causal(model.model, [last]):
        return False
    sparse = subclass(PREFIX, type(last), _sparse_call)
    return switch_if(last, sparse, lambda: probe_cut_first(model, lambda: _probe_agrees(model)))
