"""The throughput benchmark runs end to end and its JSON says what its table says.

A handful of steps only: this checks the plumbing (both trainers run, both are measured, the
ratio is ours over theirs), not the speed.
"""

import json
import subprocess
import sys

import pytest

from .conftest import DEMO_DATA, REPO


@pytest.fixture(scope="module")
def bench(demo_model_dir):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "throughput.py"), "--json", "--model", str(demo_model_dir),
         "--data", str(DEMO_DATA), "--iters", "6", "--batch-size", "4", "--steps-per-report", "2",
         "--repeats", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # --json prints the JSON line and nothing else
    return json.loads(lines[0])


def test_both_trainers_are_measured(bench):
    for side in (bench["tuner"], bench["mlx_lm"]):
        assert side["tokens_per_second"] > 0
        assert side["peak_memory_gb"] > 0
        assert side["max_rss_gb"] > 0
        assert side["measured_tokens"] > 0
        assert side["examples_seen"] == 6 * 4


def test_ratios_are_ours_over_theirs(bench):
    for key, ratio in bench["ratios"].items():
        assert ratio == pytest.approx(bench["tuner"][key] / bench["mlx_lm"][key])


def test_same_settings_for_both(bench):
    spec = bench["spec"]
    assert (spec["iters"], spec["batch_size"], spec["mask_prompt"]) == (6, 4, False)
    assert "real (non-pad) tokens" in bench["fairness"]
