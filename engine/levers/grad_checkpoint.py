"""Gradient checkpointing: each transformer block recomputes its activations in the backward pass.

A memory lever, not a speed one: the backward pass runs each block's forward again instead of
keeping its activations (bench/README.md measures what it saves and costs).

Why not mlx-lm's ``grad_checkpoint`` (``mx.checkpoint`` around the block): it saved nothing on
the CPU backend, where tuner widens MLX's evaluation order to breadth first without a bound
(:func:`engine.levers.cpu_streams.widen_eval_order`). MLX builds that order outward from the
step's outputs and runs it backwards, so an operation runs as late as its longest path to an
output allows. A block's parameter gradients are outputs with nothing after them: they ran at
the very end of the backward pass, and every block's recomputed activations they read stayed
alive until then (a random 8-block Llama of width 256, batch 2 x 512: 250 MB with it, 330 MB
without, 128 MB with MLX's default order; tuner's tiny model at 4 x 2,048: 3.3 GB with it,
1.7 GB without, as bench/README.md first measured). Here the gradient that flows on to
the block below waits on the block's parameter gradients (``mx.depends``), so they are computed
as soon as the block's backward is, and its recomputed activations are freed at once; the
recomputation itself waits on the block's output gradient, so it runs no earlier than needed.
That gives 124 MB in the example above, under any evaluation order (Metal's and CUDA's too),
with the same gradients to the bit.

Not exact with LoRA dropout, as mlx-lm's wrapper is not: the recomputation draws new dropout
masks from MLX's global random state (which Python cannot rewind), so the gradients are not
those of the forward pass's masks; the compute plan says so.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from engine.levers.swap import is_switched, subclass

PREFIX = "Checkpointed"


def checkpoint_layers(model: nn.Module) -> int:
    """Give each transformer block of ``model`` a class whose call recomputes its activations in
    the backward pass; returns how many blocks are checkpointed.

    Per instance (a subclass, as the other layer levers do), never the block's own class: mlx-lm's
    wrapper patched the class for the whole process, so every later model of that family, in the
    app's next run or the next test, was checkpointed too. Call it before the sparse last block
    is switched, whose full-length path then runs through the checkpointed call."""
    for block in model.layers:
        if not is_switched(block, PREFIX):
            block.__class__ = subclass(PREFIX, type(block), _checkpointed_call)
    return len(model.layers)


def _checkpointed_call(cls: type) -> Callable:
    def __call__(self, x, *args, **kwargs):
        if kwargs.get("cache", args[1] if len(args) > 1 else None) is not None:
            return cls.__call__(self, x, *args, **kwargs)  # generating: no backward pass to save for
        return recompute_in_backward(lambda block, h: cls.__call__(block, h, *args, **kwargs), self, x)

    return __call__


def recompute_in_backward(call: Callable, block: nn.Module, x: mx.array) -> mx.array:
    """``call(block, x)``, keeping for the backward pass only ``x`` and ``block``'s parameters:
    the backward pass computes the call again, then its gradients, in the order the module's
    docstring explains."""
    keys, values = _flat(block.trainable_parameters())

    def forward(h, *params):
        _put(block, keys, params)
        return call(block, h)

    checkpointed = mx.custom_function(forward)

    @checkpointed.vjp
    def backward(primals, cotangent, output):
        h, *params = primals
        h = mx.depends(h, cotangent)  # recompute once the backward pass reaches this block
        _, grads = mx.vjp(lambda *inputs: [forward(*inputs)], [h, *params], [cotangent])
        _put(block, keys, params)  # the recomputation's tracers out
        dx, *dparams = grads
        return (mx.depends(dx, dparams) if dparams else dx, *dparams)

    return checkpointed(x, *values)


def _put(block: nn.Module, keys: list[str], params) -> None:
    if keys:  # a frozen block (below the trained ones) has none
        block.update(tree_unflatten(list(zip(keys, params))))


def _flat(params: dict) -> tuple[list[str], list[mx.array]]:
    pairs = tree_flatten(params)
    return [k for k, _ in pairs], [v for _, v in pairs]
