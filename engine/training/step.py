"""The compiled training step, in two parts: the gradients (with their norm), then the update.

Split so the loop can look at the loss and the gradient norm before anything changes: a
non-finite batch is skipped, or stops the run, while the weights are still good. Gradients of
steps between two optimizer updates (``grad_accumulation_steps``) are summed; ranks sum their
shares once per update (:mod:`engine.training.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map

from engine.training.distributed import World
from engine.training.loss_path import LossPath


@dataclass(frozen=True)
class Step:
    """The two compiled functions and the state they read and write."""

    gradients: Callable  # (parts, pending gradients or None, do_update) -> (loss, aux, grad, norm)
    update: Callable  # (grad, norm) -> None: clips and applies the update
    state: list  # the model's, the optimizer's and the random generator's
    loss: LossPath

    def compute(self, parts: list, pending, do_update: bool):
        """The batch's loss, report sums, gradients (added to ``pending``) and, at an update,
        their norm (else 0), all evaluated, with the BLAS threads shared out over the row parts."""
        loss, aux, grad, norm = self.gradients(parts, pending, do_update)
        with self.loss.row_streams.running():
            mx.eval(self.state, loss, aux, grad, norm)
        return loss, aux, grad, norm

    def apply(self, grad, norm) -> None:
        """One optimizer update with the gradients :meth:`compute` returned."""
        self.update(grad, norm)
        mx.eval(self.state)


def compile_step(model: nn.Module, optimizer: optim.Optimizer, loss_path: LossPath, world: World,
                 accum: int, max_norm: float | None) -> Step:
    """Compile the step of ``model`` through ``loss_path``; ``accum`` steps per optimizer update, the
    gradients clipped to ``max_norm`` (None: not clipped)."""
    value_and_grad = nn.value_and_grad(model, loss_path.loss)
    # the optimizer's state exists before tracing: created by the first update instead, it
    # would change the compiled functions' inputs and make every batch shape trace again
    optimizer.init(model.trainable_parameters())
    state = [model.state, optimizer.state, mx.random.state]
    split = loss_path.row_streams

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

    return Step(gradients, update, state, loss_path)
