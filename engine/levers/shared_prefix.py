"""The prompt prefix every training example shares, computed once per batch.

Chat templates and instruction formats open every example with the same tokens: SmolLM2's template
adds its default system message, RACE-style prompts repeat their instruction. In the RACE-like
benchmark set the first 36 of about 150 tokens are the same in all 600 examples, so a batch of four
computed the same 36 positions four times. Under causal attention a position's hidden states
depend only on the tokens up to it, so the shared prefix's are the same in every row: computed
once, they serve every row, and in the backward pass the gradients the rows send back through
them add up, as they would over the copies. Same loss and gradients to float32 rounding.

The body runs flat: the prefix's P positions, then each row's other S positions, [1, P + B·S, D].
Norms, projections and MLPs see that as they would see [B, L, D]; only attention splits it: the
prefix attends to itself, each row's suffix to the prefix and to itself (keys [B, P + S], causal
aligned to the last query), and RoPE gets the true positions (the suffix's from offset P). When
the model's last block is sparse (engine/levers/sparse_tail.py), it is computed at the rows the loss
reads only, over the same flat keys.

Written for the Llama form that engine/levers/sparse_tail.py describes. A model is switched only if all
its blocks are of one kind with plain causal attention and a RoPE that depends on position alone
(no sliding windows, chunks or sinks, however marked), and a probe through its body's last two
blocks gives its own hidden states. The prefix length is fixed for a run (the training set's common
prefix), so it adds no shapes for ``mx.compile`` to trace.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from engine.levers.sparse_tail import attend_rows, is_sparse, plain_causal, probe_cut_first, same_hidden
from engine.levers.sparse_tail import hidden_at as sparse_hidden_at

MIN_SHARED = 8  # a shorter common prefix saves too little to be worth its extra operations


def common_prefix(sequences: list[np.ndarray]) -> int:
    """How many leading tokens all ``sequences`` share, leaving every one at least two of its own
    (so every row keeps a position after the last input token is dropped)."""
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences) - 2
    for sequence in sequences[1:]:
        if length <= 0:
            return 0
        differ = np.flatnonzero(first[:length] != sequence[:length])
        if differ.size:
            length = int(differ[0])
    return max(length, 0)


def _project(attn: nn.Module, h: mx.array, rows: int, prefix: int):
    """Queries, keys and values of flat ``h`` [1, N, D], each as (prefix [1, n, P, hd], suffixes
    [rows, n, S, hd]), RoPE applied at the true positions."""
    suffix = (h.shape[1] - prefix) // rows

    def split(x, n):  # [1, N, n * hd] -> the two parts as [B, L, n, hd], the form Qwen3's head norms take
        return x[0, :prefix].reshape(1, prefix, n, -1), x[0, prefix:].reshape(rows, suffix, n, -1)

    queries, keys = split(attn.q_proj(h), attn.n_heads), split(attn.k_proj(h), attn.n_kv_heads)
    values = split(attn.v_proj(h), attn.n_kv_heads)
    if "q_norm" in attn:
        queries = tuple(attn.q_norm(x) for x in queries)
        keys = tuple(attn.k_norm(x) for x in keys)

    def heads_first(pair):
        return tuple(x.transpose(0, 2, 1, 3) for x in pair)

    def rope(pair):
        before, after = heads_first(pair)
        return attn.rope(before), attn.rope(after, offset=prefix)

    return rope(queries), rope(keys), heads_first(values)


def _attention(attn: nn.Module, h: mx.array, rows: int, prefix: int) -> mx.array:
    """The attention module's output [1, N, D] for flat ``h``, through the attention function the
    module's own call uses (engine/levers/fast_attention.py's when it is switched)."""
    (q_pre, q_post), (k_pre, k_post), (v_pre, v_post) = _project(attn, h, rows, prefix)
    attend = type(attn).__call__.__globals__["scaled_dot_product_attention"]
    before = attend(q_pre, k_pre, v_pre, cache=None, scale=attn.scale, mask="causal")
    keys = mx.concatenate([mx.broadcast_to(k_pre, (rows, *k_pre.shape[1:])), k_post], axis=2)
    values = mx.concatenate([mx.broadcast_to(v_pre, (rows, *v_pre.shape[1:])), v_post], axis=2)
    after = attend(q_post, keys, values, cache=None, scale=attn.scale, mask="causal")

    def flat(out):  # [B, heads, L, hd] -> [B * L, heads * hd]
        return out.transpose(0, 2, 1, 3).reshape(-1, out.shape[1] * out.shape[3])

    return attn.o_proj(mx.concatenate([flat(before), flat(after)])[None])


def _last_block_at(layer: nn.Module, h: mx.array, rows: int, prefix: int, selected: mx.array) -> mx.array:
    """The last block's output [K, D] at the flat rows ``selected`` of ``h`` [1, N, D]."""
    attn = layer.self_attn
    queries, keys, values = _project(attn, layer.input_layernorm(h), rows, prefix)

    def flat(pair):  # (prefix [1, n, P, hd], suffixes [B, n, S, hd]) -> [N, n, hd]
        return mx.concatenate([x.transpose(0, 2, 1, 3).reshape(-1, *x.shape[1:2], x.shape[-1]) for x in pair])

    span, suffix = h.shape[1], (h.shape[1] - prefix) // rows
    key = mx.arange(span)
    shared = key < prefix
    position = mx.where(shared, key, prefix + (key - prefix) % suffix)
    row = mx.where(shared, -1, (key - prefix) // suffix)
    allowed = (position[None] <= position[selected][:, None]) & (shared[None] | (row[None] == row[selected][:, None]))
    x = h[0][selected] + attend_rows(attn, flat(queries)[selected], flat(keys), flat(values), allowed)
    return x + layer.mlp(layer.post_attention_layernorm(x))


def hidden_at(model: nn.Module, inputs: mx.array, rows: mx.array, prefix: int) -> mx.array:
    """``model.model(inputs)`` [B, L] at the flat ``rows`` of its positions, [K, D], with the
    first ``prefix`` positions (the same tokens in every row) computed once; 0 for none shared."""
    if not prefix:
        return sparse_hidden_at(model, inputs, rows)
    body = model.model
    batch, length = inputs.shape
    suffix = length - prefix
    tokens = mx.concatenate([inputs[0, :prefix], inputs[:, prefix:].reshape(-1)])
    column = rows % length
    flat_rows = mx.where(column < prefix, column, prefix + (rows // length) * suffix + column - prefix)
    h = body.embed_tokens(tokens)[None]
    layers = body.layers
    sparse_last = is_sparse(layers[-1]) and 2 * rows.shape[0] <= h.shape[1]
    for layer in layers[:-1] if sparse_last else layers:
        h = h + _attention(layer.self_attn, layer.input_layernorm(h), batch, prefix)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    h = _last_block_at(layers[-1], h, batch, prefix, flat_rows) if sparse_last else h[0][flat_rows]
    return body.norm(h)


def _probe_agrees(model: nn.Module) -> bool:
    """Whether :func:`hidden_at` gives the body's own hidden states, at a few rows (the sparse
    last block, where the model has one) and at every row."""
    ids = mx.array([[1, 5, 2, 7, 3, 4, 6, 1, 2], [1, 5, 2, 2, 4, 1, 7, 5, 3]])
    full = model.model(ids)
    full = full.reshape(-1, full.shape[-1])
    return all(same_hidden(full[rows], hidden_at(model, ids, rows, 3))
               for rows in (mx.array([2, 8, 12, 17]), mx.arange(ids.size)))


def shares_prefix(model: nn.Module) -> bool:
    """Whether :func:`hidden_at` may stand in for the model's body: the Llama form, plain causal
    attention in every block (:func:`engine.levers.sparse_tail.plain_causal`), checked on a probe."""
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if not layers or not all(hasattr(body, name) for name in ("embed_tokens", "norm")):
        return False
    if not plain_causal(body, list(layers)):
        return False
    return probe_cut_first(model, lambda: _probe_agrees(model), keep=2)
