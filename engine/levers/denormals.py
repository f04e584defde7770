"""Denormal floats flushed to zero on x86 CPUs, where they make matmuls two orders slower.

Float32 values below about 1.2e-38 are *denormal*. Intel CPUs compute with them through a
microcode assist, and a matmul over them runs two orders of magnitude slower (bench/README.md
has the measurements). Training makes such values: before :func:`engine.levers.fast_exp.polynomial_exp`
returned 0 below -87, causal attention's masked probabilities were e**-87 over the row's sum,
denormal, in half of every attention matrix. Gradients flowing back through small probabilities, or a sigmoid of a very negative input,
still can. With the two MXCSR bits set (FTZ: results flush to zero; DAZ: denormal inputs read as
zero) no such value slows a matmul.

MXCSR is per thread, and a new thread starts with its creator's. MLX starts its stream threads at
their first use, so :func:`flush_denormals` runs in :func:`engine.levers.process.prepare_process`,
before any MLX evaluation (the evaluation order of :mod:`engine.levers.cpu_streams` is chosen there too). OpenBLAS,
when preloaded, starts its worker threads as it loads, before any Python runs: the first call
stops them, and OpenBLAS starts them again at its next threaded matmul, from the MLX thread that
calls it, which flushes.

The setting covers all floating-point arithmetic of those threads, Python's floats and numpy's
included: numbers change only where a value falls below 1.2e-38 (2.2e-308 for doubles), far under
the precision of anything a loss or an update adds it to. Metal flushes denormals of its own. ARM
CPUs (Apple Silicon) compute with denormals at full speed, and nothing is changed there.
"""

from __future__ import annotations

import ctypes
import platform
import sys

import mlx.core as mx

FTZ, DAZ = 0x8000, 0x0040  # MXCSR bits: flush results to zero, read denormal inputs as zero
FENV_SIZE, MXCSR_OFFSET = 32, 28  # glibc's x86-64 fenv_t, whose last field is the MXCSR


_openblas_restarted = False  # its threads are stopped once: stopping them under a running matmul would hang it


def _libm():
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        return None
    try:
        return ctypes.CDLL("libm.so.6")
    except OSError:  # not glibc
        return None


def _environment(libm):
    """This thread's floating-point environment (glibc's fenv_t), or None."""
    env = (ctypes.c_uint8 * FENV_SIZE)()
    return env if libm.fegetenv(env) == 0 else None


def _mxcsr(env) -> int:
    return int.from_bytes(bytes(env[MXCSR_OFFSET:]), "little")


def supported() -> bool:
    """Whether :func:`flush_denormals` can work here: x86-64 Linux with glibc."""
    return _libm() is not None


def flush_denormals() -> bool:
    """Set FTZ and DAZ for this thread and the threads it creates from now on (x86-64 Linux with
    glibc), before any BLAS work has started. Returns whether they are set."""
    libm = _libm()
    env = _environment(libm) if libm is not None else None
    if env is None:
        return False
    if _mxcsr(env) & (FTZ | DAZ) != FTZ | DAZ:
        env[MXCSR_OFFSET:] = list((_mxcsr(env) | FTZ | DAZ).to_bytes(4, "little"))
        if libm.fesetenv(env) != 0 or not denormals_flushed_here():
            return False
    _restart_openblas_threads()
    return True


def _restart_openblas_threads() -> None:
    """Stop OpenBLAS's worker threads, once, if OpenBLAS is loaded where the process' symbols are
    found (preloaded, as tuner and .ci/run do): it starts them again when next needed."""
    global _openblas_restarted
    if _openblas_restarted:
        return
    try:
        shutdown = ctypes.CDLL(None).blas_thread_shutdown_
    except (OSError, AttributeError):  # no OpenBLAS in this process (MLX's own BLAS)
        return
    _openblas_restarted = True
    shutdown()


def openblas_restarted() -> bool:
    """Whether :func:`flush_denormals` found a preloaded OpenBLAS and restarted its threads."""
    return _openblas_restarted


def denormals_flushed_here() -> bool:
    """Whether this thread flushes denormals (both bits set)."""
    libm = _libm()
    env = _environment(libm) if libm is not None else None
    return env is not None and _mxcsr(env) & (FTZ | DAZ) == FTZ | DAZ


def mlx_flushes_denormals(stream=None) -> bool:
    """Whether MLX's CPU computes with denormals flushed on ``stream`` (the CPU's default stream if
    None): a denormal input times one, and through a matmul large enough for the BLAS to share out
    among its threads, reads zero."""
    # built and read as bits: converting a denormal on this thread would be flushed here already
    with mx.stream(stream or mx.cpu):
        tiny = mx.full((256, 256), 1 << 20, dtype=mx.uint32).view(mx.float32)  # about 1.5e-39 each
        flushed = [tiny * 1.0, tiny @ mx.ones((256, 256))]
        return all(not (x.view(mx.uint32) != 0).any().item() for x in flushed)
