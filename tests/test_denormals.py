"""Denormal flushing: set by preparing the process on x86-64 Linux, inherited by MLX's and OpenBLAS's
threads, and left alone elsewhere."""

import json
import platform
import subprocess
import sys
import threading

from engine.levers import denormals

X86_LINUX = denormals.supported()

# In a fresh process, MLX's default CPU stream and a new one, checked as the trainer checks them.
# engine/levers/denormals.py is loaded from its file so that, unless asked, engine's package (which
# flushes on import) is not imported.
PROBE = """
import importlib.util, json, sys
if sys.argv[1] == "prepared":
    from engine.levers.process import prepare_process
    prepare_process()
elif sys.argv[1] == "imported":
    import engine, engine.training.trainer  # importing changes nothing in the process
import mlx.core as mx
spec = importlib.util.spec_from_file_location("denormals", sys.argv[2])
denormals = importlib.util.module_from_spec(spec)
spec.loader.exec_module(denormals)
print(json.dumps({"default_stream": denormals.mlx_flushes_denormals(),
                  "new_stream": denormals.mlx_flushes_denormals(mx.new_stream(mx.cpu))}))
"""


def probe(first_import: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, first_import, denormals.__file__],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_supported_exactly_on_x86_64_linux_with_glibc():
    expected = sys.platform.startswith("linux") and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"
    assert denormals.supported() is expected


def test_preparing_the_process_flushes_denormals_in_mlx_threads():
    """With the process prepared first (as the tuner command and app do), every MLX CPU thread
    (and the BLAS's) computes denormals as zero; merely importing the engine, or MLX alone, does
    not (so it is that call that does it, not the machine or an import)."""
    assert probe("prepared") == {"default_stream": X86_LINUX, "new_stream": X86_LINUX}
    if X86_LINUX:  # (another platform's CPU or BLAS may flush of its own)
        assert probe("imported") == {"default_stream": False, "new_stream": False}
        assert probe("mlx-only") == {"default_stream": False, "new_stream": False}


def test_mlx_flushes_denormals_in_this_process():
    """The check the trainer's notice uses (conftest prepares the process before any MLX evaluation)."""
    assert denormals.mlx_flushes_denormals() is X86_LINUX


def test_threads_started_after_the_import_inherit_it():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(denormals.denormals_flushed_here()))
    thread.start()
    thread.join()
    assert denormals.denormals_flushed_here() is X86_LINUX
    assert seen == [X86_LINUX]


def test_left_alone_off_x86_linux(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert denormals.flush_denormals() is False
    assert denormals.denormals_flushed_here() is False
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert denormals.flush_denormals() is False


def test_a_loaded_openblas_has_its_threads_restarted_once():
    """Where OpenBLAS is preloaded (as tuner and .ci/run do), preparing the process restarted its worker
    threads, which had started before Python and so keep denormals; a second call leaves them be.
    (conftest prepared the process, as the tuner command does.)"""
    from engine.levers.cpu_streams import BlasThreads

    assert denormals.openblas_restarted() is (X86_LINUX and BlasThreads.find() is not None)
    assert denormals.flush_denormals() is X86_LINUX
    assert denormals.openblas_restarted() is (X86_LINUX and BlasThreads.find() is not None)
