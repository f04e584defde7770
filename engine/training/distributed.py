"""Data-parallel training over the processes ``mlx.launch`` starts (ring, MPI or JACCL backends).

There is no protocol of our own: the ranks talk only through ``mx.distributed`` collectives.
Every rank builds the same global batch from the same seed and trains on its share of it
(examples ``rank, rank + size, ...``), so the data order needs no messages at all. What has to
be agreed is exchanged with a collective at points every rank reaches in the same order:

* the step's loss, its report sums and (at each optimizer update) the gradients;
* the requests between steps (stop, pause, save, eval), where any rank may ask to stop (Ctrl-C
  reaches every local rank) but only rank 0, which owns the run folder and its inbox, pauses;
* the starting weights, optimizer state and data position, which rank 0 alone may have read
  from disk (a chain's previous stage, a checkpoint to resume);
* evaluation sums, each rank scoring its share of every validation batch.

MLX is lazy: a collective runs when its result is evaluated. Outside a compiled step every
caller evaluates what these helpers return at once, on every rank, so that no rank leaves a
collective unevaluated (its peers would wait for it forever) or runs two in a different order.

Only rank 0 writes: the run folder, ``metrics.jsonl``, checkpoints and the adapter. A world of
one (no launcher) makes every helper here the identity, so the single-process path is unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import mlx.core as mx
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from engine.errors import UserError

# set by mlx.launch (ring, JACCL) or by mpirun for its ranks
LAUNCHER_VARIABLES = ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


@dataclass(frozen=True)
class World:
    """This process' place among the ranks training together."""

    rank: int = 0
    size: int = 1
    group: Any = None  # the mx.distributed.Group, None for a world of one

    @property
    def is_main(self) -> bool:
        """Rank 0: the one rank that writes and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, items: Sequence) -> list:
        """This rank's part of a global batch: items rank, rank + size, ..."""
        return list(items[self.rank :: self.size])

    # ---- collectives (the identity in a world of one)
    def sum(self, x: mx.array) -> mx.array:
        if not self.distributed:
            return x
        return mx.distributed.all_sum(x, group=self.group)

    def gather(self, x: mx.array) -> mx.array:
        """Every rank's ``x`` stacked along the first axis, rank 0 first."""
        if not self.distributed:
            return x
        return mx.distributed.all_gather(x, group=self.group)

    def sum_tree(self, tree):
        """Each leaf summed over the ranks, in one collective: one large message beats hundreds
        of small ones (a LoRA adapter has several hundred tensors)."""
        if not self.distributed:
            return tree
        leaves = sorted(tree_flatten(tree), key=lambda leaf: leaf[0])  # the same order on every rank
        if not leaves:
            return tree
        flat = mx.concatenate([v.reshape(-1).astype(mx.float32) for _, v in leaves])
        total = self.sum(flat)
        out, start = [], 0
        for name, value in leaves:
            out.append((name, total[start : start + value.size].reshape(value.shape).astype(value.dtype)))
            start += value.size
        return tree_unflatten(out)

    def from_main(self, tree):
        """Rank 0's values of every leaf, on every rank (a broadcast built from a sum)."""
        if not self.distributed:
            return tree
        own = tree if self.is_main else tree_map(mx.zeros_like, tree)
        return self.sum_tree(own)

    def from_main_ints(self, values: list[int]) -> list[int]:
        """Rank 0's integers (a data position, a token count), exactly, on every rank."""
        if not self.distributed:
            return list(values)
        own = values if self.is_main else [0] * len(values)
        return [int(v) for v in self.sum(mx.array(own, dtype=mx.int64)).tolist()]

    def agree(self, stop: bool, pause: bool, save: bool, evaluate: bool) -> tuple[bool, bool, bool, bool]:
        """The requests every rank acts on: stop, save and eval when any rank asks, pause as rank 0 says."""
        if not self.distributed:
            return stop, pause, save, evaluate
        flags = mx.array([stop, pause and self.is_main, save, evaluate], dtype=mx.int32)
        return tuple(bool(v) for v in self.sum(flags).tolist())

    def any(self, flag: bool) -> bool:
        if not self.distributed:
            return flag
        return bool(self.sum(mx.array([int(flag)])).item())


def current_world() -> World:
    """The world ``mlx.launch`` (or ``mpirun``) set up for this process, else a world of one."""
    if not any(name in os.environ for name in LAUNCHER_VARIABLES) or _ring_of_one():
        return World()
    try:
        group = mx.distributed.init()
    except RuntimeError as e:
        raise UserError(f"the ranks could not connect ({e}); check the hostfile's IPs and that its ports are open") from None
    if group.size() == 1:
        return World()
    return World(rank=group.rank(), size=group.size(), group=group)


def _ring_of_one() -> bool:
    """mlx.launch on a single host hands the ring an empty hostfile, which MLX cannot parse."""
    path = os.environ.get("MLX_HOSTFILE")
    if path is None:
        return False
    try:
        return not open(path, encoding="utf-8").read().strip()
    except OSError:
        return False
