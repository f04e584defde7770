"""engine/runs/compare.py: the numbers the compare screen shows, against hand-computed ones."""

import json
import math

import numpy as np
import pytest

from engine import events as ev
from engine.errors import UserError
from engine.runs import compare as cmp

from .test_runs import evaluation, started, write_run
from .test_runs_screen import finished, train


def test_ema_matches_the_hand_computed_recurrence():
    smoothed = cmp.ema([1.0, 3.0, 2.0], weight=0.5)
    # 1; 0.5*1 + 0.5*3 = 2; 0.5*2 + 0.5*2 = 2
    np.testing.assert_allclose(smoothed, [1.0, 2.0, 2.0])
    assert list(cmp.ema([])) == []


def test_summary_best_step_final_and_steps_to_threshold():
    points = [(0, 2.0), (10, 1.2), (20, 1.2), (30, 1.5)]
    s = cmp.summarize(points, completion=points, threshold=1.3)
    assert (s.best, s.best_step, s.final, s.steps_to_threshold) == (1.2, 10, 1.5, 10)
    never = cmp.summarize(points, completion=points, threshold=1.0)
    assert never.steps_to_threshold == -1
    accuracy = cmp.summarize([(0, 0.25), (10, 0.5), (20, 0.4)], higher_is_better=True)
    assert (accuracy.best, accuracy.best_step, accuracy.final) == (0.5, 10, 0.4)
    empty = cmp.summarize([])
    assert math.isnan(empty.best) and empty.best_step == -1


def test_default_threshold_is_the_worst_runs_best_and_best_run_is_marked():
    a, b = [(0, 2.0), (10, 1.1)], [(0, 2.0), (10, 1.4), (20, 1.6)]
    assert cmp.default_threshold([a, b, []]) == 1.4
    assert math.isnan(cmp.default_threshold([[]]))
    summaries = [cmp.summarize(a), cmp.summarize(b), cmp.Summary()]
    assert cmp.best_run(summaries) == 0
    assert cmp.best_run(summaries, higher_is_better=True) == 1
    assert cmp.best_run([cmp.Summary()]) is None


def test_legend_names_only_the_values_that_differ():
    settings = [
        {"prompt_loss_weight": 0.01, "seed": 2, "lora_parameters.rank": 8, "name": "a", "model": "m"},
        {"prompt_loss_weight": 0.1, "seed": 2, "lora_parameters.rank": 16, "name": "b", "model": "m"},
    ]
    assert cmp.differing_keys(settings) == ["prompt_loss_weight", "lora_parameters.rank"]
    assert cmp.legend_labels(settings, ["a", "b"]) == ["PLW 0.01, rank 8", "PLW 0.1, rank 16"]
    same = [{"seed": 1}, {"seed": 1}]
    assert cmp.legend_labels(same, ["run-a", "run-b"]) == ["run-a", "run-b"]
    assert cmp.flatten({"lora_parameters": {"rank": 8}, "x": {}}) == {"lora_parameters.rank": 8, "x": {}}


def test_seed_groups_mean_and_spread_per_other_value():
    settings = [{"prompt_loss_weight": p, "seed": s} for p in (0.0, 1.0) for s in (0, 1, 2)]
    bests = [1.0, 2.0, 3.0, 0.5, 0.5, 0.8]
    groups = cmp.seed_groups(settings, [cmp.Summary(best=b) for b in bests])
    assert [g.label for g in groups] == ["PLW 0", "PLW 1"]
    g0, g1 = groups
    assert (g0.runs, g0.mean, g0.low, g0.high) == (3, 2.0, 1.0, 3.0)
    assert g0.std == pytest.approx(math.sqrt(2 / 3))  # ((1-2)² + 0 + (3-2)²) / 3
    assert g1.mean == pytest.approx(0.6) and g1.std == pytest.approx(np.std([0.5, 0.5, 0.8]))
    # one run per seed and nothing else differing is one group; no seed difference, no groups
    assert [g.label for g in cmp.seed_groups(settings[:3], [cmp.Summary(best=b) for b in bests[:3]])] == ["all runs"]
    assert cmp.seed_groups([{"seed": 0, "x": 1}, {"seed": 0, "x": 2}], [cmp.Summary(1.0)] * 2) == []


def test_a_run_read_from_its_file_has_its_series_nan_filtered_and_x_axes(tmp_path):
    run_dir = write_run(
        tmp_path / "a", started(config={"prompt_loss_weight": 0.1, "seed": 3}), evaluation(0, 2.0),
        train(10, 1.8), evaluation(20, float("nan")), train(20, 1.5), evaluation(40, 1.2), finished(40),
    )
    run = cmp.read_run(run_dir)
    assert list(run.series["valid completion"]) == [(0, 2.0), (40, 1.2)]
    assert list(run.series["train loss"]) == [(10, 1.8), (20, 1.5)]
    assert list(run.series["answer accuracy"]) == []  # the events predate answer accuracy
    assert run.finished and run.config == {"prompt_loss_weight": 0.1, "seed": 3}
    np.testing.assert_allclose(run.x_values([0, 25, 50], "epoch"), [0, 0.5, 1.0])  # 50 steps per epoch
    # 100 tokens a step from the reports, interpolated from (0, 0)
    np.testing.assert_allclose(run.x_values([5, 20], "tokens"), [500, 2000])
    np.testing.assert_allclose(run.x_values([5], "step"), [5])


