"""The polynomial exponential and what is built on it, against numpy and against MLX's own."""

import mlx.core as mx
import numpy as np
import pytest

from engine.levers.fast_exp import exp, logsumexp, polynomial_applies, polynomial_exp, softmax


@pytest.mark.parametrize("compiled", [False, True])
def test_polynomial_exp_matches_numpy_over_the_float32_range(compiled):
    """Compiled too: the rounding trick must survive MLX's compiler (no algebra folds it away)."""
    x = np.linspace(-87, 88, 400_001, dtype=np.float32)
    fn = mx.compile(polynomial_exp) if compiled else polynomial_exp
    got = np.array(fn(mx.array(x))).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2.5 * np.finfo(np.float32).eps  # a couple of ulps
    assert np.isfinite(np.array(polynomial_exp(mx.array([1e4])))).all()  # clipped, never inf
    # below -87 exactly 0, never a denormal (slow on x86); read as bits, as a flushing thread reads denormals as 0
    below = fn(mx.array([-87.01, -100.0, -1e4, -np.inf], dtype=mx.float32))
    assert np.array(below.view(mx.uint32)).tolist() == [0, 0, 0, 0]


def test_exp_and_its_gradient_match_numpy_and_other_dtypes_keep_mlx():
    x = np.linspace(-80, 80, 10_001, dtype=np.float32)
    assert polynomial_applies(mx.array(x)) == (mx.default_device() == mx.cpu)
    np.testing.assert_allclose(np.array(exp(mx.array(x))), np.exp(x.astype(np.float64)), rtol=3e-7)
    grad = mx.grad(lambda v: (exp(v) * 0.5).sum())(mx.array(x))
    np.testing.assert_allclose(np.array(grad), 0.5 * np.exp(x.astype(np.float64)), rtol=3e-7)
    half = mx.array(x[:200] / 20).astype(mx.float16)
    assert not polynomial_applies(half)
    assert mx.array_equal(exp(half), mx.exp(half)).item()


def test_logsumexp_matches_numpy_and_mlx():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 3000)) * 30).astype(np.float32)
    x[0, :] = -1e30  # every value far below the rest: the maximum carries it
    x64 = x.astype(np.float64)
    top = x64.max(-1, keepdims=True)
    want = (top + np.log(np.exp(x64 - top).sum(-1, keepdims=True))).squeeze(-1)
    np.testing.assert_allclose(np.array(logsumexp(mx.array(x))), want, rtol=1e-6)
    np.testing.assert_allclose(np.array(logsumexp(mx.array(x))), np.array(mx.logsumexp(mx.array(x), axis=-1)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.array(logsumexp(mx.array(x.T), axis=0)), want, rtol=1e-6)
    grad = mx.grad(lambda v: logsumexp(v).sum())(mx.array(x[1:]))  # the softmax
    np.testing.assert_allclose(np.array(grad), np.array(mx.softmax(mx.array(x[1:]), axis=-1)), rtol=1e-5, atol=1e-7)


def test_softmax_and_its_gradient_match_numpy():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(3, 5, 40)) * 8).astype(np.float32)
    x[0, 0, :30] = np.finfo(np.float32).min  # a masked row: what the attention's mask writes
    w = rng.normal(size=x.shape).astype(np.float32)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    expected = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.array(softmax(mx.array(x))), expected, rtol=1e-6, atol=1e-7)
    grad = mx.grad(lambda v: (softmax(v) * mx.array(w)).sum())(mx.array(x))
    w64 = w.astype(np.float64)
    expected_grad = expected * (w64 - (w64 * expected).sum(-1, keepdims=True))
    np.testing.assert_allclose(np.array(grad), expected_grad, rtol=1e-5, atol=1e-6)
