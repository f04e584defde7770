"""bench/plw_sweep_report.py: its intervals against published values, and its tables on a fake sweep
folder written through the engine's own events and writer."""

import importlib.util
import json
import sys

import pytest

from engine import events as ev
from engine.runs.metrics import MetricsWriter

from .conftest import REPO

sys.path.insert(0, str(REPO))  # the report imports bench.plw_report's plot code
spec = importlib.util.spec_from_file_location("plw_sweep_report", REPO / "bench" / "plw_sweep_report.py")
report = importlib.util.module_from_spec(spec)
sys.modules["plw_sweep_report"] = report  # dataclasses look their module up there
spec.loader.exec_module(report)


def test_wilson_interval_matches_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775
    assert report.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert report.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)


def test_difference_interval_matches_newcombe_1998():
    # Newcombe (1998), Statistics in Medicine 17:873, method 10: 56/70 - 48/80 -> 0.0524 to 0.3339
    d, lo, hi = report.newcombe(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def _eval(step, split, loss, acc, n=300):
    return ev.EvalReport(step=step, split=split, prompt_loss=3.0, completion_loss=loss, full_loss=3.0,
                         weighted_loss=loss, completion_accuracy=acc, completion_perplexity=1.0,
                         prompt_tokens=100, completion_tokens=3 * n, examples=n, seconds=1.0,
                         answer_accuracy=acc, answer_tokens=n)


def _train(step, loss):
    return ev.TrainReport(step=step, total_steps=100, epoch=step / 100, loss=loss, prompt_loss=1.0,
                          completion_loss=loss, learning_rate=1e-3, grad_norm=1.0, update_norm=1.0,
                          tokens_per_second=1.0, trained_tokens=step, peak_memory_gb=1.0, active_memory_gb=1.0,
                          cache_memory_gb=0.0, elapsed=1.0)


def _fake_sweep(folder):
    """PLW 0 (seeds 1, 2) learns fast and ends at 270/300; PLW 1 (seed 1) slower, 240/300; PLW 1 seed 2
    was cut off before its test."""
    points = []
    for plw, seed, losses, right in ((0, 1, [2.0, 0.4, 0.15], 270), (0, 2, [2.0, 0.3, 0.05], 270),
                                     (1, 1, [2.0, 0.9, 0.45], 240), (1, 2, [2.0, 1.5], None)):
        name = f"plw{plw}-seed{seed}"
        (folder / name).mkdir(parents=True)
        write = MetricsWriter(folder / name)
        for i, loss in enumerate(losses):
            write(_train(50 * i + 10, loss))
            write(_eval(50 * i, "valid", loss, 0.25 + 0.2 * i, n=60))
        if right is not None:
            write(_eval(100, "test", losses[-1], right / 300))
        points.append({"name": name, "values": {"prompt_loss_weight": plw, "seed": seed}, "run_dir": name,
                       "status": "done" if right else "running"})
    points.append({"name": "plw0.1-seed1", "values": {"prompt_loss_weight": 0.1, "seed": 1}, "run_dir": None,
                   "status": "pending"})
    (folder / "sweep.json").write_text(json.dumps({"points": points}))


def test_tables_from_a_sweep_folder(tmp_path, capsys):
    _fake_sweep(tmp_path / "sweep")
    assert report.main([str(tmp_path / "sweep"), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "| 0 | 1 | 270/300 | 90.0% |" in out
    assert "| 1 | 2 | (not finished) | | |" in out
    assert "| 0 | mean | | **90.0%** |" in out
    lo, hi = report.wilson(270, 300)
    assert f"{lo:.1%} to {hi:.1%}" in out
    d, lo, hi = report.newcombe(270, 300, 240, 300)
    assert f"| 0 | 1 | {d:+.1%} | {lo:+.1%} to {hi:+.1%} |" in out  # seed 1 against seed 1
    assert "| 0 | 2 | +" not in out  # PLW 1 seed 2 has no test: no pair
    # validation losses at steps 0, 50, 100: PLW 0 below 0.5 at step 50, PLW 1 only at step 100
    assert "| 0 | 1 | 50 | 100 | not reached |" in out
    assert "| 0 | 2 | 50 | 100 | 100 |" in out
    assert "| 1 | 1 | 100 | not reached | not reached |" in out
    assert "| 1 | 2 | not yet | not yet | not yet |" in out  # still training: it may get there
    # by step, the mean over the seeds that reached it: PLW 0 at step 50 is (0.4 + 0.3) / 2
    assert "| 50 | 0.350 | 1.200 |" in out  # PLW 1: (0.9 + 1.5) / 2
    assert "| 100 | 0.100 |  |" in out  # PLW 1 seed 2 never got to step 100
    assert "| 0 | 25.0% | 25.0% |" in out
    plot = (tmp_path / "plots" / "valid-completion-loss.svg").read_text()
    assert "PLW 0" in plot and "PLW 1" in plot and plot.count("<polyline") == 2


def test_mean_curve_keeps_only_steps_every_run_reached():
    assert report.mean_curve([[(0, 1.0), (50, 0.5)], [(0, 3.0)]]) == [(0.0, 2.0)]
