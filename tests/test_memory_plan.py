"""The memory planner: its arithmetic by hand, the fixes it names, what `tuner validate` and
`tuner train` do with it, and one prediction against MLX's measured peak."""

import json
import subprocess
import sys

from engine.config.schema import TrainConfig
from engine.levers import memory_plan as mp

from .conftest import REPO, write_config
from .test_cli import tuner

# the demo model's config.json (engine/model/demo.py)
TINY = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 352, "vocab_size": 1008, "tie_word_embeddings": False}
Q4 = {"bits": 4, "group_size": 64}


def cfg(**keys):
    return TrainConfig(model="x", **{"num_layers": -1, "batch_size": 2, "max_seq_length": 64, **keys})


def test_weights_by_hand():
    # a block: q 128x128, k and v 128x64, o 128x128, gate/up/down 128x352, two norms
    block = 16384 + 8192 + 8192 + 16384 + 3 * 45056 + 2 * 128
    params = 4 * block + 2 * 1008 * 128 + 128
    assert mp.Shape.of(TINY).params() == params == 996480  # the demo model's safetensors: 3,990,013 bytes
    on_cpu = mp.plan_memory(cfg(), TINY, None, 10**12)
    assert on_cpu.part("weights") == 4 * params
    # 4-bit kept as stored (the GPU path): half a byte per weight plus a float16 scale and bias per 64
    linear, emb = 4 * (block - 256), 1008 * 128
    quantized = linear // 2 + 4 * (linear // 64) + 2 * (emb // 2 + 4 * (emb // 64)) + 9 * 128 * 2
    assert quantized == 562176
    kept = mp.plan_memory(cfg(), TINY, Q4, 10**12, stored_dtype="bfloat16", on_cpu=False)
    assert kept.part("weights") == quantized
    # the CPU's auto dequantizes to float32: the same base costs 7x more there
    assert mp.plan_memory(cfg(), TINY, Q4, 10**12, stored_dtype="bfloat16").part("weights") == 4 * params


def test_trainable_optimizer_and_gradients_by_hand():
    lora = 4 * 8 * (256 + 192 + 192 + 256 + 3 * 480)  # rank 8 x (in + out), seven linears, four blocks
    plan = mp.plan_memory(cfg(), TINY, None, 10**12)
    assert plan.part("trainable") == plan.part("gradients") == 4 * lora
    assert plan.part("optimizer") == 2 * 4 * lora  # Adam's two moments
    two = mp.plan_memory(cfg(num_layers=2, optimizer="sgd"), TINY, None, 10**12)
    assert two.part("trainable") == 2 * lora and two.part("optimizer") == 0
    dora = mp.plan_memory(cfg(fine_tune_type="dora"), TINY, None, 10**12)
    assert dora.part("trainable") == 4 * (lora + 4 * (128 + 64 + 64 + 128 + 352 + 352 + 128))
    full = mp.plan_memory(cfg(fine_tune_type="full", num_layers=1), TINY, None, 10**12)
    assert full.part("trainable") == 4 * 184576


def test_activations_and_logits_by_hand():
    tokens, scores = 2 * 64, 2 * 4 * 64 * 64 * 4  # attention's [rows, heads, length, length] in float32
    block = tokens * (9 * 128 + 3 * 64 + 4 * 352) * 4 + 2 * scores  # the tensors a block keeps
    plan = mp.plan_memory(cfg(sparse_logits=False, cpu_streams=1), TINY, None, 10**12)
    assert plan.part("activations") == 4 * block + 3 * scores
    assert plan.part("logits") == 3 * tokens * 1008 * 4
    # checkpointing keeps each block's input and recomputes one block at a time, on any device
    ckpt = mp.plan_memory(cfg(grad_checkpoint=True), TINY, None, 10**12)
    assert ckpt.part("activations") == 4 * tokens * 128 * 4 + block + 6 * scores
    # MLX's own attention (a GPU, or the CPU levers off) keeps fewer scores than the CPU's fast one
    own = tokens * (9 * 128 + 3 * 64 + 4 * 352) * 4 + 1.5 * scores
    gpu = mp.plan_memory(cfg(sparse_logits=False), TINY, None, 10**12, on_cpu=False)
    assert gpu.part("activations") == int(4 * own + 1 * scores)
    ckpt = mp.plan_memory(cfg(grad_checkpoint=True), TINY, None, 10**12, on_cpu=False)
    assert ckpt.part("activations") == int(4 * tokens * 128 * 4 + own + 2 * scores)
    levers_off = mp.plan_memory(cfg(grad_checkpoint=True, compute_plan="gpu"), TINY, None, 10**12)
    assert levers_off.part("activations") == ckpt.part("activations")
    # cpu_streams' parts run side by side: the whole batch counts
    split = mp.plan_memory(cfg(sparse_logits=False), TINY, None, 10**12)
    assert split.part("activations") == 4 * block + 3 * scores
    # sparse logits: bounded by linear_ce's vocabulary slices, whatever the length
    long = mp.plan_memory(cfg(max_seq_length=65536, batch_size=1), TINY, None, 10**12)
    assert long.part("logits") == mp.SPARSE_CHUNK_BYTES + 65536 * 128 * 4


