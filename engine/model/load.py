"""Loading a base model and making the parts that train trainable.

Loading, LoRA/DoRA layers and adapter files are mlx-lm's, so adapters we write load in
``mlx_lm.generate --adapter-path`` and ``mlx_lm.fuse``. What we add: the compute dtype choice
(on the CPU backend only float32 matmuls are fast, so quantized layers are dequantized and
everything is cast to float32, and we say so; on a GPU, Metal or CUDA, or with
``compute_dtype: model``, the model keeps its dtype and quantization), and checks that an
adapter to continue from fits the layers we built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_unflatten
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm.utils import dequantize_model, get_total_parameters, load, save

from engine.errors import UserError, first_line
from engine.files import atomic_write_json
from engine.hub import explain_failure, offline_unless_reachable
from engine.model.resolve import resolve_model

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
ADAPTER_LEAVES = ("lora_a", "lora_b", "m")


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    path: str  # local folder the weights came from
    config: dict
    compute_dtype: str
    notes: list[str]


def load_base(stage) -> LoadedModel:
    """Load the stage's model (found by :func:`engine.model.resolve.resolve_model`) and pick the
    compute dtype."""
    cfg = stage.config
    where = resolve_model(stage)
    if not where.local:  # a hub id: without a network, fail (or use the cache) at once
        offline_unless_reachable()
    try:
        model, tokenizer, config = load(
            where.path,
            tokenizer_config={"trust_remote_code": cfg.trust_remote_code},
            return_config=True,
            trust_remote_code=cfg.trust_remote_code,
        )
    except Exception as e:  # hub, file and format errors all reach the user as one line
        why = first_line(e) if where.local else explain_failure(e, "model")
        raise stage.error("model", f"could not load {where.path!r}: {why}") from None
    notes: list[str] = []
    dtype = choose_dtype(cfg.compute_dtype)
    if dtype is not None:
        notes.extend(cast_model(model, dtype))
    resolved = "model" if dtype is None else _dtype_name(dtype)
    return LoadedModel(model, tokenizer, where.path, config, resolved, notes)


def choose_dtype(requested: str):
    """None keeps the model as stored (its dtype and quantization): "model", and "auto" on a GPU
    (Metal or CUDA); "auto" on the CPU backend means float32, its only fast dtype."""
    on_cpu = mx.default_device().type == mx.cpu  # by device, not Metal: CUDA is a GPU too
    if requested == "model" or (requested == "auto" and not on_cpu):
        return None
    if requested == "auto":
        return mx.float32
    return DTYPES[requested]


def _dtype_name(dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def _affine_float32(module) -> mx.array | None:
    """The float32 weight of an affine-quantized layer, ``scale * q + bias`` computed in float32;
    None where the packing is not one this reads (bit widths that do not divide 32, other modes).

    ``mx.dequantize`` computes in the scales' dtype (float16 for GGUF imports), which rounds the
    weights to float16 and then needs a second pass to cast them; computing in float32 at once
    gives the values llama.cpp itself uses, in about half the time.
    """
    bits, group = module.bits, module.group_size
    if getattr(module, "mode", "affine") != "affine" or 32 % bits:
        return None
    packed = module.weight  # uint32 words, each holding 32 / bits values, lowest bits first
    q = (packed[..., None] >> mx.arange(0, 32, bits, dtype=mx.uint32)) & ((1 << bits) - 1)
    q = q.reshape(*packed.shape[:-1], -1, group).astype(mx.float32)
    w = q * module.scales[..., None].astype(mx.float32) + module.biases[..., None].astype(mx.float32)
    return w.reshape(*packed.shape[:-1], -1)


def _dequantize_float32(model: nn.Module) -> None:
    """Swap affine-quantized linear and embedding layers for float32 ones (see :func:`_affine_float32`)."""
    swapped = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            continue
        weight = _affine_float32(module)
        if weight is None:
            continue
        if isinstance(module, nn.QuantizedEmbedding):
            plain = nn.Embedding(*weight.shape)
        else:
            plain = nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in module)
            if "bias" in module:
                plain.bias = module.bias
        plain.weight = weight
        swapped.append((name, plain))
    if swapped:
        model.update_modules(tree_unflatten(swapped))


def cast_model(model: nn.Module, dtype) -> list[str]:
    """Dequantize quantized layers (if computing in float) and cast floating weights."""
    notes = []
    quantized = sum(
        isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules()
    )
    if quantized:
        if dtype == mx.float32:
            _dequantize_float32(model)
        dequantize_model(model)  # whatever is left: other modes, bit widths, MoE switch layers
        notes.append(
            f"dequantized {quantized} quantized layers to compute in {_dtype_name(dtype)} "
            "(on the CPU backend quantized matmuls are far slower than float32 ones)"
        )
    before = {v.dtype for _, v in tree_flatten(model.parameters())}
    model.update(
        tree_map(lambda v: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v, model.parameters())
    )
    changed = sorted(str(d).split(".")[-1] for d in before if d != dtype and mx.issubdtype(d, mx.floating))
    if changed:
        notes.append(f"computing in {_dtype_name(dtype)} (weights stored as {', '.join(changed)})")
    return notes


def setup_trainable(model: nn.Module, cfg) -> None:
    """Freeze the base and add LoRA/DoRA layers, or unfreeze the last layers for full tuning."""
    model.freeze()
    layers = len(model.layers)
    num_layers = layers if cfg.num_layers == -1 else cfg.num_layers
    if num_layers > layers:
        raise UserError(f"num_layers: {cfg.num_layers} is more than the model's {layers} layers")
    if cfg.fine_tune_type == "full":
        for layer in model.layers[-num_layers:]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(
            model,
            num_layers,
            lora_parameters(cfg),
            use_dora=cfg.fine_tune_type == "dora",
        )


def lora_parameters(cfg) -> dict:
    p = cfg.lora_parameters
    out = {"rank": p.rank, "scale": p.scale, "dropout": p.dropout}
    if p.keys is not None:
        out["keys"] = list(p.keys)
    return out


def trainable_weights(model: nn.Module) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def load_trained_weights(model: nn.Module, file: str | Path) -> None:
    """Load adapter (or full) weights, refusing any name or shape the model lacks."""
    weights = mx.load(str(file))
    params = trainable_weights(model)
    bad = [
        f"{name} {tuple(w.shape)}" + (f" != {tuple(params[name].shape)}" if name in params else " (no such parameter)")
        for name, w in weights.items()
        if name not in params or params[name].shape != w.shape
    ]
    if bad:
        raise UserError(
            f"{file}: does not fit the trainable layers of this config: "
            + "; ".join(bad[:3])
            + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
        )
    model.load_weights(list(weights.items()), strict=False)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; quantized weights count their logical size."""
    trainable = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    return trainable, get_total_parameters(model)


def write_adapter_config(adapter_dir: Path, cfg, model_path: str, extra: dict) -> None:
    """``adapter_config.json`` with the keys mlx-lm's ``load_adapters`` and fuse read."""
    data = {
        **extra,
        "model": model_path,
        "fine_tune_type": cfg.fine_tune_type,
        "num_layers": cfg.num_layers,
        "lora_parameters": lora_parameters(cfg),
        "prompt_loss_weight": cfg.plw,
    }
    atomic_write_json(Path(adapter_dir) / "adapter_config.json", data)


def read_adapter_config(adapter_dir: Path) -> dict:
    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())


def fuse(model_path: str, adapter_dir: Path, save_dir: Path) -> Path:
    """Fuse trained adapters into the base model, as ``mlx_lm.fuse`` does, in its stored dtype."""
    model, tokenizer, config = load(model_path, adapter_path=str(adapter_dir), return_config=True)
    fused = [(n, m.fuse()) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    save(save_dir, model_path, model, tokenizer, config, donate_model=False)
    return Path(save_dir)
