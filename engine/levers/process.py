"""Settings that concern the whole process, made once, before MLX computes anything.

Three settings cannot be switched per run: they act on threads and allocators that outlive it.

* Denormal flushing (:mod:`engine.levers.denormals`): a thread inherits it from its creator, and
  MLX starts its stream threads at their first use, so it must be set before MLX evaluates.
* MLX's evaluation order (:func:`engine.levers.cpu_streams.widen_eval_order`): MLX reads its
  environment variable once, at its first evaluation.
* glibc keeping freed memory for the next step (:func:`engine.levers.platform_check.keep_freed_memory`).

The command line, the app and the test suite call :func:`prepare_process` first thing; a
training run calls it again (it is idempotent) and reports what it finds in its compute plan, so
a process that had already started MLX's threads is told so instead of silently running slower.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.levers import cpu_streams, denormals, platform_check


@dataclass(frozen=True)
class ProcessSettings:
    """What the compute plan reports of them (the CPU streams read the evaluation order themselves)."""

    flush_denormals: bool  # FTZ and DAZ set on this thread (x86-64 Linux with glibc)


_settings: ProcessSettings | None = None


def prepare_process() -> ProcessSettings:
    """Make the process-wide settings (once) and return them."""
    global _settings
    if _settings is None:
        cpu_streams.widen_eval_order()
        platform_check.keep_freed_memory()
        _settings = ProcessSettings(flush_denormals=denormals.flush_denormals())
    return _settings
