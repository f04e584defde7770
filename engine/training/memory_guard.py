"""Stop a run before the machine starts swapping itself to death.

Fine-tuning on a laptop fails badly when memory runs out: macOS swaps until the whole machine
stalls (or panics), long before MLX raises anything. The trainer reads system memory and swap
about once a second and, past the configured limits, checkpoints and then pauses (the app,
where a person can close something and resume) or stops (headless).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

GB = 1024**3
CHECK_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class MemoryReading:
    used_percent: float  # of physical memory, counting what the OS could free as available
    swap_used_gb: float


def read_memory() -> MemoryReading:
    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    return MemoryReading(100.0 * (vm.total - vm.available) / vm.total, swap.used / GB)


class MemoryGuard:
    """Says why, once memory use or swap growth since the run started crosses its limit."""

    def __init__(self, limit_percent: float, swap_growth_gb: float, reader=read_memory,
                 every_seconds: float = CHECK_EVERY_SECONDS):
        """``every_seconds``: how often :meth:`check` reads memory at most (steps can be far
        shorter than a reading is worth); the checks in between say nothing."""
        self.limit_percent = limit_percent
        self.swap_growth_gb = swap_growth_gb
        self.reader = reader
        self.every_seconds = every_seconds
        self.swap_at_start = reader().swap_used_gb
        self._next_check = 0.0

    def check(self) -> str | None:
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.every_seconds
        reading = self.reader()
        if reading.used_percent >= self.limit_percent:
            return f"system memory {reading.used_percent:.0f}% used (limit memory_limit_percent={self.limit_percent:g})"
        grown = reading.swap_used_gb - self.swap_at_start
        if grown >= self.swap_growth_gb:
            return f"swap grew by {grown:.1f} GB during the run (limit swap_growth_gb={self.swap_growth_gb:g})"
        return None
