"""Peak MLX memory and time of one training step's loss and gradients: plain vs fast PLW loss.

On a Qwen-size vocabulary (151,936 ids) the [positions, vocabulary] logits, their softmax and
their gradient are most of a training step's memory; :mod:`engine.levers.linear_ce` never holds them.
This measures ``value_and_grad`` (compiled, as the trainer runs it) of :func:`engine.loss.plw_loss`
and :func:`engine.levers.linear_ce.plw_loss_fast` on a random-weight Llama with that vocabulary, one
sequence of 2,048 tokens whose last 2% are the completion, at PLW 0 and 1, plus the validation
sums (no gradient) of both. Memory is MLX's peak above what the model and batch already hold.

    python bench/linear_ce_memory.py                # LoRA on the blocks, frozen tied head (~1-2 min, 2 cores)
    python bench/linear_ce_memory.py --full         # full fine-tuning: the head gets a gradient too
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: the engine lives beside bench/
    sys.path.insert(0, str(REPO))

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402
from mlx_lm.models import llama  # noqa: E402
from mlx_lm.tuner.utils import linear_to_lora_layers  # noqa: E402

from engine.levers.linear_ce import eval_sums_fast, plw_loss_fast, select_targets  # noqa: E402
from engine.roles import COMPLETION, PROMPT  # noqa: E402
from engine.loss import eval_sums, plw_loss  # noqa: E402


def build_model(vocab: int, hidden: int, layers: int, full: bool) -> nn.Module:
    mx.random.seed(0)
    args = llama.ModelArgs(model_type="llama", hidden_size=hidden, num_hidden_layers=layers,
                           intermediate_size=hidden * 3, num_attention_heads=4, num_key_value_heads=2,
                           rms_norm_eps=1e-6, vocab_size=vocab, tie_word_embeddings=True)
    model = llama.Model(args)
    if not full:
        model.freeze()
        linear_to_lora_layers(model, layers, {"rank": 8, "scale": 2.0, "dropout": 0.0,
                                              "keys": ["self_attn.q_proj", "self_attn.v_proj"]})
    mx.eval(model.parameters())
    return model


def measure(fn, *args) -> tuple[float, float]:
    """(GB above the memory already in use, seconds) of one evaluated call."""
    mx.clear_cache()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    tic = time.perf_counter()
    mx.eval(fn(*args))
    seconds = time.perf_counter() - tic
    return (mx.get_peak_memory() - base) / 1e9, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--completion", type=float, default=0.02, help="share of the tokens in the completion")
    parser.add_argument("--full", action="store_true", help="train every weight, the head included")
    args = parser.parse_args()

    model = build_model(args.vocab, args.hidden, args.layers, args.full)
    rng = np.random.default_rng(0)
    ids_np = rng.integers(1, args.vocab, size=(1, args.seq)).astype(np.int32)
    roles_np = np.full((1, args.seq), PROMPT, dtype=np.int8)
    roles_np[0, int(args.seq * (1 - args.completion)) :] = COMPLETION
    ids, roles = mx.array(ids_np), mx.array(roles_np)

    print(f"vocab {args.vocab}, hidden {args.hidden}, {args.layers} blocks, 1 x {args.seq} tokens, "
          f"{args.completion:.0%} completion, {'full fine-tuning' if args.full else 'LoRA, frozen head'}")
    print(f"{'':24} {'PLW':>4} {'peak GB':>8} {'seconds':>8}")
    # The floor: the blocks' own activations and gradients (attention scores, mostly), no head at all.
    body = mx.compile(nn.value_and_grad(model, lambda: model.model(ids).sum()), inputs=model.state, outputs=model.state)
    gb, seconds = measure(body)
    print(f"{'body alone (no head)':24} {'-':>4} {gb:8.2f} {seconds:8.1f}", flush=True)
    for plw in (0.0, 1.0):
        selected = select_targets(roles_np, plw).arrays()
        steps = {
            "plw_loss": (lambda p=plw: plw_loss(model, ids, roles, p), ()),
            f"plw_loss_fast (K={selected[0].size})": (lambda *s: plw_loss_fast(model, ids, *s), selected),
        }
        for name, (loss, inputs) in steps.items():
            step = mx.compile(nn.value_and_grad(model, loss), inputs=model.state, outputs=model.state)
            gb, seconds = measure(step, *inputs)
            print(f"{name:24} {plw:4.0f} {gb:8.2f} {seconds:8.1f}", flush=True)
    for name, sums in [("eval_sums", eval_sums), ("eval_sums_fast", eval_sums_fast)]:
        gb, seconds = measure(sums, model, ids, roles)
        print(f"{name:24} {'-':>4} {gb:8.2f} {seconds:8.1f}", flush=True)


if __name__ == "__main__":
    main()
