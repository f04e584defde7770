"""The shared prompt prefix computed once per batch: the body's own hidden states, the same loss
and gradients at PLW 0, 0.1 and 1, a run that trains as one without it, and only where its form
is the one written out."""

import dataclasses
import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

import engine.levers.linear_ce as linear_ce
import engine.levers.shared_prefix as shared_prefix
from engine import events as ev
from engine.config import load_stages
from engine.levers.linear_ce import plw_loss_fast, select_targets
from engine.levers.shared_prefix import common_prefix, hidden_at, shares_prefix
from engine.levers.sparse_tail import sparse_last_block
from engine.training.chain import run_chain
from engine.training.distributed import World
from engine.training.evaluator import Evaluator
from engine.training.loss_path import choose_loss
from engine.training.prepare import prepare_stage
from tests.conftest import planned, write_config
from tests.switched_models import count_calls, demo_lora, load_demo, lora, random_qwen3

PREFIX = 5


def batch(rows: int = 4, width: int = 24):
    """Rows opening with the same PREFIX tokens, completions from position 14, two rows ending early
    (padding); at PLW 0 the selected targets are under half of the positions."""
    rng = np.random.default_rng(4)
    ids = rng.integers(3, 500, (rows, width)).astype(np.int32)
    ids[:, :PREFIX] = ids[0, :PREFIX]
    roles = np.ones((rows, width), np.int8)
    roles[:, 14:] = 2
    roles[1:3, 18:] = 0
    return ids, roles


def test_common_prefix_leaves_every_sequence_two_tokens_of_its_own():
    seqs = [np.array(s) for s in ([1, 2, 3, 4, 5, 6], [1, 2, 3, 9, 9, 9, 9], [1, 2, 3, 4, 7, 8])]
    assert common_prefix(seqs) == 3
    assert common_prefix([np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4, 5])]) == 2  # shortest has 4
    assert common_prefix([np.arange(6)]) == 4
    assert common_prefix([np.array([1, 2, 3]), np.array([2, 2, 3])]) == 0
    assert common_prefix([]) == 0


@pytest.fixture
def last_block_calls(monkeypatch):
    """How many times the sparse last block ran: proves that path was really taken."""
    return count_calls(monkeypatch, shared_prefix, "_last_block_at")


@pytest.mark.parametrize("sparse_last", [False, True])
def test_hidden_states_at_the_rows_match_the_body(demo_model_dir, last_block_calls, sparse_last):
    model = lora(load_demo(demo_model_dir))
    if sparse_last:
        assert sparse_last_block(model)
    assert shares_prefix(model)
    probed = len(last_block_calls)
    assert probed == (1 if sparse_last else 0)  # the probe's few rows
    ids = mx.array(batch()[0][:, :-1])
    full = np.array(model.model(ids)).reshape(-1, model.args.hidden_size)
    few = mx.array([0, 4, 5, 22, 23, 40, 69, 91])  # in the prefix, at its end, after it, in other rows
    np.testing.assert_allclose(np.array(hidden_at(model, ids, few, PREFIX)), full[np.array(few)], rtol=1e-4, atol=1e-5)
    assert len(last_block_calls) == probed + (1 if sparse_last else 0)
    every = mx.arange(ids.size)  # more rows than half: the full last block
    np.testing.assert_allclose(np.array(hidden_at(model, ids, every, PREFIX)), full, rtol=1e-4, atol=1e-5)
    assert len(last_block_calls) == probed + (1 if sparse_last else 0)


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("fast_paths", [False, True])
def test_loss_and_gradients_match_the_rows_computed_apart(demo_model_dir, plw, fast_paths):
    plain = lora(load_demo(demo_model_dir))
    shared = demo_lora(demo_model_dir, fast_paths)
    if plw == 0:
        assert sparse_last_block(shared)
    assert shares_prefix(shared)
    ids, roles = batch()
    arrays = select_targets(roles, plw, minimum=8).arrays()

    def loss(prefix):
        return lambda m: plw_loss_fast(m, mx.array(ids), *arrays, shared_prefix=prefix)

    (lp, aux_p), gp = nn.value_and_grad(plain, loss(0))(plain)
    (ls, aux_s), gs = nn.value_and_grad(shared, loss(PREFIX))(shared)
    assert ls.item() == pytest.approx(lp.item(), rel=1e-5)
    np.testing.assert_allclose(np.array(aux_s), np.array(aux_p), rtol=1e-5, atol=1e-6)
    flat_p, flat_s = dict(tree_flatten(gp)), dict(tree_flatten(gs))
    assert sorted(flat_s) == sorted(flat_p)
    assert max(mx.abs(v).max().item() for k, v in flat_p.items() if "layers.0." in k and "lora_a" in k) > 0
    for k in flat_p:
        np.testing.assert_allclose(np.array(flat_s[k]), np.array(flat_p[k]), rtol=1e-3, atol=1e-6, err_msg=k)


