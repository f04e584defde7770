"""Shared checks for the CPU fast paths that switch a model's modules (SiLU, attention, LoRA):
the switched model must give the plain model's outputs, losses and gradients."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from engine.levers.linear_ce import plw_loss_fast, select_targets
from engine.loss import plw_loss


def load_demo(path):
    from mlx_lm.utils import load

    model, _ = load(str(path))
    return model


def lora(model):
    """LoRA on every layer, B drawn non-zero so that gradients flow through every MLP; the same
    draws for every model (seeded)."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    mx.random.seed(0)
    linear_to_lora_layers(model, len(model.layers), {"rank": 4, "scale": 4.0, "dropout": 0.0})
    mx.random.seed(1)
    b = [(k, mx.random.normal(v.shape) * 0.05) for k, v in tree_flatten(model.trainable_parameters()) if "lora_b" in k]
    model.update(tree_unflatten(b))
    return model


def demo_lora(path, fast_paths: bool):
    """The demo model with LoRA as :func:`lora` adds it, its CPU fast paths switched where asked, in
    the trainer's order: SiLU and attention before LoRA, LoRA's own after."""
    from engine.levers.fast_attention import speed_up_attention
    from engine.levers.fast_lora import speed_up_lora
    from engine.levers.fast_silu import speed_up_mlps

    model = load_demo(path)
    if fast_paths:
        speed_up_mlps(model), speed_up_attention(model)
    model = lora(model)
    if fast_paths:
        speed_up_lora(model)
    return model


def assert_trains_like(plain: nn.Module, fast: nn.Module, plw: float, flowing: str) -> None:
    """Same logits, and the same loss and gradients through both loss paths (every position's
    logits, and the sparse ones) at ``plw``; gradients whose name holds ``flowing`` must not be
    all zero, so the switched modules are really on the gradient's path."""
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
        assert sorted(flat_f) == sorted(flat_p)
        checked = [k for k in flat_p if flowing in k]
        assert checked and max(mx.abs(flat_p[k]).max().item() for k in checked) > 0
        for k in flat_p:
            np.testing.assert_allclose(np.array(flat_f[k]), np.array(flat_p[k]), rtol=1e-3, atol=1e-6, err_msg=k)


def count_calls(monkeypatch, module, name: str) -> list:
    """A list that grows by one each time ``module.name`` is called: proves a path was taken."""
    calls = []
    real = getattr(module, name)

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


def random_qwen3(layers: int) -> nn.Module:
    """A small Qwen3 (per-head query and key norms) with every weight random, norms included, so
    that a skipped norm could not go unnoticed."""
    from mlx.utils import tree_map
    from mlx_lm.models import qwen3

    args = qwen3.ModelArgs(model_type="qwen3", hidden_size=64, num_hidden_layers=layers, intermediate_size=96,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, vocab_size=128,
                           max_position_embeddings=256, rope_theta=10000.0, head_dim=16, tie_word_embeddings=True)
    mx.random.seed(0)
    model = qwen3.Model(args)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.3 + (1.0 if p.ndim == 1 else 0.0), model.parameters()))
    return model
