"""The GPU path, run on the CPU: ``compute_dtype: model`` keeps a quantized or bfloat16 base as
stored and ``compute_plan: gpu`` keeps every CPU lever off, so these tests train what a Mac
(Metal) or CUDA user trains: QLoRA on a 4- and 8-bit base, LoRA, DoRA and full fine-tuning on a
bfloat16 one, with gradient checkpointing. Each first loss is compared with the float32 path on the
same weights and with mlx-lm's own ``default_loss``; runs resume exactly, and their adapters load
in ``mlx_lm.load`` and fuse with ``mlx_lm.fuse`` (mlx-lm's de- and requantization)."""

import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map
from mlx_lm.tuner.trainer import default_loss
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import load, quantize_model, save

from engine import events as ev
from engine.config import load_stages
from engine.data.batching import collate
from engine.data.tokenize import COMPLETION
from engine.model.load import ADAPTER_LEAVES
from engine.runs.checkpoints import Checkpoints
from engine.runs.control import Control
from engine.training.chain import resume_run, run_chain
from engine.training.distributed import World
from engine.training.prepare import prepare_stage

from .conftest import DEMO_DATA, planned, write_config

GPU_PATH = {"compute_dtype": "model", "compute_plan": "gpu", "grad_checkpoint": True, "prompt_loss_weight": 0.0}
FIRST_LOSS_TOLERANCE = {"q4": 0.05, "q4-tied": 0.05, "q8": 0.02, "bf16": 0.02}  # relative, against the float32 path
SYSTEM = "Answer every question briefly and accurately, in as few words as the question allows."
GROUP = 32  # the tiny model's MLP width (352) is no multiple of mlx-lm's default 64


@pytest.fixture(scope="module")
def bases(demo_model_dir, tmp_path_factory) -> dict:
    """The demo model stored in bfloat16, and quantized from that by mlx-lm to 4 and 8 bits (and 4
    bits with a tied head), built once."""
    root = tmp_path_factory.mktemp("bases")
    tied = _tied(demo_model_dir, root / "tied-float32")
    out = {}
    for name, source, bits in (("q4", demo_model_dir, 4), ("q8", demo_model_dir, 8), ("bf16", demo_model_dir, None),
                               ("q4-tied", tied, 4)):
        model, tokenizer, config = load(str(source), return_config=True)
        model.update(tree_map(lambda v: v.astype(mx.bfloat16), model.parameters()))
        if bits:  # bfloat16 scales, norms and activations, as mlx-community's quantized models have
            model, config = quantize_model(model, config, GROUP, bits)
        save(root / name, str(source), model, tokenizer, config)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def system_data(tmp_path_factory) -> Path:
    """The demo chats, every one opening with the same system message (a shared prefix)."""
    folder = tmp_path_factory.mktemp("system-data")
    for split in ("train", "valid"):
        lines = (DEMO_DATA / f"{split}.jsonl").read_text().splitlines()
        chats = [[m for m in json.loads(line)["messages"] if m["role"] != "system"] for line in lines]
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"messages": [{"role": "system", "content": SYSTEM}, *chat]}) + "\n" for chat in chats))
    return folder


def _tied(demo_model_dir, folder):
    """The demo model with its output head tied to its (later quantized) embedding, as most small
    mlx-community models are: sparse logits must read the packed embedding as the head."""
    shutil.copytree(demo_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    weights = mx.load(str(folder / "model.safetensors"))
    del weights["lm_head.weight"]
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    return folder


def prepared(tmp_path, base, **keys):
    stage = load_stages([write_config(tmp_path, model=str(base), **keys)])[0]
    return prepare_stage(stage, World())


def first_loss(stage) -> float:
    batch = collate(stage.data.train[:8], stage.data.pad_id)
    [inputs] = stage.loss.inputs(batch)
    return stage.loss.loss(stage.model, inputs)[0].item()


def mlx_lm_first_loss(base, stage, fine_tune_type: str) -> float:
    """mlx-lm's own loss on the same batch, its model loaded and adapted by mlx-lm: at PLW 0 both
    weigh the completion tokens, which in the demo data are each example's tail."""
    model, _ = load(str(base))
    model.freeze()
    if fine_tune_type != "full":  # fresh LoRA/DoRA layers compute what the base does
        linear_to_lora_layers(model, len(model.layers), {"rank": 8, "scale": 2.0, "dropout": 0.0},
                              use_dora=fine_tune_type == "dora")
    examples = stage.data.train[:8]
    batch = collate(examples, stage.data.pad_id)
    lengths = []
    for e in examples:
        completion = np.flatnonzero(e.roles == COMPLETION)
        assert (np.diff(completion) == 1).all() and completion[-1] == len(e) - 1  # one tail
        lengths.append([int(completion[0]), len(e) - 1])
    return default_loss(model, mx.array(batch.ids), mx.array(lengths))[0].item()


def quantized_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())


