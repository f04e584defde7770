"""Denormal flushing: set by importing engine on x86-64 Linux, inherited by MLX's and OpenBLAS's
threads, and left alone elsewhere."""

import json
import platform
import subprocess
import sys
import threading

from engine import denormals

X86_LINUX = denormals.supported()

# A denormal (2**-129) multiplied and matmul'ed on MLX's default stream, on a
# new stream, and through the BLAS with two threads; each result read back as bits, since reading
# a denormal as a float on a flushing thread would itself give zero.
PROBE = """
import json, sys
if sys.argv[1] == "engine":
    import engine
import mlx.core as mx
mx.set_default_device(mx.cpu)  # Metal flushes denormals of its own
tiny = mx.full((256, 256), 1 << 20, dtype=mx.uint32).view(mx.float32)
ones = mx.ones((256, 256))
def bits(x):
    return int((x.view(mx.uint32) != 0).sum().item())
results = {"multiply": bits(tiny * 1.0) == 0, "matmul": bits(tiny @ ones) == 0}
with mx.stream(mx.new_stream(mx.cpu)):
    results["new_stream"] = bits(tiny @ ones) == 0
print(json.dumps(results))
"""


def probe(first_import: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, first_import], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_supported_exactly_on_x86_64_linux_with_glibc():
    expected = sys.platform.startswith("linux") and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"
    assert denormals.supported() is expected


def test_importing_engine_flushes_denormals_in_mlx_threads():
    """With engine imported first, every MLX thread computes denormals as zero; without, none does
    (so it is engine's setting that does it, not the machine)."""
    assert probe("engine") == {"multiply": X86_LINUX, "matmul": X86_LINUX, "new_stream": X86_LINUX}
    kept = probe("mlx-only")
    assert kept["multiply"] is False  # no CPU MLX runs on flushes by default
    if X86_LINUX:  # (another platform's BLAS may flush of its own)
        assert kept == {"multiply": False, "matmul": False, "new_stream": False}


def test_mlx_flushes_denormals_in_this_process():
    """The check the trainer's notice uses (pytest imports engine before any MLX evaluation)."""
    assert denormals.mlx_flushes_denormals() is X86_LINUX


def test_threads_started_after_the_import_inherit_it():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(denormals.denormals_flushed_here()))
    thread.start()
    thread.join()
    assert denormals.denormals_flushed_here() is X86_LINUX
    assert seen == [X86_LINUX]


def test_flush_denormals_reports_what_it_set():
    assert denormals.flush_denormals() is X86_LINUX


def test_left_alone_off_x86_linux(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert denormals.flush_denormals() is False
    assert denormals.denormals_flushed_here() is False
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert denormals.flush_denormals() is False


def test_a_loaded_openblas_has_its_threads_restarted_once():
    """Where OpenBLAS is preloaded (as tuner and .ci/run do), importing engine restarted its worker
    threads, which had started before Python and so keep denormals; a second call leaves them be."""
    from engine.cpu_streams import BlasThreads

    assert denormals._openblas_restarted is (X86_LINUX and BlasThreads.find() is not None)
    assert denormals.flush_denormals() is X86_LINUX
    assert denormals._openblas_restarted is (X86_LINUX and BlasThreads.find() is not None)
