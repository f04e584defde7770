"""A snapshot of the machine's and a process's memory, for the monitor's gauges.

It reads only what the OS already keeps (psutil: ``/proc/meminfo`` on Linux, ``sysctl`` and
``host_statistics`` on macOS), so a UI timer can call it once or twice a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

BYTES_PER_GB = 1024**3
"""GB here is 2**30 bytes, as macOS reports memory: a 16 GB Mac then shows 16.0, not 17.2."""

_PROCESS = psutil.Process()


@dataclass(frozen=True)
class SystemMemory:
    """Memory figures in GB (see :data:`BYTES_PER_GB`)."""

    total_gb: float
    used_gb: float
    """Total minus available: what other programs and this one leave unusable for training."""
    available_gb: float
    swap_used_gb: float
    swap_total_gb: float
    process_rss_gb: float
    """Resident memory of this process (on Apple silicon it may not count all Metal buffers)."""


def read_system_memory(pid: int | None = None) -> SystemMemory:
    """Read the current figures; the process is this one, or ``pid`` (the trainer of a run the
    app follows); a process that has gone counts 0.

    ``used_gb`` is derived from ``available`` rather than psutil's ``used``, whose meaning
    differs between macOS and Linux; ``available`` is what matters before an allocation fails.
    """
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    return SystemMemory(
        total_gb=vm.total / BYTES_PER_GB,
        used_gb=(vm.total - vm.available) / BYTES_PER_GB,
        available_gb=vm.available / BYTES_PER_GB,
        swap_used_gb=swap.used / BYTES_PER_GB,
        swap_total_gb=swap.total / BYTES_PER_GB,
        process_rss_gb=_rss(pid) / BYTES_PER_GB,
    )


def _rss(pid: int | None) -> int:
    try:
        return (_PROCESS if pid is None else psutil.Process(pid)).memory_info().rss
    except psutil.Error:
        return 0