def test_compiled_over_two_widths(demo_model_dir):
    model = lora(load_demo(demo_model_dir))
    assert sparse_last_block(model) and shares_prefix(model)

    def loss(prefix):
        return lambda *inputs: plw_loss_fast(model, *inputs, shared_prefix=prefix)[0]

    step = mx.compile(loss(PREFIX), inputs=model.state)
    for width in (24, 32):
        ids, roles = batch(width=width)
        arrays = select_targets(roles, 0.0, minimum=8).arrays()
        assert step(mx.array(ids), *arrays).item() == pytest.approx(loss(0)(mx.array(ids), *arrays).item(), rel=1e-5)


def test_qwen3_blocks_with_per_head_norms_share_the_prefix():
    model = random_qwen3(3)
    ids = np.random.default_rng(0).integers(0, 128, (2, 12)).astype(np.int32)
    ids[1, :4] = ids[0, :4]
    rows = mx.arange(24)
    assert shares_prefix(model)
    np.testing.assert_allclose(np.array(hidden_at(model, mx.array(ids), rows, 4)),
                               np.array(model.model(mx.array(ids))).reshape(-1, 64), rtol=1e-4, atol=1e-5)


def test_a_body_of_another_form_is_not_switched(demo_model_dir):
    model = load_demo(demo_model_dir)
    body = model.model
    own = type(body)

    class Scaled(own):  # scales its embeddings, as Gemma's body does
        def __call__(self, inputs, cache=None, input_embeddings=None):
            return super().__call__(inputs, cache, self.embed_tokens(inputs) * 3.0)

    body.__class__ = Scaled
    assert not shares_prefix(model)
    body.__class__ = own
    assert shares_prefix(model)
    body.layers[0].use_sliding = True  # a sliding-window block: not written out here
    assert not shares_prefix(model)


@pytest.mark.parametrize("change", ["window in layer_types", "marked attention", "length-dependent rope",
                                    "a block of another kind"])
def test_attention_that_is_not_plain_causal_everywhere_is_not_switched(demo_model_dir, change):
    """The probe is too short to see a window and runs through the last two blocks only, so these
    are refused before it, however the model marks them."""
    model = load_demo(demo_model_dir)
    assert shares_prefix(model)
    first = model.model.layers[0]
    if change == "window in layer_types":
        model.model.args.layer_types = ["sliding_attention"] + ["full_attention"] * (len(model.layers) - 1)
    elif change == "marked attention":
        first.self_attn.is_sliding = True
    elif change == "length-dependent rope":
        class ScaledByLength(type(first.self_attn.rope)):
            pass

        first.self_attn.rope.__class__ = ScaledByLength
    else:
        class OtherMLP(type(first.mlp)):
            pass

        first.mlp.__class__ = OtherMLP
    assert not shares_prefix(model)


