"""bench/plw_report.py on fake runs: one polyline per run, one point per evaluation, inside the plot.

The metrics files are written through the engine's own events and writer, so the report is tested
against exactly what a real run leaves behind, torn last line included.
"""

import importlib.util
import json
import re
import sys

import pytest

from engine import events as ev
from engine.runs.metrics import MetricsWriter

from .conftest import REPO

spec = importlib.util.spec_from_file_location("plw_report", REPO / "bench" / "plw_report.py")
plw_report = importlib.util.module_from_spec(spec)
sys.modules["plw_report"] = plw_report  # dataclasses look their module up there
spec.loader.exec_module(plw_report)


def _fake_run(folder, plw: float, steps: list[int], torn: bool = False):
    folder.mkdir(parents=True)
    write = MetricsWriter(folder)
    write(ev.RunStarted(
        run_dir=str(folder), adapter_dir=str(folder / "adapters"), stage=1, stages=1, config_file="x.yaml",
        model="m", fine_tune_type="lora", prompt_loss_weight=plw, total_steps=steps[-1], steps_per_epoch=10,
        train_examples=40, valid_examples=12, trainable_params=1, total_params=2, device="cpu",
        compute_dtype="float32",
    ))
    for i, step in enumerate(steps):
        write(ev.EvalReport(
            step=step, split="valid", prompt_loss=3.0 - 0.1 * i * plw, completion_loss=5.0 / (i + 1),
            full_loss=3.0, weighted_loss=3.0, completion_accuracy=min(1.0, 0.3 + 0.1 * i),
            completion_perplexity=1.0, prompt_tokens=1700, completion_tokens=36, examples=12, seconds=1.0,
        ))
    write(ev.EvalReport(  # a test-split evaluation must not become a point of the curves
        step=steps[-1], split="test", prompt_loss=9.0, completion_loss=9.0, full_loss=9.0, weighted_loss=9.0,
        completion_accuracy=0.0, completion_perplexity=1.0, prompt_tokens=1, completion_tokens=1, examples=1,
        seconds=1.0,
    ))
    write(ev.RunFinished(step=steps[-1], status="completed", adapter_dir="a", elapsed=12.0))
    write.close()
    if torn:
        with open(folder / "metrics.jsonl", "a") as f:
            f.write('{"event": "eval", "step": 99, "spl')
    return folder


def _polylines(svg: str) -> list[list[tuple[float, float]]]:
    out = []
    for points in re.findall(r'<polyline[^>]*points="([^"]*)"', svg):
        out.append([tuple(map(float, p.split(","))) for p in points.split()])
    return out


@pytest.fixture
def runs(tmp_path):
    return [
        _fake_run(tmp_path / "plw-1", 1.0, [0, 4, 8, 12]),
        _fake_run(tmp_path / "plw-0.1", 0.1, [0, 4, 8, 12, 16], torn=True),
        _fake_run(tmp_path / "plw-0", 0.0, [0, 5, 10]),
    ]


def test_one_polyline_per_run_with_one_point_per_eval(runs, tmp_path, capsys):
    out = tmp_path / "docs"
    assert plw_report.main([str(p) for p in runs] + ["--out", str(out), "--choices", "4"]) == 0
    svgs = sorted(out.glob("plw-*.svg"))
    assert [p.name for p in svgs] == ["plw-completion-accuracy.svg", "plw-completion-loss.svg", "plw-prompt-loss.svg"]
    for path in svgs:
        svg = path.read_text()
        lines = _polylines(svg)
        # Highest PLW first; the torn line and the test-split eval add no point.
        assert [len(points) for points in lines] == [4, 5, 3]
        for points in lines:
            xs = [x for x, _ in points]
            assert xs == sorted(xs) and len(set(xs)) == len(xs)  # steps increase left to right
            for x, y in points:
                assert 0 <= x <= plw_report.WIDTH and 0 <= y <= plw_report.HEIGHT
        for label in ("PLW 1", "PLW 0.1", "PLW 0"):
            assert f">{label}<" in svg
    # The same step lands on the same x in every line (the first eval of each run is step 0).
    first_x = {points[0][0] for path in svgs for points in _polylines(path.read_text())}
    assert len(first_x) == 1
    table = capsys.readouterr().out
    assert table.count("\n| PLW ") == 3 and "| PLW 0.1 | 16 |" in table


def test_chance_levels_follow_the_completion_length(runs):
    refs = plw_report.chance_refs([plw_report.load_run(p) for p in runs], choices=4)
    (loss,) = refs["completion_loss"]
    assert loss[0] == pytest.approx(1.3863 / 3, abs=1e-4)  # ln 4 over 3 completion tokens
    assert [y for y, _ in refs["completion_accuracy"]] == pytest.approx([2 / 3, 0.75])


def test_falling_loss_is_drawn_falling(runs, tmp_path):
    plw_report.main([str(runs[0]), "--out", str(tmp_path / "d")])
    (points,) = _polylines((tmp_path / "d" / "plw-completion-loss.svg").read_text())
    ys = [y for _, y in points]
    assert ys == sorted(ys)  # SVG y grows downwards, so a falling loss has growing y


def test_non_finite_values_are_left_out():
    svg = plw_report.svg_line_plot([("a", [(0, 1.0), (1, float("nan")), (2, 0.5)]), ("b", [])], "t", "x", "y")
    assert [len(p) for p in _polylines(svg)] == [2]
    assert ">b<" in svg


def test_letter_accuracy_bounds(tmp_path):
    rows = [
        {"completion_tokens": 3, "completion_accuracy": 1.0},  # letter surely right
        {"completion_tokens": 3, "completion_accuracy": 2 / 3},  # one token wrong: letter or end token
        {"completion_tokens": 3, "completion_accuracy": 1 / 3},  # letter surely wrong
        {"completion_tokens": 3, "completion_accuracy": 1.0},
    ]
    (tmp_path / "eval_examples.json").write_text(json.dumps({"step": 7, "examples": rows}))
    assert plw_report.letter_accuracy(tmp_path) == {"step": 7, "examples": 4, "low": 0.5, "high": 0.75}
    assert plw_report.letter_accuracy(tmp_path / "missing") is None


def test_nice_ticks_cover_the_range():
    ticks = plw_report.nice_ticks(0.23, 5.6)
    assert ticks[0] <= 0.23 and ticks[-1] >= 5.6 and 3 <= len(ticks) <= 8
    assert plw_report.nice_ticks(2.0, 2.0)  # a flat line still gets ticks
