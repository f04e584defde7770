"""The training loop: PLW loss, evaluation, checkpoints, and obedience to a Control.

It owns its loop (mlx-lm's ``train()`` draws to stdout and cannot pause) and reuses mlx-lm for
model loading, LoRA/DoRA layers, optimizers and schedules. It never prints: everything it has to
say is an event passed to ``emit`` and appended to the run's ``metrics.jsonl``. It runs the same
on the main thread (CLI) or a worker thread (TUI).

Units: a *step* is one batch (mlx-lm's "iteration"); ``iters``, ``steps_per_report``,
``steps_per_eval`` and ``save_every`` count steps. The optimizer updates once every
``grad_accumulation_steps`` steps, and learning-rate schedules (warmup included) count updates.

Under ``mlx.launch`` several processes run this loop together, data-parallel (see
:mod:`engine.training.distributed`): each trains on its share of every batch, and only rank 0 writes or
reports. Every collective sits at a point all ranks reach in the same order, and every decision
that ends or pauses the loop is taken from values all ranks share.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map

from engine import events as ev
from engine.data.batching import BatchStream, collate, total_steps
from engine.config import Stage, config_to_dict
from engine.config.checks import check_chain
from engine.runs.control import Control
from engine.levers.cpu_streams import RowStreams
from engine.data.sources import load_splits
from engine.levers.denormals import mlx_flushes_denormals
from engine.training.distributed import World
from engine.errors import UserError
from engine.loss import EvalTotals, eval_sums, plw_loss, rank_denominator
from engine.training.memory_guard import MemoryGuard
from engine.model.load import (
    count_parameters,
    fuse,
    load_base,
    load_trained_weights,
    setup_trainable,
    trainable_weights,
    write_adapter_config,
)
from engine.levers.platform_check import blas_notice, device_name
from engine.levers.process import prepare_process
from engine.levers.fast_attention import speed_up_attention
from engine.levers.fast_lora import speed_up_lora
from engine.levers.fast_silu import speed_up_mlps
from engine.training.flops import matmul_peak, training_flops_per_token
from engine.levers.linear_ce import eval_sums_fast, head_matches, plw_loss_fast, select_targets
from engine.files import atomic_save_safetensors, atomic_write_json, atomic_write_text
from engine.runs.folder import clear_process_record, link_next_stage, new_run_dir, write_process_record
from engine.runs.listing import EVAL_EXAMPLES
from engine.runs.metrics import MetricsWriter, fan_out
from engine.levers.shared_prefix import MIN_SHARED, common_prefix, shares_prefix
from engine.levers.sparse_tail import sparse_last_block
from engine.data.tokenize import Example, tokenize_split

Emit = Callable[[ev.Event], None]
STEP_SEED_STRIDE = 1_000_003
RANK_SEED_STRIDE = 2**40  # ranks draw different dropout masks for their different examples
OPTIMIZERS = {
    "adam": optim.Adam,
    "adamw": optim.AdamW,
    "muon": optim.Muon,
    "sgd": optim.SGD,
    "adafactor": optim.Adafactor,
}


@dataclass(frozen=True)
class StageResult:
    status: str  # completed | stopped
    run_dir: Path | None  # None on ranks other than 0, which write nothing
    adapter_dir: Path | None
    step: int


def build_optimizer(cfg) -> optim.Optimizer:
    from mlx_lm.tuner.utils import build_schedule

    lr = build_schedule(cfg.lr_schedule.model_dump()) if cfg.lr_schedule else cfg.learning_rate
    kwargs = dict(cfg.optimizer_config.get(cfg.optimizer, {}))
    return OPTIMIZERS[cfg.optimizer](learning_rate=lr, **kwargs)


def _finite_mean(total: float, n: float) -> float:
    return total / n if n else float("nan")


class Trainer:
    """One stage of a run: prepared up front, then driven step by step by :meth:`run`."""

    def __init__(self, stage: Stage, emit: Emit, control: Control | None = None, *, stages: int = 1,
                 init_weights: str | None = None, resume: Path | None = None, after: Path | None = None,
                 world: World | None = None):
        self.stage = stage
        self.world = world or World()
        self.cfg = stage.config
        self.control = control or Control()
        self._user_emit = emit
        self.stages = stages
        self.init_weights = init_weights
        self.resume = Path(resume) if resume else None  # a checkpoint folder to continue exactly
        self.after = after  # the folder of the chain's previous stage, pointed at this one's
        self.first_step = 1
        self.trained_tokens = 0
        self.pending_grad = None  # gradients accumulated since the last optimizer update
        self.best: tuple[float, int] | None = None  # (valid completion loss, step) of the best eval
        self.evals_since_best = 0
        self._compiled_eval = {}  # per shared prefix length, built on the first evaluation

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> None:
        cfg = self.cfg
        loaded = load_base(self.stage)
        self.model, self.tokenizer, self.model_path = loaded.model, loaded.tokenizer, loaded.path
        splits = load_splits(self.stage)
        if cfg.num_layers > len(self.model.layers):  # after the data, whose errors come first
            raise self.stage.error("num_layers", f"{cfg.num_layers} is more than the model's {len(self.model.layers)} layers")
        if cfg.batch_size % self.world.size:
            raise self.stage.error("batch_size", f"{cfg.batch_size} does not split evenly over {self.world.size} ranks; "
                                   f"use a multiple of {self.world.size}")
        self.notes = [ev.Notice(message=note) for note in loaded.notes]  # emitted once the run starts
        if (slow := blas_notice()) is not None:
            self.notes.append(ev.Notice(message=slow, level="warning"))
        if mx.default_device() == mx.cpu and mlx_flushes_denormals():
            self.notes.append(ev.Notice(message="denormal floats (below 1.2e-38) compute as zero: x86 CPUs "
                                        "run matmuls on them up to 150x slower"))
        prepare_process()

        self.notes.extend(ev.Notice(message=note) for note in splits.notes)
        self.valid_records = splits.valid
        self.train_set = self._tokenize("train", splits.train)
        if not self.train_set:
            raise self.stage.error("data", "no training example has a completion token left to learn")
        if cfg.val_batches == 0 and cfg.early_stopping_patience:
            raise self.stage.error("early_stopping_patience", "needs validation, and val_batches is 0 (no validation)")
        self.valid_set = self._tokenize("valid", splits.valid) if cfg.val_batches else []
        if not cfg.val_batches:
            self.notes.append(ev.Notice(message="no validation (val_batches: 0)"))
        self.test_set = self._tokenize("test", splits.test) if cfg.test else []
        if cfg.test and not self.test_set:
            raise self.stage.error("test", "test: true but the dataset has no test split")

        if cfg.fast_silu and (switched := speed_up_mlps(self.model)):
            self.notes.append(ev.Notice(message=f"the SiLU of {switched} MLPs uses a polynomial exponential "
                                        "(MLX's CPU exp is scalar; same values to float32 rounding)"))
        if cfg.fast_attention and (switched := speed_up_attention(self.model)):
            self.notes.append(ev.Notice(message=f"the softmax of {switched} attention layers uses a polynomial "
                                        "exponential (same values to float32 rounding)"))
        # seeded right before anything random (LoRA init, then dropout): loading a model may
        # itself draw from the global generator (the demo model is built on first use)
        mx.random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        setup_trainable(self.model, cfg)
        if cfg.fast_lora and (switched := speed_up_lora(self.model)):
            self.notes.append(ev.Notice(message=f"{switched} LoRA layers add their update inside the matmul "
                                        "(fewer passes over the outputs; same values to float32 rounding)"))
        if self.init_weights and self.world.is_main:  # the other ranks receive rank 0's weights
            load_trained_weights(self.model, self.init_weights)
            self.notes.append(ev.Notice(message=f"continuing from {self.init_weights}"))
        self.trainable, self.total_params = count_parameters(self.model)
        self.sparse = cfg.sparse_logits and head_matches(self.model)
        if cfg.sparse_logits and not self.sparse:
            self.notes.append(ev.Notice(message="this model's logits are not its head applied to its body; "
                                        "the loss computes logits at every position (sparse_logits off)"))
        if self.sparse and cfg.plw == 0 and sparse_last_block(self.model):  # at PLW > 0 every real position is read
            self.notes.append(ev.Notice(message="the last block computes its queries and MLP only at the positions "
                                        "the loss reads, when those are at most half (same values to float32 rounding)"))
        lengths = np.array([len(e) for e in self.train_set], dtype=np.float64)
        self.flops_per_token = training_flops_per_token(self.model, float((lengths**2).sum() / lengths.sum()))
        self.matmul_peak = matmul_peak()  # measured once per machine, then cached
        self.start_weights = {k: mx.array(v) for k, v in trainable_weights(self.model).items()}

        self.pad_id = self._pad_id()
        self.stream = BatchStream(self.train_set, cfg.batch_size, cfg.seed, self.pad_id, share=self.world.share)
        self.total = total_steps(len(self.train_set), cfg.batch_size, cfg.iters, cfg.epochs)
        if cfg.epochs is not None and cfg.evals_per_epoch:
            self.steps_per_eval = max(1, self.stream.per_epoch // cfg.evals_per_epoch)
        else:
            self.steps_per_eval = cfg.steps_per_eval
        self.optimizer = build_optimizer(cfg)
        # ranks on one machine would share its cores, and the split gives each stream a core of its own
        self.row_streams = RowStreams.plan(1 if self.world.distributed else cfg.cpu_streams, cfg.batch_size)
        if self.row_streams.split:
            self.notes.append(ev.Notice(message=(
                f"each batch runs as {self.row_streams.count} parts of its rows on {self.row_streams.count} CPU "
                f"streams, {self.row_streams.threads_each} BLAS thread(s) each, so MLX's one-thread element-wise "
                "work runs on every core (same loss and gradients to float32 rounding)")))
        # the model computes a shared prefix once where its form and the loss path allow (engine/levers/shared_prefix.py)
        self.can_share_prefix = (cfg.shared_prefix and self.sparse and not self.world.distributed
                                 and shares_prefix(self.model))
        self.shared_prefix = self._training_prefix()
        if self.shared_prefix:
            self.notes.append(ev.Notice(message=(
                f"the first {self.shared_prefix} tokens, the same in every training example, are computed once "
                "per batch part instead of once per example (same loss and gradients to float32 rounding)")))

        if not self.world.is_main:  # writes nothing; rank 0 sends what it reads in _start_together
            self.run_dir = self.adapter_dir = None
            self.emit = lambda event: None
            return
        if self.resume:
            self.run_dir = self.resume.parent.parent
            self._restore(self.resume)
        else:
            self.run_dir = new_run_dir(cfg.runs_dir, cfg.name, self.stage.path.stem)
        self.adapter_dir = Path(cfg.adapter_path) if cfg.adapter_path else self.run_dir / "adapters"
        self.adapter_dir.mkdir(parents=True, exist_ok=True)
        self.writer = MetricsWriter(self.run_dir)
        self.emit = fan_out(self.writer, self._user_emit)
        if not self.resume:
            import yaml

            resolved = config_to_dict(cfg)
            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
            write_adapter_config(self.adapter_dir, cfg, self.model_path, {"config_file": str(self.stage.path)})

    def _training_prefix(self) -> int:
        """How many leading tokens the training loss computes once per batch part: the training
        set's common prefix, where the model and the loss allow it (``can_share_prefix``: not with
        full logits or across ranks, where a rank's empty share is a row of padding) and the run
        does too: not with gradient checkpointing (the shared body has no checkpointed blocks) or
        dropout (the rows would share one draw), nor with one row per batch part (nothing to share).
        """
        cfg = self.cfg
        if (not self.can_share_prefix or cfg.grad_checkpoint or cfg.lora_parameters.dropout > 0
                or cfg.batch_size // self.row_streams.count < 2):
            return 0
        return self._common_prefix(self.train_set)

    def _common_prefix(self, examples: list[Example]) -> int:
        """The leading tokens all ``examples`` share, if enough to be worth sharing; else 0."""
        prefix = common_prefix([e.ids for e in examples])
        return prefix if prefix >= MIN_SHARED else 0

    def _restore(self, ckpt: Path) -> None:
        """Weights, optimizer state, data position and pending gradients of a checkpoint.

        Randomness needs no state: each step reseeds from (seed, step), so dropout after a
        resume draws what it would have drawn in an uninterrupted run.
        """
        from mlx.utils import tree_unflatten

        state = json.loads((ckpt / "state.json").read_text())
        load_trained_weights(self.model, ckpt / "adapters.safetensors")
        self.optimizer.state = tree_unflatten(list(mx.load(str(ckpt / "optimizer.safetensors")).items()))
        pending = ckpt / "pending_grad.safetensors"
        if pending.exists():  # back into the full tree the compiled step adds to
            from mlx.utils import tree_map_with_path

            saved = mx.load(str(pending))
            self.pending_grad = tree_map_with_path(
                lambda path, leaf: saved.get(path, leaf), self.model.trainable_parameters()
            )
        self.stream.seek(state["epoch"], state["batch_index"])
        self.first_step = state["step"] + 1
        self.trained_tokens = state["trained_tokens"]
        self.notes.append(ev.Notice(message=f"resumed from {ckpt} (step {state['step']})"))

    def _tokenize(self, name: str, records) -> list[Example]:
        if not records:
            return []
        split = tokenize_split(self.tokenizer, records, self.cfg.max_seq_length)
        if (line := split.summary(name, self.cfg.max_seq_length)) is not None:
            self.notes.append(ev.Notice(message=line, level="warning"))
        return split.examples

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
            if isinstance(candidate, int):
                return candidate
        return 0

    # ------------------------------------------------------------------ pieces of the loop
    def _compile_steps(self):
        """Two compiled functions: gradients (with their norm), then the update.

        Split so the loop can look at the loss and gradient norm before anything changes: a
        non-finite batch is skipped or stops the run while the weights are still good.
        """
        model, optimizer, plw, world = self.model, self.optimizer, self.cfg.plw, self.world
        accum = self.cfg.grad_accumulation_steps
        max_norm = self.cfg.max_grad_norm
        if self.sparse:
            prefix = self.shared_prefix
            value_and_grad = nn.value_and_grad(model, lambda m, inputs: plw_loss_fast(m, *inputs, shared_prefix=prefix))
        else:
            value_and_grad = nn.value_and_grad(model, lambda m, inputs: plw_loss(m, inputs[0], inputs[1], plw, *inputs[2:]))
        # the optimizer's state exists before tracing: created by the first update instead, it
        # would change the compiled functions' inputs and make every batch shape trace again
        optimizer.init(model.trainable_parameters())
        state = [model.state, optimizer.state, mx.random.state]

        split = self.row_streams

        @partial(mx.compile, inputs=state, outputs=state)
        def gradients(parts, prev_grad, do_update):
            (loss, aux), grad = split.add_up(lambda inputs: value_and_grad(model, inputs), parts)
            loss, aux = world.sum(loss) / world.size, world.sum(aux)  # the whole batch's, on every rank
            if prev_grad is not None:
                grad = tree_map(lambda a, b: a + b, grad, prev_grad)
            if not do_update:
                return loss, aux, grad, mx.array(0.0)
            grad = world.sum_tree(grad)  # ranks accumulate their own shares; combined once per update
            if accum * world.size > 1:
                grad = tree_map(lambda g: g / (accum * world.size), grad)
            norm = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for _, g in tree_flatten(grad)))
            return loss, aux, grad, norm

        @partial(mx.compile, inputs=state, outputs=state)
        def update(grad, norm):
            if max_norm is not None:
                scale = mx.minimum(max_norm / (norm + 1e-6), 1.0)
                grad = tree_map(lambda g: g * scale, grad)
            optimizer.update(model, grad)

        self._state = state
        return gradients, update

    def _loss_inputs(self, batch) -> list[tuple[mx.array, ...]]:
        """What the compiled step's loss takes, one tuple per part of the rows (see
        :class:`RowStreams`): the rows, plus the selected targets when sparse, plus, on one of
        several ranks or for one of several parts, the whole batch's loss denominator."""
        plw, world = self.cfg.plw, self.world
        row_parts = self.row_streams.parts(batch.ids.shape[0])
        denominator = ()
        if world.distributed or len(row_parts) > 1:
            denominator = (rank_denominator([e.roles for e in batch.group], plw, world.size),)
        parts = []
        for rows in row_parts:
            ids, roles = batch.ids[rows], batch.roles[rows]
            if not self.sparse:
                inputs = (mx.array(ids), mx.array(roles))
            else:
                inputs = (mx.array(ids), *select_targets(roles, plw).arrays())
            parts.append(inputs + denominator)
        return parts

    def update_norm(self) -> float:
        total = 0.0
        for name, value in trainable_weights(self.model).items():
            total += mx.sum(mx.square(value.astype(mx.float32) - self.start_weights[name])).item()
        return math.sqrt(total)

    def evaluate(self, examples: list[Example], max_batches: int) -> tuple[EvalTotals, list[dict]]:
        """Deterministic pass over the first ``max_batches`` batches (-1: all), length-sorted.

        Returns the totals and one row per example (its losses and token counts), from which a
        person can find the examples the model gets most wrong. Several ranks score their shares
        of each batch and gather the rows, so every rank ends with the same totals.
        """
        size = self.cfg.batch_size
        subset = examples if max_batches == -1 else examples[: max_batches * size]
        subset = sorted(subset, key=len)
        totals, rows = EvalTotals(), []
        prefix = self._common_prefix(subset) if self.can_share_prefix else 0  # cheap: numpy over the ids
        self.model.eval()
        for i in range(0, len(subset), size):
            chunk = subset[i : i + size]
            share = self.world.share(chunk)
            batch = collate(share, self.pad_id)
            ids, roles = mx.array(batch.ids), mx.array(batch.roles)
            sums = self._eval_sums(ids, roles, prefix)
            sums = self._gather_rows(sums[: len(share)], len(chunk))
            totals.add(sums, len(chunk))
            for example, (p_ce, p_n, c_ce, c_n, c_ok) in zip(chunk, sums.tolist()):
                rows.append({
                    "origin": example.origin,
                    "prompt_tokens": int(p_n),
                    "completion_tokens": int(c_n),
                    "prompt_loss": p_ce / p_n if p_n else None,
                    "completion_loss": c_ce / c_n if c_n else None,
                    "completion_accuracy": c_ok / c_n if c_n else None,
                })
        self.model.train()
        return totals, rows

    def _eval_sums(self, ids: mx.array, roles: mx.array, prefix: int) -> mx.array:
        """Validation's per-example sums, compiled (once per batch shape). Eager, each element-wise
        op is its own pass over memory, and the CPU's polynomial exponentials are a dozen of them:
        compiled, a SmolLM2 validation batch took a third of the time. ``prefix``: the leading
        tokens every row shares, computed once (engine/levers/shared_prefix.py); one compiled function each."""
        if prefix not in self._compiled_eval:  # prefix is 0 unless sparse (can_share_prefix)
            sums = partial(eval_sums_fast, shared_prefix=prefix) if self.sparse else eval_sums
            self._compiled_eval[prefix] = mx.compile(partial(sums, self.model), inputs=self.model.state)
        return self._compiled_eval[prefix](ids, roles)

    def _gather_rows(self, rows: mx.array, n: int) -> mx.array:
        """All ranks' per-example rows of one batch of ``n`` examples, in the batch's order
        (example j is row j // size of rank j % size)."""
        world = self.world
        if not world.distributed:
            return rows
        width = -(-n // world.size)
        padded = mx.concatenate([rows, mx.zeros((width - rows.shape[0], rows.shape[1]), rows.dtype)])
        gathered = world.gather(padded)
        order = mx.array([(j % world.size) * width + j // world.size for j in range(n)])
        return gathered[order]

    def _eval_event(self, step: int, split: str, examples, batches) -> None:
        tic = time.perf_counter()
        t, rows = self.evaluate(examples, batches)
        if split == "valid" and self.world.is_main:  # the latest validation, per example, worst completion loss first
            rows.sort(key=lambda r: -(r["completion_loss"] or 0.0))
            atomic_write_json(self.run_dir / EVAL_EXAMPLES, {"step": step, "examples": rows})
        self.emit(
            ev.EvalReport(
                step=step,
                split=split,
                prompt_loss=t.prompt_loss,
                completion_loss=t.completion_loss,
                full_loss=t.full_loss,
                weighted_loss=t.weighted_loss(self.cfg.plw),
                completion_accuracy=t.completion_accuracy,
                completion_perplexity=math.exp(min(t.completion_loss, 50.0)),
                prompt_tokens=t.prompt_tokens,
                completion_tokens=t.completion_tokens,
                examples=t.examples,
                seconds=time.perf_counter() - tic,
            )
        )
        if split == "valid":
            self._track_best(step, t.completion_loss)
            self._samples(step)

    def _track_best(self, step: int, loss: float) -> None:
        """Checkpoint every new best validation completion loss and count evals since one."""
        if not math.isfinite(loss):
            return
        if self.best is None or loss < self.best[0]:
            self.best, self.evals_since_best = (loss, step), 0
            if step > 0:
                self.save(step, "best")
                if self.world.is_main:
                    atomic_write_json(self.run_dir / "checkpoints" / "best.json", {"step": step, "completion_loss": loss, "checkpoint": f"step-{step:07d}"})
        else:
            self.evals_since_best += 1

    @property
    def patience_exhausted(self) -> bool:
        patience = self.cfg.early_stopping_patience
        return patience is not None and self.evals_since_best >= patience

    def _samples(self, step: int) -> None:
        """Greedy generations for the first validation prompts, to read beside the numbers."""
        n = self.cfg.samples_per_eval
        if not n or not self.world.is_main:
            return
        from mlx_lm.generate import generate

        self.model.eval()
        chats = [r for r in self.valid_records if r.messages and r.messages[-1]["role"] == "assistant"]
        for record in chats[:n]:
            prompt_messages = list(record.messages[:-1])
            prompt_ids = self.tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True)
            text = generate(self.model, self.tokenizer, prompt_ids, max_tokens=self.cfg.sample_max_tokens)
            self.emit(
                ev.SampleGenerated(
                    step=step,
                    prompt=prompt_messages[-1]["content"],
                    completion=text,
                    reference=record.messages[-1]["content"],
                )
            )
        self.model.train()

    def save(self, step: int, reason: str) -> None:
        """Adapters where mlx-lm expects them, plus a full checkpoint for exact resume.

        ``adapters.safetensors`` is always the latest weights; periodic saves also keep
        ``{step:07d}_adapters.safetensors`` beside it, as mlx-lm does. The checkpoint folder holds
        the weights, the optimizer state and the data/RNG position. Every rank calls it (the
        ranks' shares of pending gradients are summed into the checkpoint); rank 0 writes.
        """
        pending = None
        if self.pending_grad is not None:  # a rank's loss carries a factor of the ranks (rank_denominator)
            pending = tree_map(lambda g: g / self.world.size, self.world.sum_tree(self.pending_grad))
        mx.eval(pending)  # now, on every rank: a collective left lazy on one rank would never meet its peers
        if not self.world.is_main:
            return
        weights = trainable_weights(self.model)
        mx.eval(weights)
        atomic_save_safetensors(self.adapter_dir / "adapters.safetensors", weights)
        if reason == "periodic":
            atomic_save_safetensors(self.adapter_dir / f"{step:07d}_adapters.safetensors", weights)
        ckpt = self.run_dir / "checkpoints" / f"step-{step:07d}"
        atomic_save_safetensors(ckpt / "adapters.safetensors", weights)
        opt_state = dict(tree_flatten(self.optimizer.state))
        atomic_save_safetensors(ckpt / "optimizer.safetensors", opt_state)
        if pending is not None:  # saved between two updates of an accumulation
            atomic_save_safetensors(ckpt / "pending_grad.safetensors", dict(tree_flatten(pending)))
        atomic_write_json(
            ckpt / "state.json",
            {
                "step": step,
                "epoch": self.stream.epoch,
                "batch_index": self.stream.index,
                "seed": self.cfg.seed,
                "trained_tokens": self.trained_tokens,
                "config": str(self.stage.path),
            },
        )
        atomic_write_text(self.run_dir / "checkpoints" / "latest", ckpt.name + "\n")
        self.emit(ev.CheckpointSaved(step=step, path=str(self.adapter_dir), reason=reason))

    # ------------------------------------------------------------------ the loop
    def run(self) -> StageResult:
        self.prepare()  # user errors surface here, before a run folder is half-written
        main = self.world.is_main
        if main:
            write_process_record(self.run_dir)  # from here on other processes see it live
            if self.after is not None:
                link_next_stage(self.after, self.run_dir)
            self.control.watch(self.run_dir)  # requests from other processes: tuner control, an attached app
        try:
            self._start_together()
            return self._loop()
        except Exception as e:
            self.emit(ev.RunFailed(step=getattr(self, "step_done", 0), error=f"{type(e).__name__}: {e}"))
            raise
        finally:
            if main:
                self.writer.close()
                clear_process_record(self.run_dir)

    def _start_together(self) -> None:
        """Give every rank rank 0's starting point, which only rank 0 may have been able to read:
        the trainable weights and, when resuming, the optimizer state and the data position.

        A rank other than 0 starts a resumed run with zero pending gradients: the checkpoint holds
        the whole batch's, and rank 0 carries them (scaled like a rank's own, see :meth:`save`).
        """
        world = self.world
        if not world.distributed:
            return
        self.model.update(world.from_main(self.model.trainable_parameters()))
        mx.eval(self.model.trainable_parameters())  # collectives run now, in the same order everywhere
        if not self.resume:
            return
        if not world.is_main:
            self.optimizer.init(self.model.trainable_parameters())
        self.optimizer.state = world.from_main(self.optimizer.state)
        mx.eval(self.optimizer.state)
        step, epoch, index, tokens, pending = world.from_main_ints(
            [self.first_step, self.stream.epoch, self.stream.index, self.trained_tokens, self.pending_grad is not None]
        )
        if world.is_main:
            if pending:
                self.pending_grad = tree_map(lambda g: g * world.size, self.pending_grad)
        else:
            self.first_step, self.trained_tokens = step, tokens
            self.stream.seek(epoch, index)
            if pending:
                self.pending_grad = tree_map(mx.zeros_like, self.model.trainable_parameters())

    def _loop(self) -> StageResult:
        cfg, emit, control = self.cfg, self.emit, self.control
        if mx.metal.is_available():
            from mlx_lm.utils import maybe_set_recommended_wired_limit

            maybe_set_recommended_wired_limit()
        emit(
            ev.RunStarted(
                run_dir=str(self.run_dir),
                adapter_dir=str(self.adapter_dir),
                stage=self.stage.index + 1,
                stages=self.stages,
                config_file=str(self.stage.path),
                model=cfg.model,
                fine_tune_type=cfg.fine_tune_type,
                prompt_loss_weight=cfg.plw,
                total_steps=self.total,
                steps_per_epoch=self.stream.per_epoch,
                train_examples=len(self.train_set),
                valid_examples=len(self.valid_set),
                trainable_params=self.trainable,
                total_params=self.total_params,
                device=device_name(),
                compute_dtype=load_dtype_label(self.model),
                config=config_to_dict(cfg),
                resumed_from=self.first_step - 1,
                flops_per_token=self.flops_per_token,
                matmul_peak_flops=self.matmul_peak,
                pid=os.getpid(),
                world_size=self.world.size,
            )
        )
        for note in self.notes:
            emit(note)

        if cfg.grad_checkpoint:
            checkpoint_layers(self.model)
        gradients, update = self._compile_steps()
        bad_batches = 0
        guard = MemoryGuard(cfg.memory_limit_percent, cfg.swap_growth_gb)
        accum = cfg.grad_accumulation_steps
        self.model.train()
        self.step_done = self.first_step - 1
        window = new_window()
        grad_norm = float("nan")
        started = time.perf_counter()
        paused_for = 0.0
        if self.valid_set and not self.resume:
            self._eval_event(0, "valid", self.valid_set, cfg.val_batches)

        status, stop_reason = "completed", ""
        for step in range(self.first_step, self.total + 1):
            stop, paused = self._between_steps(step - 1)
            paused_for += paused
            if stop:
                status = "stopped"
                break
            tic = time.perf_counter()
            batch = self.stream.next()
            do_update = step % accum == 0 or step == self.total
            # dropout depends on (seed, step, rank) only
            mx.random.seed(cfg.seed * STEP_SEED_STRIDE + step + self.world.rank * RANK_SEED_STRIDE)
            loss, aux, grad, norm = gradients(self._loss_inputs(batch), self.pending_grad, do_update)
            with self.row_streams.running():
                mx.eval(self._state, loss, aux, grad, norm)
            if not (math.isfinite(loss.item()) and math.isfinite(norm.item())):
                bad_batches += 1
                what = f"non-finite {'loss' if not math.isfinite(loss.item()) else 'gradient norm'} at step {step}"
                if bad_batches > cfg.skip_nonfinite_batches:
                    status, stop_reason = "diverged", what
                    break
                emit(ev.Notice(message=f"{what}: batch skipped ({bad_batches} of {cfg.skip_nonfinite_batches} allowed)", level="warning"))
                self.pending_grad = None  # the accumulation window restarts without it
                self.step_done = step
                continue
            if do_update:
                update(grad, norm)
                mx.eval(self._state)
                self.pending_grad = None
            else:
                self.pending_grad = grad
            self.step_done = step
            window["loss"] += loss.item()
            window["aux"] += np.array(aux.tolist())
            window["steps"] += 1
            window["tokens"] += batch.group_tokens
            window["rank_tokens"] += batch.tokens
            window["positions"] += batch.ids.size
            window["seconds"] += time.perf_counter() - tic
            self.trained_tokens += batch.group_tokens
            if do_update:
                grad_norm = norm.item()

            if step % cfg.steps_per_report == 0 or step == self.total:
                self._report(step, window, grad_norm, time.perf_counter() - started - paused_for)
                window = new_window()
            if self.valid_set and (step % self.steps_per_eval == 0 or step == self.total):
                self._eval_event(step, "valid", self.valid_set, cfg.val_batches)
            if step % cfg.save_every == 0 and step != self.total:
                self.save(step, "periodic")
            pressure = guard.check()
            if self.world.any(pressure is not None) and step != self.total:
                pressure = pressure or "memory pressure on another rank"
                self.save(step, "memory")
                emit(ev.Notice(message=f"{pressure}: checkpoint saved at step {step}", level="warning"))
                if not control.pause_on_memory_pressure:
                    status, stop_reason = "stopped", pressure
                    break
                control.pause()
            if self.patience_exhausted and step != self.total:
                best_loss, best_step = self.best
                status = "early_stopped"
                stop_reason = (f"no better validation completion loss in {cfg.early_stopping_patience} evaluations; "
                               f"best {best_loss:.4f} at step {best_step} (checkpoints/step-{best_step:07d})")
                break

        final_reason = {"completed": "final", "diverged": "diverged"}.get(status, "stopped")
        self.save(self.step_done, final_reason)
        if status == "completed" and self.test_set:
            self._eval_event(self.step_done, "test", self.test_set, cfg.test_batches)
        fused = ""
        if cfg.fuse and status == "completed" and self.world.is_main:
            fused = str(fuse(self.model_path, self.adapter_dir, self.run_dir / "fused"))
        emit(
            ev.RunFinished(
                step=self.step_done,
                status=status,
                adapter_dir=str(self.adapter_dir),
                elapsed=time.perf_counter() - started,
                fused_dir=fused,
                message=stop_reason + ("; the weights saved are the last finite ones" if status == "diverged" else ""),
            )
        )
        return StageResult(status, self.run_dir, self.adapter_dir, self.step_done)

    def _between_steps(self, step: int) -> tuple[bool, float]:
        """Act on the requests that came in during the last step: save, eval, and pause (still
        serving save and eval requests while paused). Returns (stop, seconds paused).

        Every rank calls this after every step and, while paused, once per turn of the wait; the
        requests come from :meth:`World.agree`, so all ranks save, evaluate, pause and stop together.
        """
        stop, pause, save, evaluate = self._requests()
        tic = time.perf_counter()
        if pause and not stop:
            self.emit(ev.StateChanged(state="paused", step=step))
        was_paused = pause and not stop
        while True:
            if save:
                self.save(step, "requested")
            if evaluate and self.valid_set:
                self._eval_event(step, "valid", self.valid_set, self.cfg.val_batches)
            if not pause or stop:
                break
            if self.world.is_main:
                self.control.wait_for_resume(0.2)
            else:  # only rank 0 is paused and resumed; the others look again with it
                time.sleep(0.2)
            stop, pause, save, evaluate = self._requests()
        if not was_paused:
            return stop, 0.0
        self.emit(ev.StateChanged(state="stopping" if stop else "running", step=step))
        return stop, time.perf_counter() - tic

    def _requests(self) -> tuple[bool, bool, bool, bool]:
        """(stop, pause, save, eval) as every rank will act on them."""
        control = self.control
        control.poll()
        return self.world.agree(control.stopping, control.paused, control.take_save(), control.take_eval())

    def _report(self, step: int, window: dict, grad_norm: float, elapsed: float) -> None:
        wsum, p_ce, p_n, c_ce, c_n = window["aux"]
        tokens_per_second = window["tokens"] / max(window["seconds"], 1e-9)
        per_rank = self.world.gather(
            mx.array([[window["rank_tokens"], window["positions"], window["seconds"]]], dtype=mx.float32)
        ).tolist()
        rank_speeds = tuple(tokens / max(seconds, 1e-9) for tokens, _, seconds in per_rank)
        real_share = sum(row[0] for row in per_rank) / max(sum(row[1] for row in per_rank), 1)
        peak = self.matmul_peak * self.world.size
        self.emit(
            ev.TrainReport(
                step=step,
                total_steps=self.total,
                epoch=self.stream.epoch_progress(),
                loss=window["loss"] / max(window["steps"], 1),
                prompt_loss=_finite_mean(p_ce, p_n),
                completion_loss=_finite_mean(c_ce, c_n),
                learning_rate=float(self.optimizer.learning_rate.item()),
                grad_norm=grad_norm,
                update_norm=self.update_norm(),
                tokens_per_second=tokens_per_second,
                trained_tokens=self.trained_tokens,
                peak_memory_gb=mx.get_peak_memory() / 1e9,
                active_memory_gb=mx.get_active_memory() / 1e9,
                cache_memory_gb=mx.get_cache_memory() / 1e9,
                elapsed=elapsed,
                padding_efficiency=real_share,
                mfu=tokens_per_second * self.flops_per_token / peak if peak else math.nan,
                rank_tokens_per_second=rank_speeds if self.world.distributed else (),
            )
        )


def new_window() -> dict:
    """Sums over the steps since the last training report."""
    return {"loss": 0.0, "aux": np.zeros(5), "steps": 0, "tokens": 0, "rank_tokens": 0, "positions": 0, "seconds": 0.0}


def checkpoint_layers(model: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass.

    mlx-lm's ``grad_checkpoint`` replaces ``__call__`` on the block's *class*, so a second run in
    the same process (the app trains many) would wrap it again; the class is marked once done.
    """
    from mlx_lm.tuner.trainer import grad_checkpoint

    block = type(model.layers[0])
    if not getattr(block, "_tuner_checkpointed", False):
        grad_checkpoint(model.layers[0])
        block._tuner_checkpointed = True


def load_dtype_label(model: nn.Module) -> str:
    dtypes = {str(v.dtype).split(".")[-1] for _, v in tree_flatten(model.parameters())}
    return "/".join(sorted(dtypes))


# ---------------------------------------------------------------------- chains of stages
def run_chain(stages: list[Stage], emit: Emit, control: Control | None = None,
              world: World | None = None) -> list[StageResult]:
    """Run the stages in order, each starting from the previous stage's trained weights.

    With several ranks only rank 0 reads those weights (the others have no run folders) and
    hands them on when the stage starts.
    """
    check_chain(stages)
    control = control or Control()
    world = world or World()
    results: list[StageResult] = []
    for stage in stages:
        init = stage.config.resume_adapter_file
        if results and "resume_adapter_file" not in stage.explicit:
            init = str(results[-1].adapter_dir / "adapters.safetensors") if world.is_main else None
        if init and world.is_main and not Path(init).exists():
            raise stage.error("resume_adapter_file", f"no such file: {init}")
        after = results[-1].run_dir if results else None
        result = Trainer(stage, emit, control, stages=len(stages), init_weights=init, after=after, world=world).run()
        results.append(result)
        if result.status != "completed":
            break
    return results


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint folder named by ``checkpoints/latest`` (written last, atomically)."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        raise UserError(f"{run_dir}: no checkpoint to resume from")
    return pointer.parent / pointer.read_text().strip()


def resume_run(run_dir: Path, emit: Emit, control: Control | None = None, world: World | None = None) -> StageResult:
    """Continue a run from its latest checkpoint, in its own folder, with its own config."""
    from engine.config import load_stages

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir}: not a run folder (it has no config.yaml)")
    stage = load_stages([run_dir / "config.yaml"])[0]
    return Trainer(stage, emit, control, resume=latest_checkpoint(run_dir), world=world).run()
