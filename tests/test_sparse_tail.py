"""The sparse last block: same hidden states, loss and gradients as the full block, and only
where its form is the one written out."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

import engine.levers.sparse_tail as sparse_tail
from engine.levers.linear_ce import plw_loss_fast, select_targets
from engine.levers.sparse_tail import hidden_at, sparse_last_block
from tests.switched_models import count_calls, demo_lora, load_demo, lora, random_qwen3


def batch():
    """Four examples of 24 tokens; three end after 6, so that even at PLW > 0 the selected
    targets (38 real ones, bucketed by 8 to 40) are under half of the 92 positions."""
    rng = np.random.default_rng(3)
    ids = rng.integers(3, 500, (4, 24)).astype(np.int32)
    roles = np.ones((4, 24), np.int8)
    roles[:, 4:] = 2
    roles[1:, 6:] = 0
    return ids, roles


@pytest.fixture
def attend_calls(monkeypatch):
    """How many times the sparse attention ran: proves the sparse path was really taken."""
    return count_calls(monkeypatch, sparse_tail, "_attend")


def test_hidden_states_at_the_rows_match_the_full_body(demo_model_dir, attend_calls):
    model = lora(load_demo(demo_model_dir))
    ids = mx.array(batch()[0][:, :-1])
    rows = mx.array([0, 5, 22, 23, 40, 69, 91, 91])
    full = np.array(model.model(ids)).reshape(-1, model.args.hidden_size)[np.array(rows)]
    assert sparse_last_block(model)
    assert len(attend_calls) == 1  # the probe, through the last block alone
    attend_calls.clear()
    np.testing.assert_allclose(np.array(hidden_at(model, ids, rows)), full, rtol=1e-4, atol=1e-5)
    assert len(attend_calls) == 1
    # more rows than half the positions: the full body, then the rows
    many = mx.arange(60)
    np.testing.assert_allclose(np.array(hidden_at(model, ids, many)),
                               np.array(model.model(ids)).reshape(-1, model.args.hidden_size)[:60], rtol=1e-5)
    assert len(attend_calls) == 1


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("fast_paths", [False, True])
def test_loss_and_gradients_match_the_full_block(demo_model_dir, attend_calls, plw, fast_paths):
    plain = lora(load_demo(demo_model_dir))
    sparse = demo_lora(demo_model_dir, fast_paths)
    assert sparse_last_block(sparse)
    attend_calls.clear()
    ids, roles = batch()
    selection = select_targets(roles, plw, minimum=8)
    assert 2 * len(selection.positions) <= ids[:, :-1].size

    def loss(m):
        return plw_loss_fast(m, mx.array(ids), *selection.arrays())

    (lp, aux_p), gp = nn.value_and_grad(plain, loss)(plain)
    (ls, aux_s), gs = nn.value_and_grad(sparse, loss)(sparse)
    assert len(attend_calls) == 1
    assert ls.item() == pytest.approx(lp.item(), rel=1e-5)
    np.testing.assert_allclose(np.array(aux_s), np.array(aux_p), rtol=1e-5, atol=1e-6)
    flat_p, flat_s = dict(tree_flatten(gp)), dict(tree_flatten(gs))
    assert sorted(flat_s) == sorted(flat_p)
    last = f"layers.{len(plain.layers) - 1}."
    assert max(mx.abs(v).max().item() for k, v in flat_p.items() if last in k and "mlp" in k) > 0
    for k in flat_p:
        np.testing.assert_allclose(np.array(flat_s[k]), np.array(flat_p[k]), rtol=1e-3, atol=1e-6, err_msg=k)


def test_compiled_across_both_paths(demo_model_dir):
    """Under mx.compile each shape picks its path once; both agree with the plain model."""
    plain, sparse = lora(load_demo(demo_model_dir)), lora(load_demo(demo_model_dir))
    assert sparse_last_block(sparse)
    ids, roles = batch()

    def loss(m):
        return lambda *inputs: plw_loss_fast(m, *inputs)[0]

    step = mx.compile(nn.value_and_grad(sparse, loss(sparse)), inputs=sparse.state, outputs=sparse.state)
    for plw, minimum in ((0.0, 8), (1.0, 8), (1.0, 64)):  # sparse, sparse, full (64 > half)
        arrays = select_targets(roles, plw, minimum=minimum).arrays()
        value, grads = step(mx.array(ids), *arrays)
        expected = loss(plain)(mx.array(ids), *arrays)
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)
        assert all(np.isfinite(np.array(g)).all() for _, g in tree_flatten(grads))


def test_qwen3_blocks_with_per_head_norms_are_switched():
    model = random_qwen3(2)
    ids = mx.array(np.random.default_rng(0).integers(0, 128, (2, 12)).astype(np.int32))
    rows = mx.array([3, 11, 12, 20])
    full = np.array(model.model(ids)).reshape(-1, 64)[np.array(rows)]
    assert sparse_last_block(model)
    np.testing.assert_allclose(np.array(hidden_at(model, ids, rows)), full, rtol=1e-4, atol=1e-5)


def test_a_block_of_another_form_keeps_its_own_call(demo_model_dir):
    model = load_demo(demo_model_dir)
    last = model.model.layers[-1]
    own = type(last)

    class Shifted(own):  # not the written-out form (a scale would vanish in the final RMSNorm)
        def __call__(self, x, mask=None, cache=None):
            return super().__call__(x, mask, cache) + 1.0

    last.__class__ = Shifted
    assert not sparse_last_block(model)
    assert type(last) is Shifted
    ids = mx.array(batch()[0][:, :-1])
    rows = mx.array([1, 2, 3])
    np.testing.assert_allclose(np.array(hidden_at(model, ids, rows)),
                               np.array(model.model(ids)).reshape(-1, model.args.hidden_size)[[1, 2, 3]])


@pytest.mark.parametrize("minimum", [8, 64])  # the sparse path, and the full one (64 rows > half)
def test_gradient_checkpointing_gives_the_same_gradients(demo_model_dir, minimum):
    from mlx_lm.tuner.trainer import grad_checkpoint

    plain, sparse = lora(load_demo(demo_model_dir)), lora(load_demo(demo_model_dir))

    class Block(type(sparse.layers[0])):  # patched by grad_checkpoint here, not mlx-lm's class
        pass

    for layer in sparse.layers:
        layer.__class__ = Block
    grad_checkpoint(sparse.layers[0])
    assert sparse_last_block(sparse)
    ids, roles = batch()
    arrays = select_targets(roles, 0.0, minimum=minimum).arrays()

    def loss(m):
        return plw_loss_fast(m, mx.array(ids), *arrays)[0]

    lp, gp = nn.value_and_grad(plain, loss)(plain)
    ls, gs = nn.value_and_grad(sparse, loss)(sparse)
    assert ls.item() == pytest.approx(lp.item(), rel=1e-5)
    flat_s = dict(tree_flatten(gs))
    for k, v in tree_flatten(gp):
        np.testing.assert_allclose(np.array(flat_s[k]), np.array(v), rtol=1e-3, atol=1e-6, err_msg=k)


def test_a_last_block_with_a_sliding_window_keeps_its_own_call(demo_model_dir):
    """A window longer than the probe would pass it; the mark is refused before the probe."""
    model = load_demo(demo_model_dir)
    model.model.layers[-1].self_attn.sliding_window = 4096
    assert not sparse_last_block(model)
    model.model.layers[-1].self_attn.sliding_window = None  # as mlx-lm sets it for full attention
    assert sparse_last_block(model)
