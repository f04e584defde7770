"""Batches of similar token length, in a reproducible order.

Examples are sorted by their token count and cut into consecutive groups of ``batch_size``, so
little compute goes to padding; the order of the groups is shuffled per epoch from
(seed, epoch), so any position in the run can be rebuilt exactly when resuming. The last,
smaller group of an epoch is trained too (mlx-lm drops it).

In data-parallel training every rank draws the same groups and collates only its share
(:meth:`engine.training.distributed.World.share`); the batch keeps the whole group, whose weights
normalise the loss and whose tokens are the step's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.roles import ANSWER, PAD
from engine.data.tokenize import Example

PAD_MULTIPLE = 8


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Index groups for one epoch: length-sorted groups, shuffled in a seeded order."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng([seed, epoch])
    return [groups[i] for i in rng.permutation(len(groups))]


def batches_per_epoch(n_examples: int, batch_size: int) -> int:
    return math.ceil(n_examples / batch_size)


def total_steps(n_examples: int, batch_size: int, iters: int | None, epochs: float | None) -> int:
    """Steps (batches) in the run: ``iters`` as given, or epochs converted, rounding up."""
    if epochs is not None:
        return max(1, math.ceil(epochs * batches_per_epoch(n_examples, batch_size)))
    return int(iters)


@dataclass(frozen=True)
class Batch:
    ids: np.ndarray  # (B, L) int32, right-padded with pad_id
    roles: np.ndarray  # (B, L) int8, PAD where padded
    tokens: int  # real (non-pad) tokens
    group: tuple[Example, ...] = ()  # the whole step's examples, of which these rows are a share

    @property
    def group_tokens(self) -> int:
        """Real tokens of the whole step (all ranks' shares)."""
        return sum(len(e) for e in self.group) if self.group else self.tokens


def collate(examples: list[Example], pad_id: int = 0, answers: bool = False) -> Batch:
    """Right-pad to the longest example, rounded up to a multiple of PAD_MULTIPLE.

    ``answers``: mark each example's answer tokens ANSWER instead of COMPLETION, for validation's
    answer accuracy (never for training: the loss weighs COMPLETION only).

    No examples (a rank whose share of a short last group is empty) gives one row of padding:
    it has no loss weight, so it adds nothing to the loss or the gradients, but the rank still
    takes part in the step's collectives.
    """
    if not examples:
        return Batch(np.full((1, PAD_MULTIPLE), pad_id, dtype=np.int32), np.full((1, PAD_MULTIPLE), PAD, dtype=np.int8), 0)
    longest = max(len(e) for e in examples)
    width = PAD_MULTIPLE * math.ceil(longest / PAD_MULTIPLE)
    ids = np.full((len(examples), width), pad_id, dtype=np.int32)
    roles = np.full((len(examples), width), PAD, dtype=np.int8)
    for row, example in enumerate(examples):
        ids[row, : len(example)] = example.ids
        roles[row, : len(example)] = example.roles
        if answers and example.answer is not None:
            roles[row, : len(example)][example.answer] = ANSWER
    return Batch(ids, roles, sum(len(e) for e in examples))


class BatchStream:
    """Step-indexed batches over as many epochs as needed.

    ``position`` (epoch, index within the epoch) is all a checkpoint needs to resume the same
    sequence of batches.
    """

    def __init__(self, examples: list[Example], batch_size: int, seed: int, pad_id: int = 0, share=list):
        self.examples = examples
        self.share = share  # a group's part this process trains on (World.share), all of it by default
        self.batch_size = batch_size
        self.seed = seed
        self.pad_id = pad_id
        self._lengths = [len(e) for e in examples]
        self.epoch = 0
        self.index = 0
        self._plan = epoch_batches(self._lengths, batch_size, seed, 0)

    @property
    def per_epoch(self) -> int:
        return len(self._plan)

    def seek(self, epoch: int, index: int) -> None:
        self.epoch, self.index = epoch, index
        self._plan = epoch_batches(self._lengths, self.batch_size, self.seed, epoch)

    def epoch_progress(self) -> float:
        """Epochs completed so far, as a fraction."""
        return self.epoch + self.index / self.per_epoch

    def next(self) -> Batch:
        if self.index >= len(self._plan):
            self.seek(self.epoch + 1, 0)
        group = [self.examples[i] for i in self._plan[self.index]]
        self.index += 1
        batch = collate(self.share(group), self.pad_id)
        return Batch(batch.ids, batch.roles, batch.tokens, tuple(group))
