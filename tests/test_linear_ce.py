"""The selected-position, vocabulary-chunked loss equals the plain one: values and gradients."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.models import llama
from mlx_lm.tuner.lora import LoRALinear
from mlx_lm.tuner.utils import linear_to_lora_layers

from engine.levers.linear_ce import (
    bucket_size,
    eval_sums_fast,
    head_matches,
    linear_cross_entropy,
    output_head,
    plw_loss_fast,
    select_targets,
)
from engine.roles import COMPLETION, PAD, PROMPT
from engine.loss import eval_sums, plw_loss

VOCAB = 300  # slices of 128 columns: 128 + 128 + 44, so the last one is ragged


def role_weights(roles: np.ndarray, plw: float) -> np.ndarray:
    return np.where(roles == COMPLETION, 1.0, np.where(roles == PROMPT, plw, 0.0)).astype(np.float32)


# ------------------------------------------------------------------ selection


def test_bucket_sizes_are_few_and_waste_little():
    sizes = {bucket_size(n) for n in range(1, 20_000)}
    assert len(sizes) < 64
    for n in range(1, 20_000, 7):
        size = bucket_size(n)
        assert size >= n and (size - n < 64 or size - n <= n / 8)
    assert bucket_size(0) == 64 and bucket_size(64) == 64 and bucket_size(65) == 128


def test_selection_keeps_the_weighted_targets_and_pads_with_weight_zero():
    roles = np.array([[PROMPT, PROMPT, PROMPT, COMPLETION, COMPLETION, PAD],
                      [PROMPT, PROMPT, COMPLETION, PAD, PAD, PAD]], dtype=np.int8)
    masked = select_targets(roles, 0.0)
    # targets are roles[:, 1:] flattened: row 0 -> 0..4, row 1 -> 5..9
    assert masked.positions[:3].tolist() == [2, 3, 6]
    assert len(masked.positions) == 64 and masked.positions.dtype == np.int32
    assert masked.weights.tolist() == [1.0] * 3 + [0.0] * 61
    assert (masked.roles[:3] == COMPLETION).all() and (masked.roles[3:] == PAD).all()
    weighted = select_targets(roles, 0.1)
    assert weighted.positions[:6].tolist() == [0, 1, 2, 3, 5, 6]
    assert weighted.weights[:6] == pytest.approx([0.1, 0.1, 1, 1, 0.1, 1]) and weighted.weights[6:].sum() == 0


# ------------------------------------------------------------------ the chunked cross entropy alone


def random_rows(n=45, dim=16, seed=0, dtype=mx.float32):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, dim)).astype(np.float32)
    w = (rng.normal(size=(VOCAB, dim)) * 0.5).astype(np.float32)
    t = rng.integers(0, VOCAB, size=n).astype(np.int32)
    t[:5] = t[5]  # repeated targets: dW rows that get several "- onehot" terms
    roles = rng.choice([PAD, PROMPT, COMPLETION], size=n).astype(np.int8)
    return mx.array(h, dtype=dtype), mx.array(w, dtype=dtype), mx.array(t), roles, (h, w, t)


def numpy_loss(h, w, t, weights) -> float:
    logits = h.astype(np.float64) @ w.astype(np.float64).T
    top = logits.max(axis=1)
    lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    ce = lse - logits[np.arange(len(t)), t]
    return float((ce * weights).sum() / weights.sum())


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("chunk_elements", [45 * 128, 45 * 256, 1 << 22])  # 3, 2 and 1 vocabulary slices
def test_chunked_loss_and_gradients_equal_the_plain_ones(plw, chunk_elements):
    h, w, t, roles, (h_np, w_np, t_np) = random_rows()
    weights = mx.array(role_weights(roles, plw))

    def plain(h, w):
        ce = nn.losses.cross_entropy(h @ w.T, t, reduction="none")
        return (ce * weights).sum() / weights.sum()

    def chunked(h, w, weight_grad=True):
        ce = linear_cross_entropy(h, w, t, chunk_elements=chunk_elements, weight_grad=weight_grad)
        return (ce * weights).sum() / weights.sum()

    loss_a, (dh_a, dw_a) = mx.value_and_grad(plain, argnums=(0, 1))(h, w)
    loss_b, (dh_b, dw_b) = mx.value_and_grad(chunked, argnums=(0, 1))(h, w)
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-5)
    assert loss_b.item() == pytest.approx(numpy_loss(h_np, w_np, t_np, role_weights(roles, plw)), rel=1e-5)
    assert np.allclose(np.array(dh_b), np.array(dh_a), rtol=1e-4, atol=1e-6)
    assert np.allclose(np.array(dw_b), np.array(dw_a), rtol=1e-4, atol=1e-6)
    # A frozen head: the same input gradient, a zero weight gradient.
    _, (dh_c, dw_c) = mx.value_and_grad(lambda h, w: chunked(h, w, weight_grad=False), argnums=(0, 1))(h, w)
    assert np.allclose(np.array(dh_c), np.array(dh_a), rtol=1e-4, atol=1e-6)
    assert dw_c.shape == w.shape and not mx.any(dw_c).item()


def test_bfloat16_head_gives_float32_cross_entropy_close_to_the_plain_one():
    h, w, t, _, _ = random_rows(dtype=mx.bfloat16)
    plain = nn.losses.cross_entropy((h @ w.T).astype(mx.float32), t, reduction="none")
    chunked = linear_cross_entropy(h, w, t, chunk_elements=45 * 128)
    assert chunked.dtype == mx.float32
    assert np.allclose(np.array(chunked), np.array(plain), rtol=1e-2, atol=1e-2)
    dh_a = mx.grad(lambda h: nn.losses.cross_entropy((h @ w.T).astype(mx.float32), t).sum())(h)
    dh_b = mx.grad(lambda h: linear_cross_entropy(h, w, t, chunk_elements=45 * 128).sum())(h)
    assert dh_b.dtype == mx.bfloat16
    assert np.allclose(np.array(dh_b.astype(mx.float32)), np.array(dh_a.astype(mx.float32)), rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------ on a model


def tiny_model(tied: bool, lora: bool = True, lora_head: bool = False) -> nn.Module:
    mx.random.seed(0)
    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=VOCAB,
                           tie_word_embeddings=tied)
    model = llama.Model(args)
    if not lora:
        return model  # full fine-tuning: the head (or tied embedding) is trained
    model.freeze()
    keys = ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"]
    linear_to_lora_layers(model, 2, {"rank": 4, "scale": 2.0, "dropout": 0.0, "keys": keys})
    if lora_head:
        model.lm_head = LoRALinear.from_base(model.lm_head, r=4)
    for _, m in model.named_modules():  # LoRA's B starts at zero; make the adapters matter
        if hasattr(m, "lora_b"):
            m.lora_b = mx.random.normal(m.lora_b.shape) * 0.1
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


def assert_same_loss_and_gradients(model, plw, chunk_elements=1 << 22, seed=0):
    ids, roles = batch(seed)
    selected = select_targets(roles, plw).arrays()
    plain = nn.value_and_grad(model, lambda m: plw_loss(m, mx.array(ids), mx.array(roles), plw))
    fast = nn.value_and_grad(model, lambda m: plw_loss_fast(m, mx.array(ids), *selected, chunk_elements=chunk_elements))
    (loss_a, aux_a), grad_a = plain(model)
    (loss_b, aux_b), grad_b = fast(model)
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-5)
    a, b = aux_a.tolist(), aux_b.tolist()
    assert b[0] == pytest.approx(a[0]) and b[3:] == pytest.approx(a[3:], rel=1e-5)  # weights, completion
    assert b[1:3] == (pytest.approx(a[1:3], rel=1e-5) if plw > 0 else [0.0, 0.0])  # PLW 0: prompt not computed
    flat_a, flat_b = dict(tree_flatten(grad_a)), dict(tree_flatten(grad_b))
    assert flat_a.keys() == flat_b.keys()
    for name in flat_a:
        assert np.allclose(np.array(flat_b[name]), np.array(flat_a[name]), rtol=1e-4, atol=1e-6), name
    return flat_a


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk_elements", [64 * 128, 1 << 22])  # 3 vocabulary slices, or 1
def test_lora_model_same_loss_and_gradients_as_the_plain_path(plw, tied, chunk_elements):
    model = tiny_model(tied)
    assert output_head(model).weight is not None and not output_head(model).trainable
    grads = assert_same_loss_and_gradients(model, plw, chunk_elements)
    assert len(grads) == 12  # 2 blocks x 3 adapted layers x (A, B)


@pytest.mark.parametrize("plw", [0.0, 1.0])
@pytest.mark.parametrize("tied", [True, False])
def test_full_fine_tuning_trains_the_head_the_same(plw, tied):
    model = tiny_model(tied, lora=False)
    assert output_head(model).trainable
    grads = assert_same_loss_and_gradients(model, plw, chunk_elements=64 * 128, seed=1)
    head = "model.embed_tokens.weight" if tied else "lm_head.weight"
    assert np.abs(np.array(grads[head])).max() > 0


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
def test_a_lora_head_takes_the_module_path_and_still_matches(plw):
    model = tiny_model(tied=False, lora_head=True)
    assert output_head(model).weight is None
    grads = assert_same_loss_and_gradients(model, plw, seed=2)
    assert "lm_head.lora_a" in grads and len(grads) == 14


def test_a_quantized_head_takes_the_module_path():
    model = tiny_model(tied=True)
    nn.quantize(model, group_size=32, bits=8, class_predicate=lambda _, m: isinstance(m, nn.Embedding))
    assert output_head(model).weight is None
    assert_same_loss_and_gradients(model, 0.1, seed=3)


def test_compiled_loss_and_gradients_equal_the_eager_ones_across_buckets():
    model = tiny_model(tied=True)
    value_and_grad = nn.value_and_grad(model, lambda *a: plw_loss_fast(model, *a, chunk_elements=64 * 128))
    compiled = mx.compile(value_and_grad, inputs=model.state, outputs=model.state)  # as the trainer does
    for seed, plw in [(0, 0.0), (1, 0.0), (2, 1.0)]:  # two batches in one bucket, then a bigger bucket
        ids, roles = batch(seed)
        args = (mx.array(ids), *select_targets(roles, plw).arrays())
        (loss_a, aux_a), grad_a = value_and_grad(*args)
        (loss_b, aux_b), grad_b = compiled(*args)
        assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-6)
        assert np.allclose(np.array(aux_b), np.array(aux_a), rtol=1e-6)
        for (name, ga), (_, gb) in zip(tree_flatten(grad_a), tree_flatten(grad_b)):
            assert np.allclose(np.array(gb), np.array(ga), rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("chunk_elements", [5 * VOCAB, 1 << 22])  # 5 rows at a time (69 rows: ragged), or all
def test_chunked_validation_equals_eval_sums(tied, chunk_elements):
    model = tiny_model(tied)
    ids, roles = batch(3)
    plain = np.array(eval_sums(model, mx.array(ids), mx.array(roles)))
    fast = np.array(eval_sums_fast(model, mx.array(ids), mx.array(roles), chunk_elements=chunk_elements))
    assert fast.shape == (3, 7) and plain[:, 4].sum() >= 0
    assert np.allclose(fast, plain, rtol=1e-5)


def test_chunked_validation_with_a_lora_head():
    model = tiny_model(tied=False, lora_head=True)
    ids, roles = batch(4)
    plain = np.array(eval_sums(model, mx.array(ids), mx.array(roles)))
    fast = np.array(eval_sums_fast(model, mx.array(ids), mx.array(roles), chunk_elements=7 * VOCAB))
    assert np.allclose(fast, plain, rtol=1e-5)


def test_head_matches_only_when_the_logits_are_head_of_body():
    class Scaled(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model, self.lm_head, self.args = inner.model, inner.lm_head, inner.args

        def __call__(self, x):
            return self.lm_head(self.model(x)) * 0.5  # like Cohere's logit scale

    assert head_matches(tiny_model(tied=True)) and head_matches(tiny_model(tied=False))
    assert not head_matches(Scaled(tiny_model(tied=False)))
    dropping = tiny_model(tied=False, lora_head=True)
    dropping.lm_head.dropout = nn.Dropout(0.5)  # random in training mode: the probe runs in eval mode
    assert head_matches(dropping) and dropping.training


def test_peak_memory_follows_the_chunk_not_positions_times_vocabulary():
    n, dim, vocab = 512, 64, 32_768
    h, w = mx.random.normal((n, dim)), mx.random.normal((vocab, dim)) * 0.1
    t, weights = mx.random.randint(0, vocab, (n,)), mx.ones((n,))
    mx.eval(h, w, t, weights)

    def peak(loss):
        mx.clear_cache()
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        mx.eval(mx.value_and_grad(loss)(h))
        return mx.get_peak_memory() - base

    logits_bytes = n * vocab * 4  # one float32 copy of the full logits: 64 MB
    plain = peak(lambda h: (nn.losses.cross_entropy(h @ w.T, t, reduction="none") * weights).sum())
    chunked = peak(lambda h: (linear_cross_entropy(h, w, t, chunk_elements=1 << 16, weight_grad=False) * weights).sum())
    assert plain > logits_bytes and chunked < logits_bytes / 8  # measured: 4 MB (256 KB chunks)
