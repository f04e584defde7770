"""The polynomial-softmax attention against numpy, against MLX's own attention, and in a model."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.levers.fast_attention import (
    attention,
    scaled_dot_product_attention,
    speed_up_attention,
)
from tests.switched_models import assert_trains_like, load_demo, lora


def inputs(heads, kv_heads, length, span, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(2, heads, length, dim)).astype(np.float32)
    k = rng.normal(size=(2, kv_heads, span, dim)).astype(np.float32)
    v = rng.normal(size=(2, kv_heads, span, dim)).astype(np.float32)
    return mx.array(q), mx.array(k), mx.array(v)


def masks(heads, length, span):
    rng = np.random.default_rng(1)
    boolean = rng.random((2, 1, length, span)) < 0.7
    boolean[..., 0] = True  # every query attends somewhere
    per_head = rng.random((2, heads, length, span)) < 0.7
    per_head[..., 0] = True
    return {
        "none": None,
        "causal": "causal",
        "causal 2-D": mx.arange(span - length, span)[:, None] >= mx.arange(span)[None],
        "boolean (B, 1, L, S)": mx.array(boolean),
        "boolean per head": mx.array(per_head),
        "additive": mx.array(rng.normal(size=(length, span)).astype(np.float32)),
    }


@pytest.mark.parametrize("heads,kv_heads,length,span", [(4, 4, 7, 7), (6, 2, 9, 9), (6, 3, 3, 10)])
def test_attention_matches_mlx_with_every_mask(heads, kv_heads, length, span):
    q, k, v = inputs(heads, kv_heads, length, span)
    r = mx.array(np.random.default_rng(2).normal(size=(2, heads, length, 8)).astype(np.float32))
    for name, mask in masks(heads, length, span).items():
        def mlx_own(q, k, v):
            return mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=mask)

        def ours(q, k, v):
            return attention(q, k, v, 0.3, mask)

        np.testing.assert_allclose(np.array(ours(q, k, v)), np.array(mlx_own(q, k, v)), rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        grads = [mx.grad(lambda *a, f=f: (f(*a) * r).sum(), argnums=(0, 1, 2))(q, k, v) for f in (mlx_own, ours)]
        for expected, got, which in zip(*grads, "qkv"):
            np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name}, d{which}")


def test_what_it_does_not_cover_goes_to_mlx_lm():
    q, k, v = inputs(4, 2, 5, 5)
    assert attention(q.astype(mx.float16), k, v, 0.3, "causal") is None
    assert attention(q, k, v, 0.3, "sliding") is None
    assert attention(q, k, v, 0.3, mx.ones((2, 5, 5), mx.bool_)) is None  # a 3-D mask: ambiguous
    expected = mx.fast.scaled_dot_product_attention(q.astype(mx.float16), k.astype(mx.float16),
                                                    v.astype(mx.float16), scale=0.3, mask="causal")
    got = scaled_dot_product_attention(q.astype(mx.float16), k.astype(mx.float16), v.astype(mx.float16),
                                       None, 0.3, "causal")
    assert got.dtype == mx.float16
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
def test_a_switched_model_trains_as_the_plain_one(demo_model_dir, plw):
    plain, fast = load_demo(demo_model_dir), load_demo(demo_model_dir)
    assert speed_up_attention(fast) == len(fast.layers)
    assert all(type(layer.self_attn).__name__.startswith("FastSoftmax") for layer in fast.layers)
    assert speed_up_attention(fast) == len(fast.layers)  # a second call changes nothing
    assert_trains_like(lora(plain), lora(fast), plw, flowing=".self_attn.q_proj.lora_a")


def test_generation_with_a_cache_keeps_mlx_lms_attention(demo_model_dir):
    """A KV cache (generation) goes to mlx-lm's function, and gives what the plain model gives."""
    from mlx_lm.models.cache import make_prompt_cache

    plain, fast = load_demo(demo_model_dir), load_demo(demo_model_dir)
    speed_up_attention(fast)
    ids = mx.array([[5, 9, 13, 2, 7]])
    outputs = []
    for model in (plain, fast):
        cache = make_prompt_cache(model)
        first = model(ids, cache=cache)
        outputs.append((first, model(mx.array([[11]]), cache=cache)))
    for expected, got in zip(*outputs):
        np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-4, atol=1e-5)


class NotAttention(nn.Module):
    """Has a q_proj but does not use mlx-lm's attention: must keep its own call."""

    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(8, 8)

    def __call__(self, x, mask=None):
        return self.q_proj(x)


def test_only_mlx_lm_attention_modules_are_switched(demo_model_dir):
    model = nn.Sequential(NotAttention())
    assert speed_up_attention(model) == 0
    assert type(model.layers[0]) is NotAttention
    half = load_demo(demo_model_dir)
    half.set_dtype(mx.float16)  # the polynomial is for float32
    assert speed_up_attention(half) == 0