@pytest.mark.parametrize("base,fine_tune_type,checkpoint", [
    ("q4", "lora", True), ("q4", "dora", True), ("q8", "lora", True), ("q8", "dora", True), ("q4-tied", "lora", True),
    ("q4-tied", "dora", False), ("bf16", "lora", True), ("bf16", "dora", False), ("bf16", "full", True)])
def test_the_first_loss_as_stored_matches_float32_and_mlx_lm(bases, system_data, tmp_path, base, fine_tune_type,
                                                             checkpoint):
    """Without gradient checkpointing, on chats that open alike, the shared prefix applies too."""
    keys = {**GPU_PATH, "fine_tune_type": fine_tune_type, "num_layers": 2 if fine_tune_type == "full" else -1,
            "grad_checkpoint": checkpoint, **({} if checkpoint else {"data": str(system_data)})}
    kept = prepared(tmp_path, bases[base], **keys)
    if base == "bf16":
        base_weights = [v for k, v in tree_flatten(kept.model.parameters()) if k.split(".")[-1] not in ADAPTER_LEAVES]
        assert {v.dtype for v in base_weights} == {mx.bfloat16}  # mlx-lm keeps its LoRA factors float32
        assert not quantized_layers(kept.model)
    else:  # every layer but the LoRA factors stays packed
        assert quantized_layers(kept.model) == 4 * 7 + (1 if base == "q4-tied" else 2)
    levers = {c.name: c.on for c in kept.levers.choices}
    assert not any(levers[name] for name in ("fast SiLU", "fast attention", "fast LoRA", "CPU streams"))
    assert kept.levers.sparse_logits and levers["sparse last block"]  # they apply on a GPU too
    assert levers["gradient checkpointing"] == checkpoint and levers["shared prefix"] == (not checkpoint)
    loss = first_loss(kept)
    wide = first_loss(prepared(tmp_path, bases[base], **{**keys, "compute_dtype": "float32"}))
    assert loss == pytest.approx(wide, rel=FIRST_LOSS_TOLERANCE[base])
    assert loss == pytest.approx(mlx_lm_first_loss(bases[base], kept, fine_tune_type), rel=5e-3)


def train(tmp_path, base, stop_at: int | None = None, **keys):
    """Run (or, with ``stop_at``, stop after that step and resume) 4 steps; the reports' losses by step."""
    tmp_path.mkdir()
    config = write_config(tmp_path, model=str(base), iters=4, steps_per_report=1, steps_per_eval=100,
                          val_batches=1, save_every=100, **{**GPU_PATH, "learning_rate": 3e-3, "batch_size": 4, **keys})
    losses, events, control = {}, [], Control()

    def emit(event):
        events.append(event)
        if isinstance(event, ev.TrainReport):
            losses[event.step] = event.loss
            if event.step == stop_at:
                control.stop()

    [result] = run_chain(load_stages([config]), emit, control)
    if stop_at is not None:
        assert result.status == "stopped"
        result = resume_run(result.run_dir, emit)
    assert result.status == "completed"
    return losses, events, result.run_dir


