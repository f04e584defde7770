"""The CPU SwiGLU: the same values and gradients as the plain one, against numpy too, and only
switched in where the MLP really computes ``down(silu(gate(x)) * up(x))``."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.levers.fast_silu import speed_up_mlps, swiglu
from tests.switched_models import assert_trains_like, load_demo, lora


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


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
def test_a_switched_model_trains_as_the_plain_one(demo_model_dir, plw):
    plain, fast = load_demo(demo_model_dir), load_demo(demo_model_dir)
    assert speed_up_mlps(fast) == len(fast.layers)
    assert all(type(layer.mlp).__name__.startswith("FastSiLU") for layer in fast.layers)
    assert_trains_like(lora(plain), lora(fast), plw, flowing=".mlp.")


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