def chats_with_a_system_message(folder):
    """Seven chats opening with the same system message; batch 4 gives a 4-row and a 3-row step."""
    folder.mkdir()
    system = {"role": "system", "content": "You are a careful counting assistant who answers briefly."}
    chats = [{"messages": [system, {"role": "user", "content": f"Count to {n}."},
                           {"role": "assistant", "content": " ".join(str(i) for i in range(1, n + 1))}]}
             for n in range(2, 9)]
    (folder / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return folder


@pytest.mark.parametrize("plw", [0.0, 0.1])
def test_a_run_sharing_the_prefix_trains_as_one_without(tmp_path, plw):
    data = chats_with_a_system_message(tmp_path / "chats")
    runs = {}
    for share in (False, True):
        folder = tmp_path / f"share-{share}"
        folder.mkdir()
        seen = []
        config = write_config(folder, data=str(data), iters=None, epochs=1, batch_size=4, val_batches=0,
                              steps_per_report=1, shared_prefix=share, prompt_loss_weight=plw,
                              optimizer="sgd", learning_rate=0.5)  # updates linear in the gradients
        [result] = run_chain(load_stages([config]), seen.append)
        runs[share] = seen, mx.load(str(result.adapter_dir / "adapters.safetensors"))
    (seen_plain, adapters_plain), (seen_shared, adapters_shared) = runs[False], runs[True]
    assert planned(seen_plain, "shared prefix").reason == "shared_prefix: false"
    assert planned(seen_shared, "shared prefix").on
    assert int(planned(seen_shared, "shared prefix").reason.split()[2]) >= 10  # "the first N tokens": the system message and more
    losses = [[e.loss for e in seen if isinstance(e, ev.TrainReport)] for seen in (seen_plain, seen_shared)]
    assert len(losses[0]) == 2
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert max(mx.abs(v).max().item() for k, v in adapters_plain.items() if "lora_b" in k) > 1e-3  # B starts at 0
    for key, value in adapters_plain.items():
        np.testing.assert_allclose(np.array(adapters_shared[key]), np.array(value), rtol=1e-3, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("keys", [{"lora_parameters": {"rank": 8, "scale": 2.0, "dropout": 0.1}},
                                  {"grad_checkpoint": True}, {"sparse_logits": False}, {"batch_size": 1},
                                  {"shared_prefix": False}])
def test_where_the_prefix_is_not_shared(tmp_path, keys):
    data = chats_with_a_system_message(tmp_path / "chats")
    prepared = prepare_stage(load_stages([write_config(tmp_path, data=str(data), val_batches=0, **keys)])[0], World())
    assert prepared.levers.shared_prefix == 0


def test_the_prefix_is_shared_by_default(tmp_path):
    data = chats_with_a_system_message(tmp_path / "chats")
    prepared = prepare_stage(load_stages([write_config(tmp_path, data=str(data), val_batches=0)])[0], World())
    prefix, train = prepared.levers.shared_prefix, prepared.data.train
    lengths = [len(e) for e in train]
    assert shared_prefix.MIN_SHARED <= prefix <= min(lengths) - 2
    first = train[0].ids[:prefix]
    assert all((e.ids[:prefix] == first).all() for e in train)


def test_validation_shares_the_prefix_and_scores_as_without(tmp_path, monkeypatch):
    data = chats_with_a_system_message(tmp_path / "chats")
    (data / "valid.jsonl").write_text((data / "train.jsonl").read_text())
    stage = load_stages([write_config(tmp_path, data=str(data), batch_size=4)])[0]
    prepared, world = prepare_stage(stage, World()), World()

    def evaluator(levers):
        loss = choose_loss(stage.config.plw, world.size, levers)
        return Evaluator(dataclasses.replace(prepared, loss=loss), world, lambda e: None, lambda step, reason: None, None)

    calls = count_calls(monkeypatch, linear_ce, "hidden_at")
    _, shared_rows = evaluator(prepared.levers).evaluate(prepared.data.valid, -1)
    assert len(calls) == 2  # traced once for each of the two batch shapes (4 rows, then 3)
    apart = dataclasses.replace(prepared.levers, can_share_prefix=False)  # scored again with every row computed apart
    _, plain_rows = evaluator(apart).evaluate(prepared.data.valid, -1)
    assert len(calls) == 2
    assert len(shared_rows) == len(plain_rows) == 7
    for shared, plain in zip(shared_rows, plain_rows):
        assert shared["origin"] == plain["origin"]
        for key in ("prompt_loss", "completion_loss", "completion_accuracy"):
            assert shared[key] == pytest.approx(plain[key], rel=1e-5), key
