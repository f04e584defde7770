"""Denormal floats flushed to zero on x86 CPUs, where they make matmuls two orders slower.

Float32 values below about 1.2e-38 are *denormal*. Intel CPUs compute with them through a
microcode assist: measured on this project's Linux machine (a Xeon with AVX-512), a float32
OpenBLAS matmul of a SmolLM2-sized activation ran at 276 GFLOP/s on normal inputs and at 1.8
GFLOP/s when the inputs were denormal. Training makes such values: softmax probabilities of
far-off keys, and the gradients that flow back through them, so a few denormal entries in an
operand drag whole matmuls down. With the two MXCSR bits set (FTZ: results flush to zero; DAZ:
denormal inputs read as zero) the same matmul ran at full speed.

MXCSR is per thread, and a new thread starts with its creator's. MLX creates its stream threads
at their first use, so :func:`flush_denormals` runs when ``engine`` is imported, from the
importing thread, before any MLX evaluation (as the evaluation order of :mod:`engine.cpu_streams`
is chosen there too). OpenBLAS, preloaded, starts its worker threads when it is loaded, before
any Python runs; so the first call also stops them, and OpenBLAS starts them again at its next
threaded matmul, from the MLX thread that calls it, which flushes. Numbers change only where a value falls
below 1.2e-38, far under float32's precision of anything a loss or an update adds it to; GPUs
(Metal included) flush denormals in the same way. ARM CPUs (Apple Silicon) and CUDA need none
of this, and nothing is changed there.
"""

from __future__ import annotations

import ctypes
import platform
import sys

FTZ, DAZ = 0x8000, 0x0040  # MXCSR bits: flush results to zero, read denormal inputs as zero
FENV_SIZE, MXCSR_OFFSET = 32, 28  # glibc's x86-64 fenv_t, whose last field is the MXCSR


def _libm():
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        return ctypes.CDLL("libm.so.6")
    except OSError:  # not glibc
        return None


def _read_mxcsr(libm) -> int | None:
    env = (ctypes.c_uint8 * FENV_SIZE)()
    if libm.fegetenv(env) != 0:
        return None
    return int.from_bytes(bytes(env[MXCSR_OFFSET : MXCSR_OFFSET + 4]), "little")


def flush_denormals() -> bool:
    """Set FTZ and DAZ for this thread and the threads it creates from now on (x86-64 Linux with
    glibc). Returns whether they are set."""
    libm = _libm()
    if libm is None:
        return False
    if denormals_flushed_here():
        return True
    env = (ctypes.c_uint8 * FENV_SIZE)()
    if libm.fegetenv(env) != 0:
        return False
    mxcsr = int.from_bytes(bytes(env[MXCSR_OFFSET : MXCSR_OFFSET + 4]), "little") | FTZ | DAZ
    env[MXCSR_OFFSET : MXCSR_OFFSET + 4] = list(mxcsr.to_bytes(4, "little"))
    if libm.fesetenv(env) != 0 or not denormals_flushed_here():
        return False
    _restart_openblas_threads()
    return True


def _restart_openblas_threads() -> None:
    """Stop OpenBLAS's worker threads, if OpenBLAS is loaded: it starts them again when next needed."""
    try:
        shutdown = ctypes.CDLL(None).blas_thread_shutdown_
    except (OSError, AttributeError):  # no OpenBLAS in this process (MLX's own BLAS)
        return
    shutdown()


def denormals_flushed_here() -> bool:
    """Whether this thread flushes denormals (both bits set)."""
    libm = _libm()
    mxcsr = _read_mxcsr(libm) if libm is not None else None
    return mxcsr is not None and mxcsr & (FTZ | DAZ) == FTZ | DAZ


def can_flush() -> bool:
    """Whether this machine is one where :func:`flush_denormals` works (x86-64 Linux, glibc)."""
    return _libm() is not None


def mlx_flushes_denormals() -> bool:
    """Whether MLX's CPU computes with denormals flushed: a denormal input times one reads zero."""
    import mlx.core as mx

    # built and read as bits: converting a denormal on this thread would be flushed here already
    tiny = mx.array([1 << 20], dtype=mx.uint32).view(mx.float32)  # about 1.5e-39
    return (tiny * 1.0).view(mx.uint32).item() == 0
