"""The addmm LoRA layer against mlx-lm's LoRALinear: a single layer against numpy, a whole model's
loss and gradients at PLW 0, 0.1 and 1, and which layers it leaves alone."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.tuner.lora import LoRALinear

from engine.levers.fast_lora import FastLoRALinear, speed_up_lora
from tests.switched_models import assert_trains_like, load_demo, lora


def layer(bias: bool, seed: int = 0) -> LoRALinear:
    mx.random.seed(seed)
    out = LoRALinear.from_base(nn.Linear(12, 10, bias=bias), r=3, scale=2.5)
    out.lora_b = mx.random.normal(out.lora_b.shape) * 0.3
    return out


@pytest.mark.parametrize("bias", [False, True])
def test_one_layer_matches_numpy_and_mlx_lm(bias):
    plain, fast = layer(bias), layer(bias)
    assert speed_up_lora(fast) == 1 and type(fast) is FastLoRALinear
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 12)).astype(np.float32)
    r = rng.normal(size=(2, 5, 10)).astype(np.float32)  # the output's cotangent

    w, a, b = (np.array(t, dtype=np.float64) for t in (fast.linear.weight, fast.lora_a, fast.lora_b))
    expected = x @ w.T + 2.5 * (x @ a) @ b + (np.array(fast.linear.bias) if bias else 0)
    np.testing.assert_allclose(np.array(fast(mx.array(x))), expected, rtol=1e-5, atol=1e-5)

    def loss(module, x):
        return (module(x) * mx.array(r)).sum()

    for module in (plain, fast):
        module.freeze()
        module.unfreeze(keys=["lora_a", "lora_b"], strict=False)
    gp = dict(tree_flatten(nn.value_and_grad(plain, loss)(plain, mx.array(x))[1]))
    gf = dict(tree_flatten(nn.value_and_grad(fast, loss)(fast, mx.array(x))[1]))
    assert sorted(gf) == ["lora_a", "lora_b"]
    # numpy: d/dB = scale (xA)ᵀ r, d/dA = scale xᵀ (r Bᵀ), summed over every position
    xs, rs = x.reshape(-1, 12), r.reshape(-1, 10)
    np.testing.assert_allclose(np.array(gf["lora_b"]), 2.5 * (xs @ a).T @ rs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(gf["lora_a"]), 2.5 * xs.T @ (rs @ b.T), rtol=1e-4, atol=1e-5)
    for name in gp:
        np.testing.assert_allclose(np.array(gf[name]), np.array(gp[name]), rtol=1e-5, atol=1e-5)

    # the input's gradient and, when unfrozen, the base weight's and bias's are right too
    def through(module):
        def f(x, w, *bias_):
            module.linear.weight = w
            if bias_:
                module.linear.bias = bias_[0]
            return (module(x) * mx.array(r)).sum()
        return f

    args = [mx.array(x), fast.linear.weight] + ([fast.linear.bias] if bias else [])
    argnums = tuple(range(len(args)))
    got = mx.grad(through(fast), argnums=argnums)(*args)
    want = mx.grad(through(plain), argnums=argnums)(*args)
    for g, e in zip(got, want):
        np.testing.assert_allclose(np.array(g), np.array(e), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
def test_a_switched_model_trains_as_the_plain_one(demo_model_dir, plw):
    plain, fast = lora(load_demo(demo_model_dir)), lora(load_demo(demo_model_dir))
    loras = [m for _, m in fast.named_modules() if isinstance(m, LoRALinear)]
    assert speed_up_lora(fast) == len(loras) > 0
    assert all(type(m) is FastLoRALinear for m in loras)
    assert speed_up_lora(fast) == len(loras)  # a second call changes nothing
    assert_trains_like(plain, fast, plw, flowing="lora_a")


def test_the_switched_layer_saves_and_fuses_as_mlx_lms(demo_model_dir):
    plain, fast = lora(load_demo(demo_model_dir)), lora(load_demo(demo_model_dir))
    speed_up_lora(fast)
    saved_p, saved_f = dict(tree_flatten(plain.trainable_parameters())), dict(tree_flatten(fast.trainable_parameters()))
    assert sorted(saved_f) == sorted(saved_p)
    for k in saved_p:
        assert mx.array_equal(saved_f[k], saved_p[k])
    module = next(m for _, m in fast.named_modules() if isinstance(m, FastLoRALinear))
    fused = module.fuse()
    assert type(fused) is nn.Linear
    x = mx.random.normal((2, module.linear.weight.shape[1]), key=mx.random.key(3))
    np.testing.assert_allclose(np.array(fused(x)), np.array(module(x)), rtol=1e-4, atol=1e-5)


def test_layers_it_cannot_match_keep_mlx_lms_call(demo_model_dir):
    mx.random.seed(0)
    dropout = LoRALinear.from_base(nn.Linear(8, 8), r=2, dropout=0.1)
    half = LoRALinear.from_base(nn.Linear(8, 8), r=2)
    half.linear.set_dtype(mx.float16)
    quantized = LoRALinear.from_base(nn.QuantizedLinear(64, 64), r=2)
    model = nn.Sequential(dropout, half, quantized)
    assert speed_up_lora(model) == 0
    assert [type(m) for m in model.layers] == [LoRALinear] * 3
    # a float16 input through a switched layer takes mlx-lm's own rules
    fast = layer(False)
    speed_up_lora(fast)
    x = mx.random.normal((1, 12), key=mx.random.key(1)).astype(mx.float16)
    expected = LoRALinear.__call__(fast, x)
    got = fast(x)
    assert got.dtype == expected.dtype
    assert mx.array_equal(got, expected)
