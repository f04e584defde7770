"""The compute plan: every lever of a run decided in one place, each with on/off and the reason.

A lever changes how a step is computed, never what it computes. Which ones apply depends on the
device (the CPU levers make up for MLX's CPU backend: scalar ``exp``, one-thread element-wise
work, Intel's slow denormals), on the model (a probe must show the switched layer computes what
the model's own does), on the config (each lever has a switch) and on the ranks (data-parallel
ranks on one machine share its cores); ``compute_plan: gpu`` turns the CPU levers off on the CPU
too, so a machine without a GPU runs (and its tests check) what Metal and CUDA run.
:func:`plan_compute` looks at all four once, switches the layers that take a lever, and returns
a :class:`ComputePlan`: the values training reads (sparse logits on? the shared prefix's length,
the row streams) and one :class:`LeverChoice` per lever, which the run-started event carries to
the CLI, the app and ``metrics.jsonl``.

Where each lever lives: ``linear_ce`` (sparse logits), ``sparse_tail`` (sparse last block),
``shared_prefix``, ``fast_silu``, ``fast_attention``, ``fast_lora``, ``cpu_streams``, ``denormals``,
``grad_checkpoint`` and ``platform_check`` (the BLAS), all in this package; ``swap`` holds the
probe-and-swap step the layer levers share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.nn as nn
import numpy as np

from engine.events import LeverChoice
from engine.levers.cpu_streams import RowStreams
from engine.levers.denormals import mlx_flushes_denormals
from engine.levers.device import on_cpu
from engine.levers.fast_attention import speed_up_attention
from engine.levers.fast_lora import speed_up_lora
from engine.levers.fast_silu import speed_up_mlps
from engine.levers.grad_checkpoint import checkpoint_layers
from engine.levers.linear_ce import head_matches
from engine.levers.platform_check import blas_notice
from engine.levers.process import prepare_process
from engine.levers.shared_prefix import MIN_SHARED, common_prefix, shares_prefix
from engine.levers.sparse_tail import sparse_last_block


@dataclass(frozen=True)
class ComputePlan:
    """What :func:`plan_compute` decided; training reads its levers from here and nowhere else."""

    choices: tuple[LeverChoice, ...]
    sparse_logits: bool  # the loss computes logits only at the positions it reads (engine/levers/linear_ce.py)
    shared_prefix: int  # leading tokens the training loss computes once per batch part; 0: none
    can_share_prefix: bool  # whether validation may compute its own batches' common prefix once
    row_streams: RowStreams  # the CPU streams each batch's rows are split over (one: no split)


def plan_compute(model: nn.Module, cfg, ranks: int, train_ids: Sequence[np.ndarray]) -> ComputePlan:
    """Decide every lever for ``model`` (its trainable layers already added) under ``cfg`` on
    ``ranks`` data-parallel processes, switch the layers that take one, and say what was done.

    ``train_ids`` are the training examples' token ids (their common prefix is the shared prefix).
    Call it once per run, before the step is compiled; the probes evaluate the model.
    """
    cpu_off = cpu_levers_off(cfg)
    if cfg.grad_checkpoint:  # first: the sparse last block's full-length path calls the checkpointed block
        checkpoint_layers(model)
    choices = [_blas(), _denormals(on_cpu())]
    choices.append(_layer_lever("fast SiLU", cfg.fast_silu, cpu_off, lambda: speed_up_mlps(model), "MLPs",
                                "the MLP's sigmoid uses a polynomial exponential (MLX's CPU exp is scalar)"))
    choices.append(_layer_lever("fast attention", cfg.fast_attention, cpu_off, lambda: speed_up_attention(model),
                                "attention layers", "the softmax uses a polynomial exponential"))
    choices.append(_layer_lever("fast LoRA", cfg.fast_lora, cpu_off, lambda: speed_up_lora(model), "LoRA layers",
                                "the low-rank update is added inside the matmul"))
    sparse = cfg.sparse_logits and head_matches(model)
    choices.append(_sparse_logits(cfg, sparse))
    choices.append(_sparse_last_block(model, cfg, sparse))
    streams = RowStreams.plan(1 if ranks > 1 or cpu_off else cfg.cpu_streams, cfg.batch_size)
    choices.append(_cpu_streams(cfg, ranks, streams, cpu_off))
    can_share = cfg.shared_prefix and sparse and ranks == 1 and shares_prefix(model)
    prefix_choice, prefix = _shared_prefix(cfg, ranks, sparse, can_share, streams, train_ids)
    choices.append(prefix_choice)
    choices.append(_grad_checkpoint(cfg))
    return ComputePlan(tuple(choices), sparse, prefix, can_share, streams)


def cpu_levers_off(cfg) -> str | None:
    """Why the CPU-only levers are off, or None where they may apply: on a GPU they would only
    slow it, and ``compute_plan: gpu`` keeps them off on the CPU too, so the CPU runs exactly what
    Metal and CUDA run (the path the tests check here)."""
    if cfg.compute_plan == "gpu":
        return "compute_plan: gpu"
    return None if on_cpu() else "for the CPU backend only"


def _blas() -> LeverChoice:
    if blas_notice() is not None:  # the run also warns, with the fix
        return LeverChoice("fast BLAS", False, "MLX runs on the wheel's reference BLAS: matmuls ~30x slower")
    return LeverChoice("fast BLAS", True, "MLX's matmuls run on an optimised BLAS")


def _denormals(cpu: bool) -> LeverChoice:
    name = "denormals flushed"
    if not cpu:
        return LeverChoice(name, False, "the GPU flushes denormal floats of its own")
    if not prepare_process().flush_denormals:
        return LeverChoice(name, False, "not x86-64 Linux with glibc (elsewhere denormals are fast or cannot be set)")
    if not mlx_flushes_denormals():
        return LeverChoice(name, False, "MLX's threads started before the setting could reach them; "
                                        "matmuls on denormal floats may run up to 150x slower")
    return LeverChoice(name, True, "denormal floats (below 1.2e-38) compute as zero: x86 CPUs run "
                                   "matmuls on them up to 150x slower")


def _layer_lever(name: str, wanted: bool, cpu_off: str | None, switch, what: str, how: str) -> LeverChoice:
    key = name.lower().replace(" ", "_")
    if not wanted:
        return LeverChoice(name, False, f"{key}: false")
    if cpu_off:
        return LeverChoice(name, False, cpu_off)
    switched = switch()
    if not switched:
        return LeverChoice(name, False, f"no {what} of a form it can compute (or not float32)")
    return LeverChoice(name, True, f"{switched} {what}: {how}")


def _sparse_logits(cfg, sparse: bool) -> LeverChoice:
    if not cfg.sparse_logits:
        return LeverChoice("sparse logits", False, "sparse_logits: false")
    if not sparse:
        return LeverChoice("sparse logits", False, "this model's logits are not its head applied to its body "
                                                   "(a logit scale or soft cap): logits at every position")
    return LeverChoice("sparse logits", True, "the loss computes logits only at the positions it weighs")


def _sparse_last_block(model: nn.Module, cfg, sparse: bool) -> LeverChoice:
    name = "sparse last block"
    if not sparse:
        return LeverChoice(name, False, "needs sparse logits")
    if cfg.plw != 0:
        return LeverChoice(name, False, "PLW > 0 reads every real position")
    if not sparse_last_block(model):
        return LeverChoice(name, False, "the last block's attention is not plainly causal, or not of the Llama form")
    return LeverChoice(name, True, "the last block computes queries and MLP only where the loss reads, "
                                   "when that is at most half the positions")


def _cpu_streams(cfg, ranks: int, streams: RowStreams, cpu_off: str | None) -> LeverChoice:
    name = "CPU streams"
    if streams.split:
        return LeverChoice(name, True, f"each batch's rows run as {streams.count} parts on {streams.count} "
                                       f"streams, {streams.threads_each} BLAS thread(s) each")
    if cfg.cpu_streams < 2:
        return LeverChoice(name, False, "cpu_streams: 1")
    if ranks > 1:
        return LeverChoice(name, False, "data-parallel ranks on one machine share its cores")
    if cpu_off:
        return LeverChoice(name, False, cpu_off)
    return LeverChoice(name, False, f"needs batch_size a multiple of {cfg.cpu_streams}, two cores, "
                                    "an OpenBLAS and MLX's breadth-first order")


def _grad_checkpoint(cfg) -> LeverChoice:
    name = "gradient checkpointing"
    if not cfg.grad_checkpoint:
        return LeverChoice(name, False, "grad_checkpoint: false (faster; more memory)")
    if cfg.lora_parameters.dropout > 0:  # engine/levers/grad_checkpoint.py: MLX's random state cannot be rewound
        return LeverChoice(name, True, "blocks recompute their activations in the backward pass, drawing new "
                                       "LoRA dropout masks: the gradients are not exactly the loss's")
    return LeverChoice(name, True, "blocks recompute their activations in the backward pass")


def _shared_prefix(cfg, ranks: int, sparse: bool, can_share: bool, streams: RowStreams,
                   train_ids: Sequence[np.ndarray]) -> tuple[LeverChoice, int]:
    """The training set's common prefix, where the model, the loss and the run allow it: not with
    full logits or across ranks (a rank's empty share is a row of padding), not with gradient
    checkpointing (the shared body has no checkpointed blocks) or dropout (the rows would share one
    draw), nor with one row per batch part (nothing to share)."""
    name = "shared prefix"
    reasons = [
        (not cfg.shared_prefix, "shared_prefix: false"),
        (not sparse, "needs sparse logits"),
        (ranks > 1, "not across data-parallel ranks"),
        (not can_share, "the model is not of the Llama form with plain causal attention"),
        (cfg.grad_checkpoint, "not with gradient checkpointing"),
        (cfg.lora_parameters.dropout > 0, "not with LoRA dropout"),
        (cfg.batch_size // streams.count < 2, "one row per batch part: nothing to share"),
    ]
    for applies, reason in reasons:
        if applies:
            return LeverChoice(name, False, reason), 0
    prefix = shared_length(train_ids)
    if not prefix:
        return LeverChoice(name, False, f"the training examples share fewer than {MIN_SHARED} leading tokens"), 0
    return LeverChoice(name, True, f"the first {prefix} tokens, the same in every training example, "
                                   "are computed once per batch part"), prefix


def shared_length(ids: Sequence[np.ndarray]) -> int:
    """The leading tokens all ``ids`` share, if enough to be worth computing once; else 0."""
    prefix = common_prefix(list(ids))
    return prefix if prefix >= MIN_SHARED else 0
