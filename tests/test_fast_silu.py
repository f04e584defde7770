"""The CPU SwiGLU: the same values and gradients as the plain one, against numpy too, and only
switched in where the MLP really computes ``down(silu(gate(x)) * up(x))``."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.fast_silu import speed_up_mlps, swiglu
from engine.linear_ce import plw_loss_fast, select_targets
from engine.loss import plw_loss


def silu_reference(g: np.ndarray) -> np.ndarray:
    return g / (1.0 + np.exp(-g))


def test_swiglu_values_match_numpy():
    rng = np.random.default_rng(0)
    g = np.concatenate([rng.normal(0, 3, 50_000), rng.uniform(-90, 90, 1_000)]).astype(np.float32)
    u = rng.normal(0, 1, g.shape).astype(np.float32)
    got = np.array(swiglu(mx.array(g), mx.array(u))).astype(np.float64)
    want = silu_reference(g.astype(np.float64)) * u
    assert np.max(np.abs(got - want)) < 1e-6 * np.max(np.abs(want))
    assert np.allclose(got, np.array(nn.silu(mx.array(g)) * mx.array(u)), rtol=2e-6, atol=1e-7)


def test_swiglu_gradients_match_numpy():
    rng = np.random.default_rng(1)
    g, u, w = (rng.normal(0, 2, (64, 96)).astype(np.float32) for _ in range(3))
    dg, du = mx.grad(lambda a, b: (swiglu(a, b) * mx.array(w)).sum(), argnums=(0, 1))(mx.array(g), mx.array(u))
    g64, u64, w64 = (x.astype(np.float64) for x in (g, u, w))
    s = 1.0 / (1.0 + np.exp(-g64))
    np.testing.assert_allclose(np.array(dg), w64 * u64 * s * (1 + g64 * (1 - s)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(du), w64 * g64 * s, rtol=1e-5, atol=1e-6)


def load_demo(path):
    from mlx_lm.utils import load

    model, _ = load(str(path))
    return model


def lora(model):
    """LoRA on every layer, B drawn non-zero so that gradients flow through every MLP; the same
    draws for every model (seeded)."""
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    mx.random.seed(0)
    linear_to_lora_layers(model, len(model.layers), {"rank": 4, "scale": 4.0, "dropout": 0.0})
    mx.random.seed(1)
    b = [(k, mx.random.normal(v.shape) * 0.05) for k, v in tree_flatten(model.trainable_parameters()) if "lora_b" in k]
    model.update(tree_unflatten(b))
    return model


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
def test_a_switched_model_trains_as_the_plain_one(demo_model_dir, plw):
    plain, fast = load_demo(demo_model_dir), load_demo(demo_model_dir)
    assert speed_up_mlps(fast) == len(fast.layers)
    assert all(type(layer.mlp).__name__.startswith("FastSiLU") for layer in fast.layers)
    plain, fast = lora(plain), lora(fast)
    rng = np.random.default_rng(2)
    ids = rng.integers(3, 500, (3, 24)).astype(np.int32)
    roles = np.ones((3, 24), np.int8)
    roles[:, 12:] = 2
    roles[2, 20:] = 0
    np.testing.assert_allclose(np.array(fast(mx.array(ids))), np.array(plain(mx.array(ids))), rtol=1e-4, atol=1e-5)
    for loss_fn in (lambda m: plw_loss(m, mx.array(ids), mx.array(roles), plw),
                    lambda m: plw_loss_fast(m, mx.array(ids), *select_targets(roles, plw).arrays())):
        (lp, _), gp = nn.value_and_grad(plain, loss_fn)(plain)
        (lf, _), gf = nn.value_and_grad(fast, loss_fn)(fast)
        assert lf.item() == pytest.approx(lp.item(), rel=1e-5)
        flat_p, flat_f = dict(tree_flatten(gp)), dict(tree_flatten(gf))
        mlp_grads = [k for k in flat_p if ".mlp." in k]
        assert mlp_grads and max(mx.abs(flat_p[k]).max().item() for k in mlp_grads) > 0
        for k in flat_p:
            np.testing.assert_allclose(np.array(flat_f[k]), np.array(flat_p[k]), rtol=1e-3, atol=1e-6)


class GeluMLP(nn.Module):
    """Named like a gated MLP, but not a SiLU one: must keep its own call."""

    def __init__(self, dim=16, hidden=32):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def __call__(self, x):
        return self.down_proj(nn.gelu(self.gate_proj(x)) * self.up_proj(x))


class SiluMLP(GeluMLP):
    def __call__(self, x):
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


def test_only_mlps_that_compute_a_gated_silu_are_switched():
    model = nn.Sequential(GeluMLP(), SiluMLP())
    assert speed_up_mlps(model) == 1
    assert type(model.layers[0]) is GeluMLP
    assert type(model.layers[1]).__name__ == "FastSiLUSiluMLP" and isinstance(model.layers[1], SiluMLP)
    assert speed_up_mlps(model) == 1  # a second call changes nothing