def test_answer_accuracy_is_read_when_the_eval_event_carries_it(tmp_path):
    run = cmp.CompareRun(tmp_path)
    report = evaluation(10, 1.0)
    object.__setattr__(report, "answer_accuracy", 0.75)  # the field another change adds
    run.add([report, ev.RunFailed(step=10, error="x")])
    assert list(run.series["answer accuracy"]) == [(10, 0.75)] and run.finished


def test_the_test_split_is_kept_apart_and_summarized_beside_the_validation(tmp_path):
    run = cmp.CompareRun(tmp_path)
    test = evaluation(40, 0.9, split="test")
    object.__setattr__(test, "answer_accuracy", 0.8)
    run.add([evaluation(40, 1.2), test])
    assert list(run.series["valid completion"]) == [(40, 1.2)]  # the test split is no validation point
    assert run.test == {"valid completion": 0.9, "answer accuracy": 0.8, "valid prompt": 3.0}
    s = cmp.summarize(list(run.series["valid completion"]), test=run.test["valid completion"])
    assert (s.best, s.test) == (1.2, 0.9)


def test_seed_groups_average_the_test_values_of_the_runs_that_have_one():
    settings = [{"prompt_loss_weight": p, "seed": s} for p in (0.0, 1.0) for s in (1, 2)]
    summaries = [cmp.Summary(best=0.9, test=0.8), cmp.Summary(best=0.9, test=0.7),
                 cmp.Summary(best=0.5, test=0.4), cmp.Summary(best=0.6)]
    g0, g1 = cmp.seed_groups(settings, summaries)
    assert (g0.test_mean, g0.tested) == (pytest.approx(0.75), 2)
    assert (g1.test_mean, g1.tested) == (0.4, 1)


def test_config_yaml_is_used_when_the_started_event_has_none(tmp_path):
    run_dir = write_run(tmp_path / "a", started(), evaluation(0, 2.0))
    (run_dir / "config.yaml").write_text("prompt_loss_weight: 0.01\nseed: 2\n")
    assert cmp.run_settings(cmp.read_run(run_dir, {"seed": 5})) == {"prompt_loss_weight": 0.01, "seed": 5}


def test_sweep_json_lists_its_runs_relative_or_absolute(tmp_path):
    sweep = tmp_path / "sweep-plw"
    sweep.mkdir()
    other = tmp_path / "elsewhere"
    (sweep / "sweep.json").write_text(json.dumps({"points": [
        {"run_dir": "plw-0", "values": {"prompt_loss_weight": 0}},
        {"run_dir": str(other), "values": {"prompt_loss_weight": 1}},
        {"name": "plw-2", "run_dir": None, "values": {"prompt_loss_weight": 2}, "status": "pending"},
    ]}))
    assert cmp.read_sweep(sweep) == [(sweep / "plw-0", {"prompt_loss_weight": 0}),
                                     (other, {"prompt_loss_weight": 1})]
    (sweep / "plw-0").mkdir()
    assert cmp.sweep_of(sweep / "plw-0") == sweep
    assert cmp.sweep_of(other) is None
    other.mkdir()
    (other / "sweep_point.json").write_text(json.dumps({"sweep": "../sweep-plw"}))
    assert cmp.sweep_of(other) == other / "../sweep-plw"
    (other / "sweep_point.json").write_text(json.dumps({"sweep": str(sweep)}))  # as engine/training/sweep.py writes it
    assert cmp.sweep_of(other) == sweep


@pytest.mark.parametrize("text, says", [
    ("{", "not JSON"),
    ('{"points": 3}', "'points' must be a list"),
    ('{"points": [{"values": {}}]}', "points[0] needs 'run_dir'"),
    ('{"points": [{"run_dir": "a", "values": 1}]}', "points[0] needs 'run_dir'"),
    ('{"points": ["a"]}', "points[0] needs 'run_dir'"),
])
def test_a_bad_sweep_json_is_one_line_naming_the_file_and_key(tmp_path, text, says):
    (tmp_path / "sweep.json").write_text(text)
    with pytest.raises(UserError) as error:
        cmp.read_sweep(tmp_path)
    assert str(tmp_path / "sweep.json") in str(error.value) and says in str(error.value)
    assert "\n" not in str(error.value)


def test_newest_sweep_is_the_one_whose_manifest_changed_last(tmp_path):
    import os

    assert cmp.newest_sweep(tmp_path) is None
    for age, name in ((100, "old"), (0, "new")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.json").write_text("{}")
        os.utime(tmp_path / name / "sweep.json", (1e9 - age, 1e9 - age))
    (tmp_path / "run").mkdir()
    assert cmp.newest_sweep(tmp_path) == tmp_path / "new"
