"""LoRA layers whose low-rank update is added by the matmul itself, for MLX's CPU backend.

mlx-lm's ``LoRALinear`` computes ``y = x Wᵀ``, ``z = (x A) B`` and returns ``y + scale·z``. On the
CPU that sum is one more pass over an output-sized array, and the backward pass adds two more:
scaling the output's gradient, then summing the two input gradients (through W and through A).
Here the scale is applied to the rank-sized ``x A``, ``mx.addmm`` accumulates ``(scale·x A) B``
straight into the base output, and the gradient is written out so the input gradient is one more
``addmm`` too. Same values to float32 rounding (bench/README.md measures the gain).

Parameters, names and ``fuse`` are mlx-lm's own (the switched class derives from ``LoRALinear``),
so adapters and fusing are unchanged. Only float32 layers without dropout on the CPU backend are
switched: dropout would have to be drawn again in the backward pass, and on Metal the layer's
dtype rules (a float16 base, float32 adapters) are left as mlx-lm has them.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.lora import LoRALinear

from engine.levers.device import on_cpu


def _rows(x: mx.array) -> mx.array:
    """``x`` as a matrix with one row per position."""
    return x.reshape(-1, x.shape[-1])


def _gradients(x, weight, a, b, scale, cotangent):
    """Cotangents of (x, weight, a, b, scale); the caller's graph keeps only those it uses
    (the frozen weight's is never computed in LoRA training)."""
    down = x @ a  # rank-sized, recomputed: cheaper than keeping it
    d_down = (cotangent @ b.T) * scale
    dx = mx.addmm(cotangent @ weight, d_down, a.T)
    rows_c = _rows(cotangent)
    da = _rows(x).T @ _rows(d_down)
    db = _rows(down * scale).T @ rows_c
    dweight = rows_c.T @ _rows(x)
    dscale = mx.sum((down @ b) * cotangent).reshape(scale.shape)
    return dx, dweight, da, db, dscale


@mx.custom_function
def lora_linear(x, weight, a, b, scale):
    """``x Wᵀ + scale · (x A) B``, as ``LoRALinear`` without dropout or bias."""
    return mx.addmm(x @ weight.T, (x @ a) * scale, b)


@lora_linear.vjp
def _lora_linear_vjp(primals, cotangent, output):
    return _gradients(*primals, cotangent)


@mx.custom_function
def lora_linear_bias(x, weight, a, b, scale, bias):
    """``x Wᵀ + bias + scale · (x A) B``, as ``LoRALinear`` without dropout."""
    return mx.addmm(mx.addmm(bias, x, weight.T), (x @ a) * scale, b)


@lora_linear_bias.vjp
def _lora_linear_bias_vjp(primals, cotangent, output):
    *rest, bias = primals
    return (*_gradients(*rest, cotangent), _rows(cotangent).sum(axis=0).reshape(bias.shape))


class FastLoRALinear(LoRALinear):
    """mlx-lm's ``LoRALinear`` computing through :func:`lora_linear`."""

    def __call__(self, x):
        if x.dtype != mx.float32:  # the dtype rules of mlx-lm's layer apply
            return super().__call__(x)
        scale = mx.array(self.scale, dtype=mx.float32)
        linear = self.linear
        if "bias" in linear:
            return lora_linear_bias(x, linear.weight, self.lora_a, self.lora_b, scale, linear.bias)
        return lora_linear(x, linear.weight, self.lora_a, self.lora_b, scale)


def _switchable(module: nn.Module) -> bool:
    dropout = getattr(module.dropout, "_p_1", None)  # nn.Dropout keeps 1 - p; 1.0 means no dropout
    weights = [module.linear.weight, module.lora_a, module.lora_b]
    return (
        type(module) is LoRALinear
        and type(module.linear) is nn.Linear
        and dropout == 1.0
        and all(w.dtype == mx.float32 for w in weights)
    )


def speed_up_lora(model: nn.Module) -> int:
    """Switch the model's float32, dropout-free LoRA layers to :class:`FastLoRALinear` on the
    CPU backend; returns how many layers compute through it. Call it after LoRA layers are added."""
    if not on_cpu():
        return 0
    switched = 0
    for _, module in model.named_modules():
        if type(module) is FastLoRALinear:
            switched += 1
        elif isinstance(module, LoRALinear) and _switchable(module):
            module.__class__ = FastLoRALinear
            switched += 1
    return switched
