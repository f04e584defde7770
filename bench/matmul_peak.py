"""This machine's float32 matmul peak, the denominator of MFU, measured afresh and cached.

    python bench/matmul_peak.py           # the peak as tuner sees it; replaces the cached value
    python bench/matmul_peak.py --blas    # Linux: with and without the OpenBLAS preload

Like ``tuner``, the script preloads Debian's OpenBLAS on Linux when it is installed. ``--blas``
runs the measurement twice more in fresh processes, with that preload and without it (the BLAS
inside the Linux ``mlx[cpu]`` wheel), to show the difference the README's BLAS note is about.
Each measurement is cached under its own key (the key includes ``LD_PRELOAD``), so the app shows
MFU against the peak of the set-up it runs with. Measure on a quiet machine: a busy one gives a
low peak, and so a flattering MFU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: the engine lives beside bench/
    sys.path.insert(0, str(REPO))


def compare_blas() -> int:
    from engine.levers.platform_check import openblas_path

    library = openblas_path()
    if not sys.platform.startswith("linux") or library is None:
        sys.exit("--blas compares against Debian's OpenBLAS preload: Linux with libopenblas0-pthread only")
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    runs = {
        "OpenBLAS preloaded": dict(plain, LD_PRELOAD=library),
        "the wheel's own BLAS": dict(plain, TUNER_NO_BLAS_PRELOAD="1"),
    }
    peaks = {}
    for label, env in runs.items():
        done = subprocess.run([sys.executable, __file__, "--gflops"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(done.stderr)
        peaks[label] = float(done.stdout)
        print(f"{label:22}{peaks[label]:10.1f} GFLOP/s")
    fast, slow = peaks.values()
    print(f"{'ratio':22}{fast / slow:10.1f} x")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Measure this machine's float32 matmul peak (cached for MFU).")
    p.add_argument("--blas", action="store_true", help="Linux: measure with and without the OpenBLAS preload")
    p.add_argument("--gflops", action="store_true", help="print the bare number only (used by --blas)")
    args = p.parse_args(argv)
    if args.blas:
        return compare_blas()
    from engine.levers.platform_check import maybe_reexec_with_openblas

    maybe_reexec_with_openblas()  # before MLX loads, as tuner does
    from engine.training.flops import machine_key, matmul_peak

    gflops = matmul_peak(refresh=True) / 1e9
    if args.gflops:
        print(f"{gflops:.1f}")
    else:
        print(f"matmul peak {gflops:.1f} GFLOP/s (float32)\nmachine     {machine_key()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
