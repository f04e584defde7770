"""How much memory a config will need, predicted before anything is loaded: "will this fit?".

Arithmetic on the model's ``config.json`` and the sizes in its safetensors headers, no MLX, so
``tuner validate`` and the Config screen can answer at once. The parts follow what a step holds
at its peak, in the order MLX allocates them:

- the base weights, as stored (quantized layers keep ``bits`` per weight plus a float16 scale and
  bias per group) or cast to the compute dtype (on the CPU, ``auto`` dequantizes to float32, see
  :func:`engine.model.load.cast_model`);
- the trainable parameters (LoRA/DoRA adapters in float32, or the top blocks' weights for full
  fine-tuning), their gradients and the optimizer's state (Adam: two moments each);
- the activations the backward pass keeps for the longest batch (batch_size x max_seq_length
  tokens) in the trained blocks, or, with grad_checkpoint, each block's input plus one block's
  recomputation (:mod:`engine.levers.grad_checkpoint`); attention keeps its
  [heads, length, length] tensors per block;
- the logits: [tokens, vocabulary] float32 several times over, or with sparse_logits a bounded
  vocabulary slice at a time (:mod:`engine.levers.linear_ce`).

The constants were fitted to measured peaks (``bench/memory_plan_check.py``; the error table is
in bench/README.md).
"""

from __future__ import annotations

import json
import platform
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

GB = 1e9
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "muon": 1, "sgd": 0, "adafactor": 0}
LOGIT_COPIES = 3  # logits, their softmax and their gradient, in float32
SPARSE_CHUNK_BYTES = 10 * (1 << 22) * 4  # linear_ce: ~10 vocabulary slices of 2**22 float32 logits in flight
# attention's [heads, length, length] tensors: (each block keeps for its backward pass, one block's
# backward holds on top, grad_checkpoint's recomputed block adds), fitted to bench/memory_plan_check.py:
# MLX's own attention, and the CPU's fast attention (engine/levers/fast_attention.py), whose softmax
# keeps more
SCORES = (1.5, 1, 1)
FAST_ATTENTION_SCORES = (2, 3, 3)
REFUSE_SHARE = 1.2  # refuse to start past 120% of the machine's memory: a clear margin over the prediction's error
WARN_SHARE = 0.8


@dataclass(frozen=True)
class Part:
    name: str
    bytes: int


@dataclass(frozen=True)
class Fix:
    change: str  # e.g. "batch_size: 2"
    total: int


@dataclass(frozen=True)
class MemoryPlan:
    parts: tuple[Part, ...]
    machine_bytes: int
    fixes: tuple[Fix, ...] = ()
    metal_bytes: int | None = None  # Metal's recommended working-set limit, on Apple silicon

    @property
    def limit(self) -> int:
        return min(self.machine_bytes, self.metal_bytes or self.machine_bytes)

    @property
    def total(self) -> int:
        return sum(p.bytes for p in self.parts)

    def part(self, name: str) -> int:
        return next(p.bytes for p in self.parts if p.name == name)

    @property
    def verdict(self) -> str:
        """"fits", "tight" (past 80% of the machine: warn) or "too big" (refuse to start)."""
        if self.total > REFUSE_SHARE * self.limit:
            return "too big"
        return "tight" if self.total > WARN_SHARE * self.limit else "fits"

    def summary(self) -> str:
        parts = ", ".join(f"{p.name} {size(p.bytes)}" for p in self.parts)
        metal = f", Metal's working-set limit is {size(self.metal_bytes)}" if self.metal_bytes else ""
        return f"needs about {size(self.total)}: {parts}; this machine has {size(self.machine_bytes)}{metal}"

    def fix_text(self) -> str:
        return "; ".join(f"{f.change} (about {size(f.total)})" for f in self.fixes)


def size(n: int) -> str:
    """Decimal units, two significant figures at most: "0.5 MB", "120 MB", "1.2 GB", "5349 GB"."""
    if n < GB:
        return f"{n / 1e6:.2g} MB" if n < 1e7 else f"{n / 1e6:.0f} MB"
    return f"{n / GB:.2g} GB" if n < 10 * GB else f"{n / GB:.0f} GB"


@dataclass(frozen=True)
class Shape:
    """The transformer's sizes, from config.json."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def of(cls, config: dict) -> Shape:
        text = config.get("text_config", config)
        hidden, heads = text["hidden_size"], text["num_attention_heads"]
        return cls(hidden, text["num_hidden_layers"], heads, text.get("num_key_value_heads") or heads,
                   text.get("head_dim") or hidden // heads, text["intermediate_size"], text["vocab_size"],
                   bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))))

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each block's linear layers: (input, output) features."""
        d, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                "gate_proj": (d, i), "up_proj": (d, i), "down_proj": (i, d)}

    def block_params(self) -> int:
        return sum(a * b for a, b in self.linears().values()) + 2 * self.hidden

    def params(self) -> int:
        return self.layers * self.block_params() + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


