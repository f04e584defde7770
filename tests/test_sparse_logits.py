"""The selected-position, chunked loss equals the plain one: values and gradients, PLW 0 / 0.1 / 1."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from mlx_lm.tuner.utils import linear_to_lora_layers

from engine import sparse_logits
from engine.loss import COMPLETION, PAD, PROMPT, eval_sums, plw_loss
from engine.sparse_logits import eval_sums_chunked, plw_loss_selected, select_targets, split_model

VOCAB = 300


def tiny_model(tied: bool, lora_head: bool = False) -> nn.Module:
    mx.random.seed(0)
    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=VOCAB,
                           tie_word_embeddings=tied)
    model = llama.Model(args)
    model.freeze()
    keys = ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": keys})
    for layer in model.layers:  # LoRA's B starts at zero; make the adapters matter
        for _, m in layer.named_modules():
            if hasattr(m, "lora_b"):
                m.lora_b = mx.random.normal(m.lora_b.shape) * 0.1
    if lora_head:
        from mlx_lm.tuner.lora import LoRALinear

        model.lm_head = LoRALinear.from_base(model.lm_head, r=4)
    return model


def batch(seed: int = 0):
    """Three examples of different lengths: prompt, then completion, then padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(3, 24)).astype(np.int32)
    roles = np.full((3, 24), PAD, dtype=np.int8)
    for row, (prompt, completion) in enumerate([(15, 3), (18, 6), (9, 2)]):
        roles[row, :prompt] = PROMPT
        roles[row, prompt : prompt + completion] = COMPLETION
    return ids, roles


def both_losses(model, plw: float, ids, roles):
    """(plain loss, aux, grads), (selected loss, aux, grads)."""
    split = split_model(model)
    assert split is not None
    t = select_targets(roles, plw)
    plain = nn.value_and_grad(model, lambda m: plw_loss(m, mx.array(ids), mx.array(roles), plw))
    fast = nn.value_and_grad(model, lambda m: plw_loss_selected(
        split, mx.array(ids), mx.array(t.positions), mx.array(t.weights), mx.array(t.roles)))
    return plain(model), fast(model)


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk", [None, 7 * VOCAB])  # one piece, or chunks of 7 rows (not dividing)
def test_same_loss_and_gradients_as_the_plain_path(plw, tied, chunk, monkeypatch):
    if chunk:
        monkeypatch.setattr(sparse_logits, "CHUNK_ELEMENTS", chunk)
    model = tiny_model(tied)
    ids, roles = batch()
    ((loss_a, aux_a), grad_a), ((loss_b, aux_b), grad_b) = both_losses(model, plw, ids, roles)
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-5)
    a, b = aux_a.tolist(), aux_b.tolist()
    assert b[0] == pytest.approx(a[0]) and b[3:] == pytest.approx(a[3:], rel=1e-5)  # weights, completion
    if plw > 0:
        assert b[1:3] == pytest.approx(a[1:3], rel=1e-5)
    else:
        assert b[2] == 0  # at PLW 0 no prompt position is computed: the report shows NaN
    flat_a, flat_b = dict(tree_flatten(grad_a)), dict(tree_flatten(grad_b))
    assert flat_a.keys() == flat_b.keys() and len(flat_a) == 12  # 2 blocks x 3 adapted layers x (A, B)
    for name in flat_a:
        assert np.allclose(np.array(flat_b[name]), np.array(flat_a[name]), rtol=1e-4, atol=1e-6), name


def test_a_head_with_lora_still_matches():
    model = tiny_model(tied=False, lora_head=True)
    ids, roles = batch(1)
    ((loss_a, _), grad_a), ((loss_b, _), grad_b) = both_losses(model, 0.0, ids, roles)
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-5)
    for (name, ga), (_, gb) in zip(tree_flatten(grad_a), tree_flatten(grad_b)):
        assert np.allclose(np.array(gb), np.array(ga), rtol=1e-4, atol=1e-6), name


def test_selection_keeps_only_weighted_positions_in_few_shapes():
    ids, roles = batch()
    t = select_targets(roles, 0.0)
    completions = 3 + 6 + 2 - 0  # every completion token is a target (none at position 0)
    assert len(t.positions) == 64 and t.weights.sum() == completions
    assert (t.roles[:completions] == COMPLETION).all() and (t.roles[completions:] == PAD).all()
    full = select_targets(roles, 0.5)
    assert len(full.positions) == 3 * 23 and full.weights.max() == 1.0 and 0.5 in full.weights


def test_compiled_selected_loss_equals_the_eager_one():
    model = tiny_model(tied=True)
    split = split_model(model)
    ids, roles = batch(2)
    t = select_targets(roles, 0.0)
    args = [mx.array(ids), mx.array(t.positions), mx.array(t.weights), mx.array(t.roles)]
    eager = plw_loss_selected(split, *args)[0].item()
    compiled = mx.compile(lambda *a: plw_loss_selected(split, *a)[0])(*args).item()
    assert compiled == pytest.approx(eager, rel=1e-6)


@pytest.mark.parametrize("chunk", [None, 5 * 3 * VOCAB])
def test_chunked_validation_equals_the_plain_one(chunk, monkeypatch):
    if chunk:
        monkeypatch.setattr(sparse_logits, "CHUNK_ELEMENTS", chunk)
    model = tiny_model(tied=False)
    ids, roles = batch(3)
    plain = np.array(eval_sums(model, mx.array(ids), mx.array(roles)))
    chunked = np.array(eval_sums_chunked(split_model(model), mx.array(ids), mx.array(roles)))
    assert np.allclose(chunked, plain, rtol=1e-5)


def test_a_model_whose_logits_are_not_head_of_body_keeps_the_plain_path():
    class Scaled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model, self.lm_head = inner.model, inner.lm_head

        def __call__(self, x):
            return self.lm_head(self.model(x)) * 0.5  # like a logit scale

    assert split_model(Scaled(tiny_model(tied=False))) is None
    assert split_model(tiny_model(tied=False)) is not None
