"""A batch's rows split over CPU streams, so that element-wise work uses every core too.

On MLX's CPU backend a matmul goes to the BLAS, which uses every core, but each element-wise
kernel (softmax, SiLU, norms, the adds of the backward pass) runs on the single thread of its
stream, so on two cores a large part of a step ran with the second core idle (bench/README.md
has the measurements). Split into halves, each half on its
own stream with its own share of the BLAS threads, one half's element-wise work runs beside the
other half's matmuls. Same loss and gradients to float32 rounding: every half divides by the
whole batch's weight sum, so the halves' losses and gradients add up to the batch's.

One MLX setting makes this pay. An evaluation orders its operations breadth first but only up to
``MLX_BFS_MAX_WIDTH`` (20) at a time, and keeps at most 10 of them in flight: with the default,
one half's operations come out ahead of the other's and the streams take turns. With an unbounded width the two halves' operations alternate. MLX reads the
variable once, at its first evaluation, so :func:`widen_eval_order` runs in
:func:`engine.levers.process.prepare_process`, which tuner's command line and app call first; a
program that evaluates MLX arrays before that keeps MLX's order, and its compute plan says so.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import mlx.core as mx
from mlx.utils import tree_map

from engine.levers.device import on_cpu

WIDTH_VARIABLE = "MLX_BFS_MAX_WIDTH"
UNBOUNDED_WIDTH = 1 << 30


def widen_eval_order() -> None:
    """On the CPU backend, ask MLX for a breadth-first order of every evaluation's operations.

    Without a split the order changes neither the step time nor the peak memory (bench/README.md);
    it only lets independent streams run side by side. Left alone where the user
    set the variable, and on Metal and CUDA, where nothing is split.
    """
    if WIDTH_VARIABLE not in os.environ and on_cpu():
        os.environ[WIDTH_VARIABLE] = str(UNBOUNDED_WIDTH)


def eval_order_is_wide() -> bool:
    try:
        return int(os.environ.get(WIDTH_VARIABLE, "0")) >= UNBOUNDED_WIDTH
    except ValueError:  # a value MLX would not read as a number either
        return False


@dataclass(frozen=True)
class BlasThreads:
    """OpenBLAS's thread count, read and set through the library MLX calls (preloaded on Linux)."""

    get: Callable[[], int]
    set: Callable[[int], None]

    @staticmethod
    def find() -> BlasThreads | None:
        try:
            process = ctypes.CDLL(None)  # every library loaded into this process, the preloaded BLAS too
            return BlasThreads(process.openblas_get_num_threads, process.openblas_set_num_threads)
        except (OSError, AttributeError):  # no OpenBLAS (MLX's own BLAS, Accelerate, MKL)
            return None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@dataclass
class RowStreams:
    """The streams a batch's rows are split over, and the BLAS threads each of them gets.

    One stream means no split: the batch runs whole on MLX's default stream.
    """

    count: int = 1
    blas: BlasThreads | None = None
    threads_each: int = 0
    streams: list = field(default_factory=list)

    @staticmethod
    def plan(requested: int, rows: int) -> RowStreams:
        """``requested`` streams for batches of ``rows`` rows, where splitting can pay; else one.

        It can pay on the CPU backend, with more than one core, when the rows split evenly, MLX
        orders evaluations breadth first (see the module's docstring) and the BLAS's threads can
        be shared out among the streams.
        """
        cores = available_cores()
        blas = BlasThreads.find()
        if (requested < 2 or rows % requested or cores < 2 or not on_cpu()
                or not eval_order_is_wide() or blas is None):
            return RowStreams()
        streams = [mx.new_stream(mx.cpu) for _ in range(requested)]
        return RowStreams(requested, blas, max(1, cores // requested), streams)

    @property
    def split(self) -> bool:
        return self.count > 1

    def parts(self, rows: int) -> list[slice]:
        """Contiguous row ranges, one per stream; the whole batch when it does not split evenly
        (the short last batch of an epoch)."""
        if not self.split or rows % self.count:
            return [slice(0, rows)]
        size = rows // self.count
        return [slice(i * size, (i + 1) * size) for i in range(self.count)]

    @contextmanager
    def running(self) -> Iterator[None]:
        """While a split step is evaluated, each stream's matmuls use its share of the cores."""
        if not self.split or self.blas is None:
            yield
            return
        before = self.blas.get()
        self.blas.set(self.threads_each)
        try:
            yield
        finally:
            self.blas.set(before)

    def add_up(self, fn: Callable, parts: Sequence):
        """The sum over parts of ``fn(part)`` (a tree of arrays), the i-th part's operations on the
        i-th stream."""
        if len(parts) == 1:
            return fn(parts[0])
        results = []
        for stream, part in zip(self.streams, parts):
            with mx.stream(stream):
                results.append(fn(part))
        return tree_map(lambda first, *rest: sum(rest, first), *results)
