"""What a stage tells as it trains: the run-started event, and a training report every
``steps_per_report`` steps summing the steps since the last one (the report window).

The loop adds each step to a :class:`ReportWindow` from values it has already read back, so a
step costs no extra evaluation; the report's other figures (learning rate, update norm, memory,
each rank's speed) are read only when a report is due.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from engine import events as ev
from engine.config import config_to_dict
from engine.data.batching import Batch
from engine.levers.platform_check import device_name
from engine.loss import mean_or_nan
from engine.model.load import trainable_weights
from engine.training.distributed import World
from engine.training.prepare import PreparedStage


@dataclass
class ReportWindow:
    """Sums over the steps since the last training report."""

    loss: float = 0.0
    aux: np.ndarray = field(default_factory=lambda: np.zeros(5))  # weight sum, prompt CE, count, completion CE, count
    steps: int = 0
    tokens: int = 0  # real tokens of the whole steps, over all ranks
    rank_tokens: int = 0  # real tokens of this rank's shares
    positions: int = 0  # this rank's positions, padding included
    seconds: float = 0.0

    def add(self, loss: float, aux: list[float], batch: Batch, seconds: float) -> None:
        self.loss += loss
        self.aux += np.array(aux)
        self.steps += 1
        self.tokens += batch.group_tokens
        self.rank_tokens += batch.tokens
        self.positions += batch.ids.size
        self.seconds += seconds


class Reporter:
    """Turns a report window into a :class:`engine.events.TrainReport` (every rank calls it: the
    ranks' speeds are gathered)."""

    def __init__(self, prepared: PreparedStage, world: World, emit: Callable[[ev.Event], None]):
        self.prepared, self.world, self.emit = prepared, world, emit

    def report(self, step: int, window: ReportWindow, grad_norm: float, elapsed: float, trained_tokens: int) -> None:
        prepared, world = self.prepared, self.world
        _, p_ce, p_n, c_ce, c_n = window.aux  # the weight sum is not reported
        tokens_per_second = window.tokens / max(window.seconds, 1e-9)
        per_rank = world.gather(
            mx.array([[window.rank_tokens, window.positions, window.seconds]], dtype=mx.float32)
        ).tolist()
        rank_speeds = tuple(tokens / max(seconds, 1e-9) for tokens, _, seconds in per_rank)
        real_share = sum(row[0] for row in per_rank) / max(sum(row[1] for row in per_rank), 1)
        peak = prepared.figures.matmul_peak * world.size
        self.emit(
            ev.TrainReport(
                step=step,
                total_steps=prepared.total_steps,
                epoch=prepared.stream.epoch_progress(),
                loss=window.loss / max(window.steps, 1),
                prompt_loss=mean_or_nan(p_ce, p_n),
                completion_loss=mean_or_nan(c_ce, c_n),
                learning_rate=float(prepared.optimizer.learning_rate.item()),
                grad_norm=grad_norm,
                update_norm=self.update_norm(),
                tokens_per_second=tokens_per_second,
                trained_tokens=trained_tokens,
                peak_memory_gb=mx.get_peak_memory() / 1e9,
                active_memory_gb=mx.get_active_memory() / 1e9,
                cache_memory_gb=mx.get_cache_memory() / 1e9,
                elapsed=elapsed,
                padding_efficiency=real_share,
                mfu=tokens_per_second * prepared.figures.flops_per_token / peak if peak else math.nan,
                rank_tokens_per_second=rank_speeds if world.distributed else (),
            )
        )

    def update_norm(self) -> float:
        """How far the trainable weights have moved since the first step."""
        start = self.prepared.start_weights
        total = sum(mx.sum(mx.square(value.astype(mx.float32) - start[name]))
                    for name, value in trainable_weights(self.prepared.model).items())
        return math.sqrt(float(total.item()) if isinstance(total, mx.array) else 0.0)  # one sync, not one per tensor


def run_started(prepared: PreparedStage, world: World, run_dir: Path | None, adapter_dir: Path | None,
                stages: int, resumed_from: int) -> ev.RunStarted:
    stage, cfg = prepared.stage, prepared.cfg
    return ev.RunStarted(
        run_dir=str(run_dir),
        adapter_dir=str(adapter_dir) if adapter_dir else "",
        stage=stage.index + 1,
        stages=stages,
        config_file=str(stage.path),
        model=cfg.model,
        fine_tune_type=cfg.fine_tune_type,
        prompt_loss_weight=cfg.plw,
        total_steps=prepared.total_steps,
        steps_per_epoch=prepared.stream.per_epoch,
        train_examples=len(prepared.data.train),
        valid_examples=len(prepared.data.valid),
        trainable_params=prepared.figures.trainable_params,
        total_params=prepared.figures.total_params,
        device=device_name(),
        compute_dtype=_dtype_label(prepared.model),
        config=config_to_dict(cfg),
        resumed_from=resumed_from,
        flops_per_token=prepared.figures.flops_per_token,
        matmul_peak_flops=prepared.figures.matmul_peak,
        pid=os.getpid(),
        world_size=world.size,
        compute_plan=prepared.levers.choices,
    )


def _dtype_label(model: nn.Module) -> str:
    dtypes = {str(v.dtype).split(".")[-1] for _, v in tree_flatten(model.parameters())}
    return "/".join(sorted(dtypes))
