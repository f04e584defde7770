"""A polynomial exponential for MLX's CPU backend, and the softmax and logsumexp built on it.

MLX's CPU backend computes transcendental functions one value at a time on x86, each value
calling ``fmaf`` from libm several times: an ``exp`` costs about thirty multiplies
(bench/README.md). Here ``e**x`` is split into
``2**n``, built directly in the float's exponent bits, times a degree-7 polynomial for the
rest: only multiplies and adds, which MLX vectorises and fuses under ``mx.compile``. Within a
couple of float32 ulps of the exact value over the whole range (tested against numpy).

Used on the CPU backend in float32 only (:func:`exp` and :func:`logsumexp` fall back to MLX's own
elsewhere): Metal and CUDA have fast exponentials, and the bit manipulation assumes float32.
"""

from __future__ import annotations

import mlx.core as mx

from engine.levers.device import on_cpu

LOG2_E = 1.4426950408889634
# ln 2 in two parts (Cody and Waite): n * LN2_HI is exact in float32 for the n used here, so
# x - n ln 2 keeps its low bits and the result stays within a couple of float32 ulps everywhere
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
# 1.5 * 2**23: adding it to a float32 of magnitude below 2**22 leaves no bits below the unit, so
# adding then subtracting it rounds to the nearest integer (exact IEEE arithmetic, compiled or not)
ROUNDING = 12582912.0
# e**r for |r| <= ln(2)/2: Taylor coefficients 1/k!; the first left out is below 1e-8 there
EXP_COEFFICIENTS = (1.0, 1.0, 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040)


def polynomial_exp(x: mx.array) -> mx.array:
    """e**x for float32 ``x``: 0 below -87, never inf (above 88 it stays at e**88).

    Below -87 e**x nears float32's denormals, which x86 CPUs compute with very slowly (see
    engine/levers/denormals.py). Clipped there instead, a masked attention score came out as ``e**-87``
    over the row's sum, a denormal, in half of every causal attention matrix. Exact zeros are
    also what MLX's own softmax gives. No gradient of its own: :func:`exp` wraps it with one.
    """
    clipped = mx.clip(x, -87.0, 88.0)
    whole = (clipped * LOG2_E + ROUNDING) - ROUNDING  # n = round(x / ln 2), fused where mx.round is not
    r = (clipped - whole * LN2_HI) - whole * LN2_LO  # |r| <= ln(2)/2
    poly = EXP_COEFFICIENTS[-1]
    for c in reversed(EXP_COEFFICIENTS[:-1]):
        poly = poly * r + c
    scale = ((whole.astype(mx.int32) + 127) << 23).view(mx.float32)  # 2**n, from its bits
    return mx.where(x < -87.0, 0.0, poly * scale)


def polynomial_applies(x: mx.array) -> bool:
    return x.dtype == mx.float32 and on_cpu()


@mx.custom_function
def _exp_with_gradient(x: mx.array) -> mx.array:
    return polynomial_exp(x)


@_exp_with_gradient.vjp
def _exp_vjp(primals, cotangent, output):
    return (cotangent * output,)


def exp(x: mx.array) -> mx.array:
    """``mx.exp``, from the polynomial where :func:`polynomial_applies`."""
    return _exp_with_gradient(x) if polynomial_applies(x) else mx.exp(x)


def logsumexp(x: mx.array, axis: int = -1) -> mx.array:
    """``mx.logsumexp(x, axis)``, its exponentials from :func:`exp`."""
    if not polynomial_applies(x):
        return mx.logsumexp(x, axis=axis)
    top = mx.stop_gradient(x.max(axis=axis, keepdims=True))
    return (top + mx.log(exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


@mx.custom_function
def softmax(x: mx.array) -> mx.array:
    """Softmax over the last axis of float32 ``x`` from the polynomial (callers check the device)."""
    e = polynomial_exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@softmax.vjp
def _softmax_vjp(primals, cotangent, output):
    return (output * (cotangent - (cotangent * output).sum(axis=-1, keepdims=True)),)
