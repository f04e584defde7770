"""A faster SwiGLU for MLX's CPU backend, where ``exp`` is the slowest thing in a training step.

MLX's CPU backend computes ``exp`` one value at a time on x86, so the MLP's SiLU
(``gate * sigmoid(gate)``) cost about a third of SmolLM2's block forward. Here the sigmoid's
exponential comes from :func:`engine.levers.fast_exp.polynomial_exp` (multiplies and adds that MLX vectorises and
fuses under ``mx.compile``; float32 rounding), and the gradient is written out, not traced
through the bit manipulation.

Only the MLPs that compute exactly ``down_proj(silu(gate_proj(x)) * up_proj(x))`` are switched,
and only after checking that on a probe (:func:`speed_up_mlps`), so a model whose MLP does
something else keeps its own. Metal and CUDA have fast exponentials of their own and are left alone.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from engine.levers.device import on_cpu
from engine.levers.fast_exp import polynomial_exp
from engine.levers.swap import base_linear, is_switched, subclass, switch_if_same


def sigmoid(x: mx.array) -> mx.array:
    return 1.0 / (1.0 + polynomial_exp(-x))


@mx.custom_function
def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """``silu(gate) * up``, as mlx-lm's ``swiglu``."""
    return gate * sigmoid(gate) * up


@swiglu.vjp
def _swiglu_vjp(primals, cotangent, output):
    gate, up = primals
    s = sigmoid(gate)
    return cotangent * up * s * (1.0 + gate * (1.0 - s)), cotangent * gate * s


PREFIX = "FastSiLU"


def _fast_call(cls: type):
    def __call__(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))

    return __call__


def speed_up_mlps(model: nn.Module) -> int:
    """Switch every gated-SiLU MLP of ``model`` to :func:`swiglu` on the CPU backend; returns how many.

    Before or after LoRA layers are added (only the MLP's own call changes). An MLP is switched
    only if its gate is a plain ``nn.Linear`` (or a LoRA/DoRA layer over one) and, on a random
    probe, the switched call gives what its own call gives (:func:`engine.levers.swap.switch_if_same`).
    """
    if not on_cpu():
        return 0
    switched = 0
    probes: dict[int, mx.array] = {}
    for _, module in model.named_modules():
        if not all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj")):
            continue
        if is_switched(module, PREFIX):
            switched += 1
            continue
        if (gate := base_linear(module.gate_proj)) is None:  # quantized: kept on purpose
            continue
        weight = gate.weight
        if weight.shape[-1] not in probes:
            probes[weight.shape[-1]] = mx.random.normal((1, 4, weight.shape[-1]), key=mx.random.key(0))
        probe = probes[weight.shape[-1]].astype(weight.dtype)
        if switch_if_same(module, subclass(PREFIX, type(module), _fast_call), lambda m: m(probe)):
            switched += 1
    return switched
