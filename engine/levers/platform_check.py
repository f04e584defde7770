"""What the machine under MLX can do, and the one Linux trap worth fixing for the user.

The Linux ``mlx[cpu]`` wheel ships a reference BLAS, so float32 matmuls run tens of times slower
than they can. Debian's ``libopenblas0-pthread`` provides a drop-in ``libblas.so.3``; preloading
it makes training an order of magnitude faster. ``tuner`` re-executes itself with that preload
when the library is present (set ``TUNER_NO_BLAS_PRELOAD=1`` to opt out) and says so when it
is missing.

MLX is imported inside the functions that need it: the command line imports this module before
it re-executes itself with OpenBLAS preloaded, and MLX must not be loaded by then.
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
FAST_BLAS_MARKERS = ("openblas", "libmkl", "blis")  # in the path of the library MLX resolved
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


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def mlx_blas_library() -> str | None:
    """The file of the ``sgemm_`` that MLX's float32 matmuls call, or None where it cannot be told.

    The dynamic linker binds MLX's ``sgemm_`` to the first definition in the process' global scope
    (the program and anything preloaded), else to the one among MLX's own dependencies. Looking at
    the libraries mapped into the process is not enough: numpy's wheel maps an OpenBLAS of its own
    (``libscipy_openblas64_``, with renamed symbols MLX never calls) into every process.
    """
    if not sys.platform.startswith("linux"):
        return None
    import mlx.core as mx

    libmlx = Path(mx.__file__).parent / "lib" / "libmlx.so"
    try:
        process = ctypes.CDLL(None)
        scopes = [process] + ([ctypes.CDLL(str(libmlx))] if libmlx.exists() else [])
        address = next((ctypes.cast(getattr(scope, "sgemm_"), ctypes.c_void_p).value
                        for scope in scopes if hasattr(scope, "sgemm_")), None)
        info = _DlInfo()
        if address is None or not process.dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
            return None
    except (OSError, AttributeError):  # no dladdr (not glibc), or MLX built without a BLAS of its own
        return None
    return info.dli_fname.decode(errors="replace") if info.dli_fname else None


def blas_notice() -> str | None:
    """A warning when MLX on Linux runs its matmuls on the slow reference BLAS."""
    library = mlx_blas_library()
    if library is None or any(marker in library.lower() for marker in FAST_BLAS_MARKERS):
        return None
    return (
        f"MLX is using the reference BLAS that ships with the Linux mlx[cpu] wheel ({Path(library).name}): "
        "matmuls run ~30x slower than they can. To fix it, " + HOW_TO_FIX + "."
    )


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT_FREE_HEAP = 1 << 30  # free memory at the heap's top kept for the next step, not handed back
MMAP_THRESHOLD = 32 << 20  # glibc's largest: smaller blocks come from the heap


def keep_freed_memory() -> bool:
    """On Linux with glibc, keep the memory a training step frees for the next step.

    By default glibc hands large freed blocks back to the kernel, so every step faults the same
    pages in again and the kernel zeroes each one, which showed in a step's profile
    (bench/README.md). With these two settings the heap keeps
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
    """What MLX computes on: the default device, so MLX's CUDA backend counts as a GPU too."""
    import mlx.core as mx

    from engine.levers.device import on_cpu  # loads MLX: not at the top (see the module docstring)

    if on_cpu():
        return "CPU"
    if mx.metal.is_available():
        info = mx.device_info() if hasattr(mx, "device_info") else {}
        return f"Metal ({info.get('device_name', 'GPU')})"
    return "GPU"
