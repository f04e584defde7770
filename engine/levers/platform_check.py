"""What the machine under MLX can do, and the one Linux trap worth fixing for the user.

The Linux ``mlx[cpu]`` wheel ships a reference BLAS, so float32 matmuls run tens of times slower
than they can. Debian's ``libopenblas0-pthread`` provides a drop-in ``libblas.so.3``; preloading
it makes training an order of magnitude faster. ``tuner`` re-executes itself with that preload
when the library is present (set ``TUNER_NO_BLAS_PRELOAD=1`` to opt out) and says so when it
is missing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
)
FAST_BLAS_MARKERS = ("openblas", "libmkl", "blis")
HOW_TO_FIX = (
    "install Debian's libopenblas0-pthread (apt-get install libopenblas0-pthread); "
    "tuner then preloads it automatically"
)


def openblas_path() -> str | None:
    return next((p for p in OPENBLAS_CANDIDATES if Path(p).exists()), None)


def maybe_reexec_with_openblas() -> None:
    """On Linux, restart this process with a fast BLAS preloaded, if one is installed.

    Called first thing by the CLI, before MLX is imported, so nothing has run yet.
    """
    if not sys.platform.startswith("linux") or os.environ.get("TUNER_NO_BLAS_PRELOAD"):
        return
    preload = os.environ.get("LD_PRELOAD", "")
    library = openblas_path()
    if library is None or library in preload:
        return
    env = dict(os.environ, LD_PRELOAD=f"{library} {preload}".strip())
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def blas_notice() -> str | None:
    """A warning when MLX on Linux is running matmuls on the slow reference BLAS."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            mapped = f.read().lower()
    except OSError:
        return None
    if "libblas" not in mapped or any(m in mapped for m in FAST_BLAS_MARKERS):
        return None
    return (
        "MLX is using the reference BLAS that ships with the Linux mlx[cpu] wheel: "
        "matmuls run ~30x slower than they can. To fix it, " + HOW_TO_FIX + "."
    )


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT_FREE_HEAP = 1 << 30  # free memory at the heap's top kept for the next step, not handed back
MMAP_THRESHOLD = 32 << 20  # glibc's largest: smaller blocks come from the heap


def keep_freed_memory() -> bool:
    """On Linux with glibc, keep the memory a training step frees for the next step.

    By default glibc hands large freed blocks back to the kernel, so every step faults the same
    pages in again and the kernel zeroes each one: profiled on a SmolLM2 step on the CPU backend,
    2-3% of all samples were the kernel's page clearing. With these two settings the heap keeps
    them; the process' resident memory then stays near its peak, which a training run reaches
    every step anyway. Returns whether glibc took both settings.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, KEPT_FREE_HEAP))


def device_name() -> str:
    import mlx.core as mx

    if mx.metal.is_available():
        info = mx.device_info() if hasattr(mx, "device_info") else {}
        return f"Metal ({info.get('device_name', 'GPU')})"
    return "CPU"
