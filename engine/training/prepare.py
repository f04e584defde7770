"""A stage made ready to train: model, tokenizer, data, levers, loss path, optimizer and batches.

Everything a person can get wrong in a config or a dataset is found here, before a run folder is
made, so a mistake never leaves a half-written run behind. Nothing here writes to disk (the
matmul peak's cache aside) or emits: what there is to tell is kept in
:attr:`PreparedStage.notes` for the run to emit once it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear
from mlx_lm.tuner.utils import build_schedule

from engine import events as ev
from engine.config import Stage
from engine.data.batching import BatchStream, total_steps
from engine.data.sources import load_splits
from engine.data.tokenize import Example, tokenize_split
from engine.levers.plan import ComputePlan, plan_compute
from engine.levers.platform_check import blas_notice
from engine.levers.process import prepare_process
from engine.model.load import (
    count_parameters,
    load_base,
    load_trained_weights,
    setup_trainable,
    trainable_weights,
)
from engine.training.distributed import World
from engine.training.flops import matmul_peak, training_flops_per_token
from engine.training.loss_path import LossPath, choose_loss

OPTIMIZERS = {
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "muon": optim.Muon,
    "sgd": optim.SGD,
    "adafactor": optim.Adafactor,
}


@dataclass(frozen=True)
class StageData:
    """The stage's examples, tokenised."""

    train: list[Example]
    valid: list[Example]  # empty with val_batches: 0
    test: list[Example]  # empty unless test: true
    valid_records: list  # the validation records as read, whose chats prompt the samples
    pad_id: int


@dataclass(frozen=True)
class ModelFigures:
    """Sizes the run reports: parameter counts and the two halves of MFU (engine/training/flops.py)."""

    trainable_params: int
    total_params: int
    flops_per_token: float
    matmul_peak: float


@dataclass(frozen=True)
class PreparedStage:
    """One stage, ready for its first step. The model, optimizer and stream are the live objects
    training goes on to change; the record itself is not reassigned."""

    stage: Stage
    model: nn.Module
    tokenizer: object
    model_path: str  # the local folder the base weights came from
    data: StageData
    levers: ComputePlan
    loss: LossPath
    optimizer: optim.Optimizer
    stream: BatchStream
    total_steps: int
    steps_per_eval: int
    figures: ModelFigures
    start_weights: dict[str, mx.array]  # the trainable weights before the first step, for the update norm
    notes: tuple[ev.Notice, ...]  # emitted once the run starts

    @property
    def cfg(self):
        return self.stage.config


def build_optimizer(cfg) -> optim.Optimizer:
    lr = build_schedule(cfg.lr_schedule.model_dump()) if cfg.lr_schedule else cfg.learning_rate
    kwargs = dict(cfg.optimizer_config.get(cfg.optimizer, {}))
    return OPTIMIZERS[cfg.optimizer](learning_rate=lr, **kwargs)