def quantized_bytes(elements: int, bits: int, group: int) -> int:
    """Packed weights plus a float16 scale and bias per group (mlx's affine quantization)."""
    return elements * bits // 8 + 2 * 2 * (elements // group)


def stored_weight_bytes(shape: Shape, quantization: dict | None, stored_bytes_per_param: int) -> int:
    """The weights as stored: quantized where config.json says so, else in their dtype."""
    if not quantization:
        return shape.params() * stored_bytes_per_param
    bits, group = quantization.get("bits", 4), quantization.get("group_size", 64)
    embed = quantization.get("model.embed_tokens", {})
    linear = shape.layers * (shape.block_params() - 2 * shape.hidden)
    emb = shape.vocab * shape.hidden
    total = quantized_bytes(linear, bits, group)
    total += quantized_bytes(emb, embed.get("bits", bits), embed.get("group_size", group))
    if not shape.tied:
        total += quantized_bytes(emb, bits, group)
    return total + (2 * shape.layers + 1) * shape.hidden * stored_bytes_per_param


def trained_layers(cfg, shape: Shape) -> int:
    return shape.layers if cfg.num_layers == -1 else min(cfg.num_layers, shape.layers)


def trainable_params(cfg, shape: Shape) -> int:
    """LoRA: rank x (in + out) per wrapped linear (DoRA adds a magnitude per output); full: the blocks."""
    layers = trained_layers(cfg, shape)
    if cfg.fine_tune_type == "full":
        return layers * shape.block_params()
    keys = cfg.lora_parameters.keys
    names = [n for n in LINEARS if keys is None or any(k.split(".")[-1] == n for k in keys)]
    rank, dora = cfg.lora_parameters.rank, cfg.fine_tune_type == "dora"
    per_block = sum(rank * (i + o) + (o if dora else 0) for n, (i, o) in shape.linears().items() if n in names)
    return layers * per_block


def activation_bytes(cfg, shape: Shape, rows: int, length: int, compute: int, fast_attention: bool) -> int:
    """What the backward pass keeps of the trained blocks, per token: the block's input, its norms,
    q/k/v before and after RoPE, attention's output and projection, the MLP's gate, up, SiLU and
    product; attention keeps its probabilities and scores ([heads, length, length] per row) per
    block, and one block's backward needs more at once. With grad_checkpoint each block
    keeps its input and one block at a time is recomputed, its backward then holding more score
    tensors than without. How many score tensors: fitted (bench/README.md), more where the CPU's
    fast attention (float32, the CPU levers on) computes the softmax. The batch's rows count
    together even where cpu_streams splits them: the parts run side by side."""
    s = shape
    tokens = rows * length
    per_token = 9 * s.hidden + 3 * s.kv_heads * s.head_dim + 4 * s.intermediate
    scores = rows * s.heads * length * length * compute
    kept, backward, recomputed = FAST_ATTENTION_SCORES if fast_attention else SCORES
    block = tokens * per_token * compute + kept * scores
    layers = trained_layers(cfg, shape)
    if not cfg.grad_checkpoint:
        return int(layers * block + backward * scores)
    return int(layers * tokens * s.hidden * compute + block + (backward + recomputed) * scores)


def logit_bytes(cfg, shape: Shape, tokens: int) -> int:
    full = LOGIT_COPIES * tokens * shape.vocab * 4
    if cfg.sparse_logits:
        return min(full, SPARSE_CHUNK_BYTES) + tokens * shape.hidden * 4
    return full


def compute_bytes(cfg, stored_dtype: str, on_cpu: bool) -> int | None:
    """Bytes per weight when the model is cast; None when it keeps its stored dtype and quantization."""
    requested = cfg.compute_dtype
    if requested == "model" or (requested == "auto" and not on_cpu):
        return None
    return 4 if requested == "auto" else DTYPE_BYTES[requested]


def plan_parts(cfg, model_config: dict, quantization: dict | None, stored_dtype: str, on_cpu: bool,
               length: int | None = None) -> tuple[Part, ...]:
    shape = Shape.of(model_config)
    stored = DTYPE_BYTES.get(stored_dtype, 2)
    cast = compute_bytes(cfg, stored_dtype, on_cpu)
    weights = stored_weight_bytes(shape, quantization, stored) if cast is None else shape.params() * cast
    compute = cast or stored
    trainable = trainable_params(cfg, shape)
    train_bytes = trainable * (compute if cfg.fine_tune_type == "full" else 4)
    states = OPTIMIZER_STATES.get(cfg.optimizer, 2)
    length = min(length or cfg.max_seq_length, cfg.max_seq_length)
    rows = cfg.batch_size
    return (Part("weights", weights), Part("trainable", train_bytes), Part("gradients", train_bytes),
            Part("optimizer", states * train_bytes),
            Part("activations", activation_bytes(cfg, shape, rows, length, compute,
                                                 fast_attention=cfg.fast_attention and on_cpu and compute == 4
                                                 and cfg.compute_plan != "gpu")),
            Part("logits", logit_bytes(cfg, shape, rows * length)))


