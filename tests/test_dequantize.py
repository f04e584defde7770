"""Dequantizing to float32 for the CPU: the same weights MLX's own dequantize gives, without its
float16 rounding, and everything it does not read left to mlx-lm."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.model.load import cast_model


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(40, 128)
        self.proj = nn.Linear(128, 24, bias=True)
        self.head = nn.Linear(128, 16, bias=False)


def quantized(bits: int, group: int, scale_dtype=mx.float32) -> tuple[Tiny, dict]:
    mx.random.seed(0)
    model = Tiny()
    model.set_dtype(scale_dtype)
    nn.quantize(model, group_size=group, bits=bits)
    expected = {name: mx.dequantize(m.weight, m.scales, m.biases, group, bits).astype(mx.float32)
                for name, m in model.named_modules() if hasattr(m, "scales")}
    return model, expected


@pytest.mark.parametrize("bits,group", [(2, 32), (4, 32), (4, 64), (8, 64), (3, 32), (6, 64)])
def test_every_layer_becomes_float32_with_mlxs_values(bits, group):
    model, expected = quantized(bits, group)
    bias = np.array(model.proj.bias)
    notes = cast_model(model, mx.float32)
    assert "dequantized 3 quantized layers" in notes[0]
    assert (type(model.embed), type(model.proj), type(model.head)) == (nn.Embedding, nn.Linear, nn.Linear)
    for name, weight in expected.items():
        got = getattr(model, name).weight
        assert got.dtype == mx.float32 and got.shape == weight.shape
        np.testing.assert_allclose(np.array(got), np.array(weight), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.array(model.proj.bias), bias)
    assert "bias" not in model.head


def test_float16_scales_are_not_rounded_to_float16():
    """GGUF imports keep float16 scales: the float32 result is scale * q + bias exactly, where
    MLX's dequantize rounds it to float16 first."""
    model, rounded = quantized(4, 32, mx.float16)
    m = model.proj
    q = np.array(m.weight)[..., None] >> np.arange(0, 32, 4, dtype=np.uint32) & 15
    q = q.reshape(24, -1, 32).astype(np.float64)
    exact = (q * np.array(m.scales, np.float64)[..., None] + np.array(m.biases, np.float64)[..., None]).reshape(24, -1)
    cast_model(model, mx.float32)
    np.testing.assert_allclose(np.array(model.proj.weight), exact, rtol=1e-7, atol=1e-7)
    assert np.abs(np.array(rounded["proj"]) - exact).max() > 1e-5  # what float16 rounding would have cost
