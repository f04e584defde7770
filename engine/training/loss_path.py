"""The loss a stage trains and validates with, chosen once: every position's logits, or sparse.

The PLW loss has two implementations that compute the same values: :func:`engine.loss.plw_loss`
takes the logits at every position, and :func:`engine.levers.linear_ce.plw_loss_fast` computes
them only at the positions the loss weighs (optionally computing a prompt prefix every row shares
once, :mod:`engine.levers.shared_prefix`). Which one a stage uses is a compute lever, decided
before training, in the compute plan (:func:`engine.levers.plan.plan_compute`). The compiled step and the
evaluator both take a :class:`LossPath` and never ask which it is, as mlx-lm's trainer takes its
``loss=``.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from engine.data.batching import Batch
from engine.data.tokenize import Example
from engine.levers.cpu_streams import RowStreams
from engine.levers.linear_ce import eval_sums_fast, plw_loss_fast, select_targets
from engine.loss import eval_sums, plw_loss, rank_denominator
from engine.levers.plan import ComputePlan, shared_length


class LossPath:
    """A batch turned into the loss's inputs, the loss on them, and validation's sums.

    ``ranks``: the data-parallel processes (each scores its share of a batch); ``row_streams``:
    the parts a batch's rows are split into (:class:`engine.levers.cpu_streams.RowStreams`).
    """

    def __init__(self, plw: float, ranks: int, row_streams: RowStreams):
        self.plw = plw
        self.ranks = ranks
        self.row_streams = row_streams

    def inputs(self, batch: Batch) -> list[tuple[mx.array, ...]]:
        """What :meth:`loss` takes, one tuple per part of the rows: the part's arrays plus, on one
        of several ranks or for one of several parts, the whole batch's loss denominator."""
        row_parts = self.row_streams.parts(batch.ids.shape[0])
        denominator = ()
        if self.ranks > 1 or len(row_parts) > 1:
            denominator = (rank_denominator([e.roles for e in batch.group], self.plw, self.ranks),)
        return [self._arrays(batch.ids[rows], batch.roles[rows]) + denominator for rows in row_parts]

    def _arrays(self, ids: np.ndarray, roles: np.ndarray) -> tuple[mx.array, ...]:
        raise NotImplementedError

    def loss(self, model, inputs: tuple[mx.array, ...]) -> tuple[mx.array, mx.array]:
        """(loss, aux) of one part: aux = [sum of weights, prompt CE sum, prompt count,
        completion CE sum, completion count]."""
        raise NotImplementedError

    def eval_sums(self, model, ids: mx.array, roles: mx.array, prefix: int = 0) -> mx.array:
        """Per-example validation sums ([B, 7], see :func:`engine.loss.eval_sums`), with the
        ``prefix`` leading tokens every row shares computed once."""
        raise NotImplementedError

    def eval_prefix(self, examples: list[Example]) -> int:
        """The leading tokens a validation batch of ``examples`` may compute once; 0 for none."""
        return 0


class FullLogits(LossPath):
    """:func:`engine.loss.plw_loss`: logits at every position."""

    def _arrays(self, ids, roles):
        return mx.array(ids), mx.array(roles)

    def loss(self, model, inputs):
        return plw_loss(model, inputs[0], inputs[1], self.plw, *inputs[2:])

    def eval_sums(self, model, ids, roles, prefix=0):
        return eval_sums(model, ids, roles)


class SparseLogits(LossPath):
    """:func:`engine.levers.linear_ce.plw_loss_fast`: logits only where the loss reads them.

    ``shared_prefix``: the leading tokens every training row shares, computed once per part (0:
    none); ``share_valid_prefix``: whether validation may do the same with its batches' own
    common prefix (the model's form allows it, and one rank scores every row).
    """

    def __init__(self, plw: float, ranks: int, row_streams: RowStreams, shared_prefix: int,
                 share_valid_prefix: bool):
        super().__init__(plw, ranks, row_streams)
        self.shared_prefix = shared_prefix
        self.share_valid_prefix = share_valid_prefix

    def _arrays(self, ids, roles):
        return (mx.array(ids), *select_targets(roles, self.plw).arrays())

    def loss(self, model, inputs):
        return plw_loss_fast(model, *inputs, shared_prefix=self.shared_prefix)

    def eval_sums(self, model, ids, roles, prefix=0):
        return eval_sums_fast(model, ids, roles, shared_prefix=prefix)

    def eval_prefix(self, examples):
        return shared_length([e.ids for e in examples]) if self.share_valid_prefix else 0  # cheap: numpy over the ids


def choose_loss(plw: float, ranks: int, levers: ComputePlan) -> LossPath:
    """The loss path the compute plan calls for."""
    if not levers.sparse_logits:
        return FullLogits(plw, ranks, levers.row_streams)
    return SparseLogits(plw, ranks, levers.row_streams, levers.shared_prefix, levers.can_share_prefix)
