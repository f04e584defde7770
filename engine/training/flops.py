"""Model FLOPs per trained token and the machine's measured matmul peak: the parts of MFU.

MFU (model FLOPs utilisation) = FLOPs per token x tokens per second / peak FLOP/s. It says how
close a run is to what the machine can do, which tokens/s alone cannot: 500 tokens/s is fast for
a 1B model and slow for a 10M one. Both parts are estimates made the standard way, so that two
trainers (or two runs) measured with them compare fairly:

* FLOPs count only the matmuls the model needs (the "useful" work): padding, softmax, norms,
  the optimizer and any recomputation are left out, so a trainer that wastes compute gets a
  lower MFU, not a higher count.
* The peak is measured, not taken from a spec sheet: the best rate of a square float32
  ``mx.matmul`` on this machine, with this MLX build and BLAS. It is cached per machine, so the
  app can show MFU without spending a second on it each time.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear

from engine.files import atomic_write_json, cache_root

PEAK_CACHE_FILE = "matmul_peak.json"


def training_flops_per_token(model: nn.Module, seq_len: float) -> float:
    """Matmul FLOPs of one training step, per real token, for ``model`` as set up for training.

    The model is read as it will train (after ``setup_trainable``): LoRA/DoRA layers and which
    weights are frozen tell what trains, so LoRA, DoRA and full fine-tuning of all or only the
    last ``num_layers`` blocks need no separate flag. Works for mlx-lm's dense models (blocks in
    ``model.layers``, ``nn.Linear`` or ``nn.QuantizedLinear`` matmuls, the output head as the
    only matmul outside the blocks, or the tied embedding when there is none); mixture-of-experts
    layers are not counted.

    With N the weights of the block matmuls (a LoRA layer: its base plus ``r*(in+out)``), H = D*V
    the head (counted at every position, as mlx-lm computes it, so skipping logits never counts
    as fewer useful FLOPs), S = ``seq_len`` and d the attention width (heads x head_dim) over
    n_layers blocks:

        forward         2N + 2H + 4*S*d*n_layers           (scores QK^T and values AV: 2*S*d each)
        input grads     2N + 2H + 8*S*d*n_layers           (attention: grads of both operands)
        weight grads    2 x (trained matmul weights)       (LoRA: the adapters only, tiny)

    so LoRA costs about 4N per token (2N forward, 2N backward input grads) and full fine-tuning
    about 6N, the usual rules. Blocks below the lowest one that trains need no backward pass, so
    they only count forward (MLX's autodiff skips them too; the lowest trained block's input
    grads are counted in full, a slight overcount). Attention is counted as if
    unmasked (the PaLM convention), at S = the token-weighted mean sequence length
    (sum L^2 / sum L over the examples): each token attends over its own sequence.
    Per-step costs (DoRA's weight norms, the optimizer) and embedding look-ups are not matmuls
    per token and are left out.
    """
    blocks = list(model.layers)
    inside = {id(m) for block in blocks for _, m in block.named_modules()}
    outside = [m for _, m in model.named_modules() if id(m) not in inside]
    embedding = next(m for m in outside if isinstance(m, (nn.Embedding, nn.QuantizedEmbedding)))
    heads = [m for m in outside if isinstance(m, (nn.Linear, nn.QuantizedLinear))] or [embedding]

    per_block = [_matmul_flops(m for _, m in block.named_modules()) for block in blocks]  # (forward, weight grads)
    head, head_weight_grads = _matmul_flops(heads)
    attention = 4 * seq_len * _attention_width(model)

    trained = [i for i, block in enumerate(blocks) if tree_flatten(block.trainable_parameters())]
    first = 0 if _trains(embedding) else min(trained, default=len(blocks))
    with_backward = len(blocks) - first  # blocks the gradient flows through

    forward = sum(f for f, _ in per_block) + attention * len(blocks) + head
    input_grads = sum(f for f, _ in per_block[first:]) + 2 * attention * with_backward
    input_grads += head if with_backward else 0.0
    weight_grads = sum(w for _, w in per_block) + head_weight_grads
    return forward + input_grads + weight_grads


def _matmul_flops(modules) -> tuple[float, float]:
    """(forward, weight-grad) FLOPs per token of the matmuls in ``modules``."""
    totals = [_layer_flops(m) for m in modules]
    return sum(f for f, _ in totals), sum(w for _, w in totals)


def _layer_flops(layer: nn.Module) -> tuple[float, float]:
    """One layer's own matmuls: a dense weight, or a LoRA/DoRA layer's two adapter matrices.

    A LoRA layer's base weight is its child ``linear``, counted when the walk reaches it.
    """
    if isinstance(layer, (LoRALinear, DoRALinear)):
        n = layer.lora_a.size + layer.lora_b.size
        return 2.0 * n, 2.0 * n if _trains(layer, "lora_a") else 0.0
    if isinstance(layer, (nn.Linear, nn.QuantizedLinear, nn.Embedding, nn.QuantizedEmbedding)):
        rows, cols = layer.weight.shape
        if isinstance(layer, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            cols = cols * 32 // layer.bits  # packed 32-bit words back to values
        return 2.0 * rows * cols, 2.0 * rows * cols if _trains(layer) else 0.0
    return 0.0, 0.0


def _trains(layer: nn.Module, name: str = "weight") -> bool:
    return name in layer.trainable_parameters()


def _attention_width(model: nn.Module) -> int:
    """Query heads x head size, from the model's config (the names mlx-lm's models share)."""
    args = model.args
    heads = args.num_attention_heads
    return heads * (getattr(args, "head_dim", None) or args.hidden_size // heads)


# --------------------------------------------------------------------------- the matmul peak


def measure_matmul_peak(seconds: float = 1.0, max_size: int = 2048) -> float:
    """Best FLOP/s of a square float32 ``mx.matmul`` on the default device within ``seconds``.

    Sizes double from 256 while the next one still fits the time left twice over, up to
    ``max_size``, then the largest one repeats; the best rate of all runs is kept, since a
    shared machine only ever slows a run down. Growing the size keeps the call short where
    matmuls are slow (the Linux wheel's reference BLAS takes seconds for one 2048^2 product)
    and measures near-peak sizes where they are fast. float32 is what tuner computes in on the
    CPU backend; on Metal, where a model may train in bfloat16, MFU is against the float32 peak.
    """
    deadline = time.perf_counter() + seconds
    best, size = 0.0, 256
    while True:
        a, b = mx.random.normal((size, size)), mx.random.normal((size, size))
        mx.eval(a, b)
        start = time.perf_counter()
        mx.eval(a @ b)
        took = time.perf_counter() - start
        best = max(best, 2.0 * size**3 / took)
        left = deadline - time.perf_counter()
        if size < max_size and left > 16 * took:  # 8x the work, two runs of it
            size *= 2
        elif left < took:
            return best


def machine_key() -> str:
    """What the peak depends on: the machine, the MLX version and device, and a preloaded BLAS."""
    return " | ".join([
        platform.node(), platform.machine(), f"{os.cpu_count()} cpus", f"mlx {mx.__version__}",
        str(mx.default_device()), os.environ.get("LD_PRELOAD", ""),
    ])


def matmul_peak(cache_dir: Path | None = None, refresh: bool = False) -> float:
    """This machine's matmul peak from the cache, measured (and cached) when missing or on ``refresh``.

    The cache, ``matmul_peak.json`` under ``cache_dir`` (default ``$TUNER_CACHE`` or
    ``~/.cache/tuner``), maps :func:`machine_key` to FLOP/s, so one file serves every machine
    sharing a home folder and every BLAS set-up. A peak measured while the machine was busy is
    low and makes MFU look high: ``python bench/matmul_peak.py`` measures again and replaces it.
    """
    path = Path(cache_dir or cache_root()) / PEAK_CACHE_FILE
    key = machine_key()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if not refresh and isinstance(cache.get(key), (int, float)):
        return float(cache[key])
    cache[key] = measure_matmul_peak()
    atomic_write_json(path, cache)
    return cache[key]
