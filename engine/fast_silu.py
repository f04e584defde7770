"""A faster SwiGLU for MLX's CPU backend, where ``exp`` is the slowest thing in a training step.

MLX's CPU backend computes transcendental functions one value at a time on x86: measured on
the 2-core test machine, ``mx.exp`` over 1.2M float32 values takes 15 ms where a multiply takes
0.5 ms, so the MLP's SiLU (``gate * sigmoid(gate)``) costs about a third of SmolLM2's block
forward. Here the sigmoid's exponential is ``2**y`` split into an integer power, built directly
in the float's exponent bits, times a degree-7 polynomial for the rest (at most a half): only multiplies and
adds, which MLX runs vectorised and fuses under ``mx.compile``. Relative error about 1e-7, the
float32 rounding of the plain function; the gradient is written out, not traced through the
bit manipulation.

Only the MLPs that compute exactly ``down_proj(silu(gate_proj(x)) * up_proj(x))`` are switched,
and only after checking that on a probe (:func:`speed_up_mlps`), so a model whose MLP does
something else keeps its own. Metal and CUDA have fast exponentials of their own and are left alone.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

LOG2_E = 1.4426950408889634
# 2**f for |f| <= 1/2: Taylor coefficients of exp(f ln 2); the first left out is below 1e-8 there
EXP2_COEFFICIENTS = (
    1.0, 0.6931471805599453, 0.2402265069591007, 0.05550410866482158,
    0.009618129107628477, 0.0013333558146428443, 0.00015403530393381606, 1.525273380405984e-05,
)


def exp2(y: mx.array) -> mx.array:
    """2**y for float32 ``y`` (clipped to the normal range, so never inf or a denormal)."""
    y = mx.clip(y, -126.0, 126.0)
    whole = mx.round(y)
    fraction = y - whole  # in [-0.5, 0.5], where the polynomial's error is far below float32's
    poly = EXP2_COEFFICIENTS[-1]
    for c in reversed(EXP2_COEFFICIENTS[:-1]):
        poly = poly * fraction + c
    scale = ((whole.astype(mx.int32) + 127) << 23).view(mx.float32)  # 2**whole, from its bits
    return poly * scale


def sigmoid(x: mx.array) -> mx.array:
    return 1.0 / (1.0 + exp2(-LOG2_E * x))


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

