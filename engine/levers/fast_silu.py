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

from engine.levers.fast_exp import polynomial_exp

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


_FAST_CLASSES: dict[type, type] = {}


def _fast_class(cls: type) -> type:
    """``cls`` with its call replaced by the fast SwiGLU; made once per MLP class."""
    if cls not in _FAST_CLASSES:
        def __call__(self, x):
            return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))

        _FAST_CLASSES[cls] = type(f"FastSiLU{cls.__name__}", (cls,), {"__call__": __call__})
    return _FAST_CLASSES[cls]


def speed_up_mlps(model: nn.Module) -> int:
    """Switch every gated-SiLU MLP of ``model`` to :func:`swiglu` on the CPU backend; returns how many.

    Call it before LoRA layers are added (the switch survives them: only the MLP's own call
    changes). An MLP is switched only if its layers are plain ``nn.Linear`` and, on a random
    probe, the switched call gives what its own call gives.
    """
    if mx.default_device() != mx.cpu:
        return 0
    switched = 0
    probe_cache: dict[int, mx.array] = {}
    for _, module in model.named_modules():
        if not all(hasattr(module, name) for name in ("gate_proj", "up_proj", "down_proj")):
            continue
        if type(module) in _FAST_CLASSES.values():
            switched += 1
            continue
        if type(module.gate_proj) is not nn.Linear:  # quantized (kept on purpose) or already wrapped
            continue
        weight = module.gate_proj.weight
        if weight.shape[-1] not in probe_cache:
            probe_cache[weight.shape[-1]] = mx.random.normal((1, 4, weight.shape[-1]), key=mx.random.key(0))
        probe = probe_cache[weight.shape[-1]].astype(weight.dtype)
        try:
            own = module(probe)
            fast = _fast_class(type(module)).__call__(module, probe)
            scale = mx.abs(own).max().item() if own.size else 0.0
            same = own.shape == fast.shape and mx.abs(own - fast).max().item() <= 1e-5 * scale + 1e-6
        except Exception:  # an MLP whose call needs more than x
            same = False
        if same:
            module.__class__ = _fast_class(type(module))
            switched += 1
    return switched