def prepare_stage(stage: Stage, world: World, init_weights: str | None = None,
                  evaluate_only: bool = False) -> PreparedStage:
    """Load, check, tokenise and switch everything for ``stage``; raises the user's errors.

    ``init_weights``: trained weights to start from (a chain's previous stage); only rank 0 reads
    them, and the others receive them when the run starts. ``evaluate_only`` (``train: false``):
    no steps, and the test split is read whenever there is one.
    """
    cfg = stage.config
    prepare_process()  # before MLX starts its threads (the command line and the app did it already)
    loaded = load_base(stage)
    model, tokenizer = loaded.model, loaded.tokenizer
    splits = load_splits(stage)
    if cfg.num_layers > len(model.layers):  # after the data, whose errors come first
        raise stage.error("num_layers", f"{cfg.num_layers} is more than the model's {len(model.layers)} layers")
    check_adapters(stage, model)
    notes = [ev.Notice(message=note) for note in loaded.notes]
    if (slow := blas_notice()) is not None:  # a problem to fix, not only a lever that is off
        notes.append(ev.Notice(message=slow, level="warning"))
    notes.extend(ev.Notice(message=note) for note in splits.notes)
    data = _tokenize_splits(stage, tokenizer, splits, notes, evaluate_only)

    # seeded right before anything random (LoRA init, then dropout): loading a model may
    # itself draw from the global generator (the demo model is built on first use)
    mx.random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    setup_trainable(model, cfg)
    if init_weights and world.is_main:  # the other ranks receive rank 0's weights
        load_trained_weights(model, init_weights)
        notes.append(ev.Notice(message=f"continuing from {init_weights}"))
    levers = plan_compute(model, cfg, world.size, [e.ids for e in data.train])
    stream = BatchStream(data.train, cfg.batch_size, cfg.seed, data.pad_id, share=world.share)
    # evals_per_epoch counts in epochs of this data whether the length is in epochs or iters
    steps_per_eval = max(1, stream.per_epoch // cfg.evals_per_epoch) if cfg.evals_per_epoch else cfg.steps_per_eval
    return PreparedStage(
        stage=stage,
        model=model,
        tokenizer=tokenizer,
        model_path=loaded.path,
        data=data,
        levers=levers,
        loss=choose_loss(cfg.plw, world.size, levers),
        optimizer=build_optimizer(cfg),
        stream=stream,
        total_steps=0 if evaluate_only else total_steps(len(data.train), cfg.batch_size, cfg.iters, cfg.epochs),
        steps_per_eval=steps_per_eval,
        figures=_figures(model, data.train),
        start_weights={k: mx.array(v) for k, v in trainable_weights(model).items()},
        notes=tuple(notes),
    )


# the layer types mlx-lm's linear_to_lora_layers can wrap (besides any with a to_lora method)
ADAPTABLE = (nn.Linear, nn.QuantizedLinear, SwitchLinear, QuantizedSwitchLinear, nn.Embedding, nn.QuantizedEmbedding)
SHOWN = 12  # adaptable layer names listed in a message


def check_adapters(stage: Stage, model: nn.Module) -> None:
    """Refuse LoRA keys that mlx-lm would fail on, or skip silently, once the model is known: a
    key that names no layer, one that names a layer LoRA cannot wrap, a rank above the smallest
    wrapped layer's dimensions (which only costs time: the update cannot have a higher rank)."""
    cfg = stage.config
    if cfg.fine_tune_type == "full":
        return
    blocks = model.layers[-(len(model.layers) if cfg.num_layers == -1 else cfg.num_layers):]
    # mlx-lm matches a key against the names inside each trained block, then the model's own names
    in_blocks = {name: module for block in blocks for name, module in block.named_modules() if name}
    everywhere = {**in_blocks, **{name: module for name, module in model.named_modules() if name}}
    in_each_block = sorted(name for name, module in in_blocks.items() if _adaptable(module))  # mlx-lm's default
    adaptable = in_each_block + sorted(name for name, module in everywhere.items()
                                       if name not in in_blocks and ".layers." not in name and _adaptable(module))
    listed = ", ".join(adaptable[:SHOWN]) + (f" and {len(adaptable) - SHOWN} more" if len(adaptable) > SHOWN else "")
    keys = cfg.lora_parameters.keys
    for key in keys or ():
        if key not in everywhere:
            raise stage.error("lora_parameters.keys", f"{key} names no layer of the model's trained blocks; "
                              f"the layers LoRA can wrap: {listed}")
        if not _adaptable(everywhere[key]):
            raise stage.error("lora_parameters.keys", f"{key} is a {type(everywhere[key]).__name__}, which LoRA "
                              f"cannot wrap; the layers it can: {listed}")
        if cfg.fine_tune_type == "dora" and isinstance(everywhere[key], (SwitchLinear, QuantizedSwitchLinear)):
            raise stage.error("fine_tune_type", f"dora cannot wrap {key} (a mixture-of-experts layer); use lora")
    wrapped = keys if keys is not None else in_each_block
    sizes = {name: dims for name in wrapped if (dims := _dims(everywhere[name])) is not None}
    if sizes and cfg.lora_parameters.rank > min(map(min, sizes.values())):
        name = min(sizes, key=lambda n: min(sizes[n]))
        rows, cols = sizes[name]
        raise stage.error("lora_parameters.rank", f"{cfg.lora_parameters.rank} is more than {name} "
                          f"({rows}x{cols}) allows: use at most {min(rows, cols)}, a higher rank only costs time")


def _adaptable(module: nn.Module) -> bool:
    return hasattr(module, "to_lora") or isinstance(module, ADAPTABLE)


def _dims(module: nn.Module) -> tuple[int, int] | None:
    """A wrappable layer's two matrix dimensions (a quantized weight's packed columns unpacked)."""
    weight = getattr(module, "weight", None)
    if weight is None or weight.ndim < 2:
        return None
    rows, cols = weight.shape[-2:]
    bits = getattr(module, "bits", None)
    return rows, cols * 32 // bits if isinstance(bits, int) and bits else cols


def _tokenize_splits(stage: Stage, tokenizer, splits, notes: list[ev.Notice], evaluate_only: bool) -> StageData:
    """The splits as token ids and roles; the config errors only the data can show."""
    cfg = stage.config

    def tokenize(name: str, records) -> list[Example]:
        if not records:
            return []
        split = tokenize_split(tokenizer, records, cfg.max_seq_length)
        if (line := split.summary(name, cfg.max_seq_length)) is not None:
            notes.append(ev.Notice(message=line, level="warning"))
        return split.examples

    train = tokenize("train", splits.train)
    if not train:
        raise stage.error("data", "no training example has a completion token left to learn")
    valid = tokenize("valid", splits.valid) if cfg.val_batches else []
    if not cfg.val_batches:
        notes.append(ev.Notice(message="no validation (val_batches: 0)"))
    test = tokenize("test", splits.test) if cfg.test or evaluate_only else []
    if cfg.test and not test:
        raise stage.error("test", "test: true but the dataset has no test split")
    if evaluate_only and not (valid or test):
        raise stage.error("train", "false evaluates the valid and test splits, and there is neither: "
                          "the data has no test split and val_batches is 0")
    return StageData(train, valid, test, splits.valid, _pad_id(tokenizer))


def _pad_id(tokenizer) -> int:
    for candidate in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if isinstance(candidate, int):
            return candidate
    return 0


def _figures(model: nn.Module, train: list[Example]) -> ModelFigures:
    trainable, total = count_parameters(model)
    lengths = np.array([len(e) for e in train], dtype=np.float64)
    return ModelFigures(
        trainable_params=trainable,
        total_params=total,
        flops_per_token=training_flops_per_token(model, float((lengths**2).sum() / lengths.sum())),
        matmul_peak=matmul_peak(),  # measured once per machine, then cached
    )
