"""What changes as a stage trains, and so what a checkpoint saves and a resume restores.

The weights and the optimizer state live in the model and the optimizer; the rest is here: the
data position (the batch stream's), the step, the tokens trained on, and the gradients summed
since the last optimizer update. The checkpoint's files and their layout belong to
:mod:`engine.runs.checkpoints`; this module decides what goes in them and, with several ranks,
how every rank takes part (only rank 0 writes).
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_map_with_path, tree_unflatten

from engine import events as ev
from engine.data.batching import BatchStream
from engine.model.load import load_trained_weights, trainable_weights
from engine.runs.checkpoints import Checkpoint, Checkpoints, Position
from engine.training.distributed import World


class TrainState:
    """A stage's progress: where the loop is, what it has trained, what it carries to the next update.

    ``checkpoints`` and ``emit`` are set by the trainer on rank 0 once the run folder is open;
    other ranks keep None and a no-op: they save nothing and say nothing.
    """

    def __init__(self, model: nn.Module, optimizer: optim.Optimizer, stream: BatchStream, world: World,
                 save_every: int):
        self.model, self.optimizer, self.stream, self.world = model, optimizer, stream, world
        self.save_every = save_every  # steps that are its multiples keep a numbered adapter copy
        self.written_step: int | None = None  # the step whose checkpoint is on disk already
        self.checkpoints: Checkpoints | None = None
        self.emit: Callable[[ev.Event], None] = lambda event: None
        self.first_step = 1
        self.step_done = 0  # the last step the loop finished (skipped batches count)
        self.trained_tokens = 0
        self.pending_grad = None  # gradients accumulated since the last optimizer update

    def restore(self, checkpoint: Checkpoint) -> ev.Notice:
        """Weights, optimizer state, data position and pending gradients of a checkpoint (rank 0).

        Randomness needs no state: each step reseeds from (seed, step), so dropout after a
        resume draws what it would have drawn in an uninterrupted run.
        """
        saved = checkpoint.load()
        load_trained_weights(self.model, saved.weights)
        self.optimizer.state = tree_unflatten(list(saved.optimizer.items()))
        if saved.pending_grad is not None:  # back into the full tree the compiled step adds to
            pending = saved.pending_grad
            self.pending_grad = tree_map_with_path(lambda path, leaf: pending.get(path, leaf),
                                                   self.model.trainable_parameters())
        position = saved.position
        self.stream.seek(position.epoch, position.batch_index)
        self.first_step = position.step + 1
        self.trained_tokens = position.trained_tokens
        return ev.Notice(message=f"resumed from {checkpoint.folder} (step {position.step})")

    def start_together(self, resumed: bool) -> None:
        """Give every rank rank 0's starting point, which only rank 0 may have been able to read:
        the trainable weights and, when resuming, the optimizer state and the data position.

        A rank other than 0 starts a resumed run with zero pending gradients: the checkpoint holds
        the whole batch's, and rank 0 carries them (scaled like a rank's own, see :meth:`save`).
        """
        world, model = self.world, self.model
        if not world.distributed:
            return
        model.update(world.from_main(model.trainable_parameters()))
        mx.eval(model.trainable_parameters())  # collectives run now, in the same order everywhere
        if not resumed:
            return
        if not world.is_main:
            self.optimizer.init(model.trainable_parameters())
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
                self.pending_grad = tree_map(mx.zeros_like, model.trainable_parameters())

    def save(self, step: int, reason: str) -> None:
        """A checkpoint of ``step`` for exact resume (:mod:`engine.runs.checkpoints`), saved
        because of ``reason`` (an :class:`engine.events.CheckpointSaved` reason). A step that is a
        multiple of ``save_every`` also keeps the numbered adapter copy, as mlx-lm does.

        Every rank calls it (the ranks' shares of pending gradients are summed into the
        checkpoint); rank 0 writes, once per step: a second reason to save the same step (a stop
        right after a periodic or memory save, say) is told but not written again.
        """
        pending = None
        if self.pending_grad is not None:  # a rank's loss carries a factor of the ranks (rank_denominator)
            pending = tree_map(lambda g: g / self.world.size, self.world.sum_tree(self.pending_grad))
        mx.eval(pending)  # now, on every rank: a collective left lazy on one rank would never meet its peers
        if not self.world.is_main:
            return
        if step != self.written_step:
            self._write(step, pending)
        self.emit(ev.CheckpointSaved(step=step, path=str(self.checkpoints.adapter_dir), reason=reason))

    def _write(self, step: int, pending) -> None:
        weights = trainable_weights(self.model)
        mx.eval(weights)
        position = Position(step, self.stream.epoch, self.stream.index, self.trained_tokens)
        self.checkpoints.save(position, weights, dict(tree_flatten(self.optimizer.state)),
                              dict(tree_flatten(pending)) if pending is not None else None,
                              periodic=step > 0 and step % self.save_every == 0)
        self.written_step = step