@pytest.mark.parametrize("base,fine_tune_type", [("q4", "lora"), ("q8", "dora"), ("bf16", "dora")])
def test_adapters_trained_as_stored_fall_resume_exactly_and_fuse_in_mlx_lm(bases, tmp_path, monkeypatch, base,
                                                                          fine_tune_type):
    whole, events, run_dir = train(tmp_path / "whole", bases[base], fine_tune_type=fine_tune_type)
    assert planned(events, "fast LoRA").reason == "compute_plan: gpu"
    label = next(e for e in events if e.kind == "run_started").compute_dtype  # the start line's dtypes
    assert "bfloat16" in label and ("uint32" in label) == (base != "bf16")  # packed weights stay packed
    assert whole[4] < whole[1]
    resumed, _, resumed_dir = train(tmp_path / "resumed", bases[base], stop_at=2, fine_tune_type=fine_tune_type)
    assert resumed == whole  # the same losses after the resume, to the bit
    adapter_dir = Checkpoints(run_dir).adapter_dir
    trained = mx.load(str(Checkpoints(run_dir).adapter_file))
    again = mx.load(str(Checkpoints(resumed_dir).adapter_file))
    assert all(np.array_equal(np.array(trained[k]), np.array(again[k])) for k in trained)

    ids = mx.array([[1, 5, 9, 13, 17, 21, 25, 29]])
    plain, _ = load(str(bases[base]))
    adapted, _ = load(str(bases[base]), adapter_path=str(adapter_dir))
    adapted_logits = adapted(ids).astype(mx.float32)
    change = mx.abs(plain(ids).astype(mx.float32) - adapted_logits).max().item()
    assert change > 0.1  # the adapters took effect
    monkeypatch.setattr(sys, "argv", ["mlx_lm.fuse", "--model", str(bases[base]), "--adapter-path",
                                      str(adapter_dir), "--save-path", str(tmp_path / "fused")])
    from mlx_lm.fuse import main as fuse_main

    fuse_main()
    fused, _ = load(str(tmp_path / "fused"))
    assert quantized_layers(fused) == quantized_layers(plain)  # requantized where the base was quantized
    gap = mx.abs(fused(ids).astype(mx.float32) - adapted_logits).max().item()
    assert gap < 0.25 * change  # the fused weights carry the adapters, up to requantization's rounding


def test_full_fine_tuning_on_a_bfloat16_base_falls_and_resumes_exactly(bases, tmp_path):
    keys = {"fine_tune_type": "full", "num_layers": 2, "learning_rate": 1e-3}
    whole, events, run_dir = train(tmp_path / "whole", bases["bf16"], **keys)
    assert whole[4] < whole[1]
    assert planned(events, "gradient checkpointing").on
    resumed, _, resumed_dir = train(tmp_path / "resumed", bases["bf16"], stop_at=2, **keys)
    assert resumed == whole
    trained = mx.load(str(Checkpoints(run_dir).adapter_file))
    assert {v.dtype for v in trained.values()} == {mx.bfloat16}
    again = mx.load(str(Checkpoints(resumed_dir).adapter_file))
    assert all(np.array_equal(np.array(trained[k].astype(mx.float32)), np.array(again[k].astype(mx.float32)))
               for k in trained)


def test_the_gpu_plan_turns_the_cpu_levers_off_with_its_reason(tmp_path, demo_model_dir):
    stage = prepared(tmp_path, demo_model_dir, compute_plan="gpu", batch_size=4)
    reasons = {c.name: c for c in stage.levers.choices}
    for name in ("fast SiLU", "fast attention", "fast LoRA", "CPU streams"):
        assert reasons[name] == ev.LeverChoice(name, False, "compute_plan: gpu")
    assert reasons["sparse logits"].on  # the levers that are not the CPU's stay
    default = prepared(tmp_path, demo_model_dir, batch_size=4)
    assert {c.name: c for c in default.levers.choices}["fast SiLU"].on  # auto on the CPU: the levers apply


def test_on_a_gpu_that_is_not_metal_the_plan_is_the_gpus(tmp_path, demo_model_dir, monkeypatch):
    """MLX's CUDA backend: the default device is a GPU and Metal is not there."""
    from engine.levers.platform_check import device_name

    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu))
    monkeypatch.setattr(mx.metal, "is_available", lambda: False)
    stage = prepared(tmp_path, demo_model_dir, batch_size=4)
    reasons = {c.name: c for c in stage.levers.choices}
    for name in ("fast SiLU", "fast attention", "fast LoRA", "CPU streams"):
        assert reasons[name] == ev.LeverChoice(name, False, "for the CPU backend only")
    assert reasons["denormals flushed"].reason == "the GPU flushes denormal floats of its own"
    assert device_name() == "GPU"


@pytest.mark.parametrize("device,auto_keeps", [(mx.cpu, False), (mx.gpu, True)])
def test_auto_keeps_the_model_as_stored_on_any_gpu_and_model_keeps_it_everywhere(monkeypatch, device, auto_keeps):
    """Decided by the default device's type, not by Metal: MLX's CUDA backend is a GPU too."""
    from engine.model.load import choose_dtype

    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(device))
    monkeypatch.setattr(mx.metal, "is_available", lambda: False)  # CUDA, or this machine
    assert (choose_dtype("auto") is None) == auto_keeps
    assert choose_dtype("model") is None and choose_dtype("bfloat16") == mx.bfloat16