def plan_memory(cfg, model_config: dict, quantization: dict | None, machine_bytes: int, *,
                stored_dtype: str = "float32", on_cpu: bool = True, length: int | None = None,
                metal_bytes: int | None = None) -> MemoryPlan:
    """The predicted peak of training ``cfg`` (a TrainConfig) and, when it does not fit in 80% of
    ``machine_bytes``, the single changes that would (the mildest of each kind: the largest
    batch_size, the longest max_seq_length...), each with its predicted total.

    ``length``: the longest batch's tokens per example when known (the data's longest example),
    else max_seq_length."""
    parts = plan_parts(cfg, model_config, quantization, stored_dtype, on_cpu, length)
    plan = MemoryPlan(parts, machine_bytes, metal_bytes=metal_bytes)
    if plan.verdict == "fits":
        return plan
    fixes: dict[str, Fix] = {}
    for change, updated in _changes(cfg, Shape.of(model_config)):
        key = change.split(":")[0]
        if key in fixes:
            continue
        total = sum(p.bytes for p in plan_parts(updated, model_config, quantization, stored_dtype, on_cpu, length))
        if total <= WARN_SHARE * plan.limit:
            fixes[key] = Fix(change, total)
    return MemoryPlan(parts, machine_bytes, tuple(fixes.values()), metal_bytes)


def _changes(cfg, shape: Shape):
    """One change at a time, smallest first: halving batch_size, then max_seq_length, until each fits."""
    if not cfg.grad_checkpoint:
        yield "grad_checkpoint: true", cfg.model_copy(update={"grad_checkpoint": True})
    if not cfg.sparse_logits:
        yield "sparse_logits: true", cfg.model_copy(update={"sparse_logits": True})
    batch = cfg.batch_size
    while batch > 1:
        batch //= 2
        yield f"batch_size: {batch}", cfg.model_copy(update={"batch_size": batch})
    length = cfg.max_seq_length
    while length > 128:
        length //= 2
        yield f"max_seq_length: {length}", cfg.model_copy(update={"max_seq_length": length})
    layers = trained_layers(cfg, shape)
    while layers > 1:
        layers //= 2
        yield f"num_layers: {layers}", cfg.model_copy(update={"num_layers": layers})


def read_model_facts(folder: Path) -> tuple[dict, str]:
    """config.json and the stored float dtype (the commonest among the safetensors' float
    tensors, read from their headers: no weights are loaded)."""
    config = json.loads((folder / "config.json").read_text())
    counts: dict[str, int] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, tensor in header.items():
            if name != "__metadata__" and tensor["dtype"] in ("F32", "BF16", "F16"):
                counts[tensor["dtype"]] = counts.get(tensor["dtype"], 0) + 1
    stored = max(counts, key=counts.get) if counts else "F16"
    return config, {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[stored]


def predicts_cpu() -> bool:
    """Whether MLX will compute on the CPU, guessed without loading MLX: Apple silicon has Metal."""
    return not (sys.platform == "darwin" and platform.machine() == "arm64")


def machine_memory() -> tuple[int, int | None]:
    """This machine's memory and, on Apple silicon, Metal's recommended working-set limit (the
    most the GPU should hold; MLX is loaded for it only there)."""
    import psutil

    total, metal = psutil.virtual_memory().total, None
    if not predicts_cpu():
        import mlx.core as mx

        metal = mx.metal.device_info().get("max_recommended_working_set_size")
    return total, metal


def model_folder(stage) -> tuple[Path | None, str]:
    """The stage's model folder without downloading anything; None and why when it is not here."""
    from engine.model.demo import SMOLLM2_ID
    from engine.model.gguf import SMOLLM2_MEMBER
    from engine.files import cache_root
    from engine.model.resolve import resolve_model

    name = stage.config.model
    if name == SMOLLM2_ID and not (cache_root() / "downloads" / Path(SMOLLM2_MEMBER).name).is_file():
        return None, f"{name} is not downloaded yet"
    where = resolve_model(stage)
    if where.local:
        return Path(where.path), ""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(where.path, "config.json")
    if isinstance(cached, str):
        return Path(cached).parent, ""
    return None, f"{where.path} is not in the Hugging Face cache"


def plan_for_stage(stage, machine: tuple[int, int | None] | None = None) -> tuple[MemoryPlan | None, str]:
    """The stage's plan on this machine (or on ``machine``: its memory and Metal's limit) and,
    without a plan, why not."""
    folder, why = model_folder(stage)
    if folder is None:
        return None, f"memory plan skipped: {why}"
    config, dtype = read_model_facts(folder)
    total, metal = machine or machine_memory()
    return plan_memory(stage.config, config, config.get("quantization"), total, stored_dtype=dtype,
                       on_cpu=predicts_cpu(), metal_bytes=metal), ""


def plan_lines(plan: MemoryPlan | None, note: str) -> list[str]:
    """The plan as ``tuner validate`` prints it."""
    if plan is None:
        return [f"# {note}"]
    lines = [f"# memory: {plan.summary()}"]
    if plan.fixes:
        lines.append(f"# would fit: {plan.fix_text()}")
    return lines
