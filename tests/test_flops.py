"""FLOPs per token match a hand count on a tiny Llama; the matmul peak is measured and cached."""

import json

import mlx.nn as nn
import pytest
from mlx_lm.models.llama import Model, ModelArgs
from mlx_lm.tuner.utils import linear_to_lora_layers

from engine.training import flops
from engine.training.flops import matmul_peak, measure_matmul_peak, training_flops_per_token

D, FF, V, LAYERS, HEADS, KV_HEADS = 32, 64, 50, 2, 4, 2  # dims that 4-bit quantization accepts
KV = KV_HEADS * D // HEADS  # width of k and v: 2 kv heads of 8
S = 10.0  # mean sequence length
RANK = 4

# Hand count: per block q and o are D x D, k and v D x KV, gate and up D x FF, down FF x D.
BLOCK = 2 * D * D + 2 * D * KV + 3 * D * FF  # weights in matmuls
ADAPTERS = RANK * (2 * (D + D) + 2 * (D + KV) + 3 * (D + FF))  # r*(in+out), all 7 layers
HEAD = D * V
ATTENTION = 4 * S * D  # per block, forward: scores and values over S positions, heads*head_dim = D


def tiny_llama(tied: bool) -> Model:
    return Model(ModelArgs(
        model_type="llama", hidden_size=D, num_hidden_layers=LAYERS, intermediate_size=FF,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rms_norm_eps=1e-5, vocab_size=V,
        tie_word_embeddings=tied,
    ))


def with_lora(model: Model, num_layers: int = -1) -> Model:
    model.freeze()
    linear_to_lora_layers(model, num_layers, {"rank": RANK, "scale": 1.0, "dropout": 0.0})
    return model


def full_blocks(model: Model) -> Model:
    """tuner's full fine-tuning: blocks train, embedding and head stay frozen."""
    model.freeze()
    for layer in model.layers:
        layer.unfreeze()
    return model


@pytest.mark.parametrize("tied", [True, False])
def test_lora_is_forward_plus_input_grads_plus_adapter_grads(tied):
    n = LAYERS * (BLOCK + ADAPTERS)
    forward = 2 * n + 2 * HEAD + LAYERS * ATTENTION
    input_grads = 2 * n + 2 * HEAD + LAYERS * 2 * ATTENTION
    weight_grads = 2 * LAYERS * ADAPTERS
    got = training_flops_per_token(with_lora(tiny_llama(tied)), S)
    assert got == pytest.approx(forward + input_grads + weight_grads)


@pytest.mark.parametrize("tied", [True, False])
def test_full_fine_tuning_adds_weight_grads_of_every_block(tied):
    n = LAYERS * BLOCK
    expected = (2 * n + 2 * HEAD + LAYERS * ATTENTION) + (2 * n + 2 * HEAD + LAYERS * 2 * ATTENTION) + 2 * n
    assert training_flops_per_token(full_blocks(tiny_llama(tied)), S) == pytest.approx(expected)


@pytest.mark.parametrize("tied", [True, False])
def test_a_trained_head_or_embedding_adds_its_weight_grads(tied):
    model = tiny_llama(tied)
    model.unfreeze()  # everything, embedding (and so the tied head) included
    n = LAYERS * BLOCK
    expected = (2 * n + 2 * HEAD + LAYERS * ATTENTION) + (2 * n + 2 * HEAD + LAYERS * 2 * ATTENTION) + 2 * (n + HEAD)
    assert training_flops_per_token(model, S) == pytest.approx(expected)


def test_frozen_blocks_below_the_adapters_only_run_forward():
    model = with_lora(tiny_llama(True), num_layers=1)  # adapters in the last block only
    forward = 2 * (LAYERS * BLOCK + ADAPTERS) + 2 * HEAD + LAYERS * ATTENTION
    input_grads = 2 * (BLOCK + ADAPTERS) + 2 * HEAD + 2 * ATTENTION
    assert training_flops_per_token(model, S) == pytest.approx(forward + input_grads + 2 * ADAPTERS)


def test_quantized_layers_count_their_unpacked_size():
    plain = with_lora(tiny_llama(True))
    quantized = tiny_llama(True)
    nn.quantize(quantized, group_size=32, bits=4)
    assert isinstance(quantized.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert training_flops_per_token(with_lora(quantized), S) == pytest.approx(training_flops_per_token(plain, S))


def test_measured_peak_is_plausible():
    peak = measure_matmul_peak(seconds=0.3)
    assert 1e8 < peak < 1e15  # between a slow reference BLAS and a large GPU


def test_peak_cache_round_trips(tmp_path, monkeypatch):
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda: 1.5e10)
    assert matmul_peak(tmp_path) == 1.5e10
    cached = json.loads((tmp_path / flops.PEAK_CACHE_FILE).read_text())
    assert cached == {flops.machine_key(): 1.5e10}

    monkeypatch.setattr(flops, "measure_matmul_peak", lambda: pytest.fail("measured again"))
    assert matmul_peak(tmp_path) == 1.5e10  # from the cache

    monkeypatch.setattr(flops, "measure_matmul_peak", lambda: 2.5e10)
    assert matmul_peak(tmp_path, refresh=True) == 2.5e10
    assert json.loads((tmp_path / flops.PEAK_CACHE_FILE).read_text()) == {flops.machine_key(): 2.5e10}


def test_peak_cache_keeps_other_machines(tmp_path, monkeypatch):
    (tmp_path / flops.PEAK_CACHE_FILE).write_text(json.dumps({"another machine": 1.0}))
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda: 3e10)
    matmul_peak(tmp_path)
    assert json.loads((tmp_path / flops.PEAK_CACHE_FILE).read_text()) == {"another machine": 1.0,
                                                                         flops.machine_key(): 3e10}


def test_unreadable_cache_is_measured_again(tmp_path, monkeypatch):
    (tmp_path / flops.PEAK_CACHE_FILE).write_text("not json")
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda: 4e10)
    assert matmul_peak(tmp_path) == 4e10