def test_fixes_are_the_mildest_change_of_each_kind_that_fits():
    big = cfg(batch_size=8, max_seq_length=2048)
    total = mp.plan_memory(big, TINY, None, 10**12).total
    plan = mp.plan_memory(big, TINY, None, total)  # 100% of the machine: tight, past the 80% warning
    assert plan.verdict == "tight"
    changes = {fix.change.split(":")[0]: fix for fix in plan.fixes}
    assert changes["batch_size"].change == "batch_size: 4"
    assert changes["max_seq_length"].change == "max_seq_length: 1024"
    assert changes["grad_checkpoint"].change == "grad_checkpoint: true"  # it saves on the CPU too
    on_gpu = mp.plan_memory(big, TINY, None, mp.plan_memory(big, TINY, None, 1, on_cpu=False).total, on_cpu=False)
    assert [f.change for f in on_gpu.fixes][0] == "grad_checkpoint: true"
    for fix in plan.fixes:
        assert fix.total <= 0.8 * total
    assert mp.plan_memory(big, TINY, None, total // 2).verdict == "too big"
    assert mp.plan_memory(big, TINY, None, 2 * total).fixes == ()
    # Metal's working-set limit, not the machine's memory, is what must hold it
    on_metal = mp.plan_memory(big, TINY, None, 10 * total, metal_bytes=total // 2)
    assert on_metal.verdict == "too big" and "Metal's working-set limit" in on_metal.summary()


def test_validate_shows_the_plan(tmp_path):
    result = tuner("validate", write_config(tmp_path, batch_size=8, max_seq_length=2048))
    assert result.returncode == 0, result.stderr
    [line] = [x for x in result.stdout.splitlines() if x.startswith("# memory:")]
    assert "needs about " in line and ": weights 4 MB, trainable 0.3 MB," in line
    assert " GB, logits " in line and "; this machine has " in line
    hub = tuner("validate", write_config(tmp_path, model="nobody-here/no-such-model"))
    assert "# memory plan skipped: nobody-here/no-such-model is not in the Hugging Face cache" in hub.stdout


def test_train_warns_of_a_config_that_cannot_fit_and_still_trains_short_data(tmp_path, capsys):
    """The plan counts batches of max_seq_length tokens; the demo's chats are under 100, so the run
    fits: a warning naming the fixes, never a refusal."""
    from engine.cli import main

    config = write_config(tmp_path, batch_size=64, max_seq_length=65536, iters=1, val_batches=0, save_every=100)
    assert main(["train", str(config)]) == 0
    out = capsys.readouterr().out
    assert "may not fit in memory if batches reach max_seq_length: needs about" in out and "would fit: " in out


def test_train_warns_when_memory_is_tight(tmp_path, monkeypatch, capsys):
    from engine.cli import main

    config = write_config(tmp_path, iters=2, val_batches=0, save_every=100)
    total = mp.plan_for_stage(__import__("engine.config", fromlist=["x"]).load_stages([config])[0])[0].total
    monkeypatch.setattr(mp, "machine_memory", lambda: (int(total * 1.1), None))
    assert main(["train", str(config)]) == 0
    assert "memory is tight if batches reach max_seq_length: needs about" in capsys.readouterr().out


def test_prediction_is_near_the_measured_peak():
    """The tiny model, batch 4 x 512 tokens, every one trained: the prediction within 25% of
    mx.get_peak_memory (the bench's grid: bench/README.md)."""
    keys = {"batch_size": 4, "max_seq_length": 512, "grad_checkpoint": False}
    out = subprocess.run([sys.executable, "bench/memory_plan_check.py", "--one", json.dumps(keys)],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert abs(r["predicted"] - r["measured"]) <= 0.25 * r["measured"], r
