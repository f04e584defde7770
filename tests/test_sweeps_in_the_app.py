"""Sweeps and reruns as the app's user meets them: a sweep config validates in the editor and
trains with t, a sweep's runs are listed under it in Runs, W trains a run again with another PLW,
and the Train screen's accuracy series shows the answer's own accuracy when the run has one."""

import asyncio
import json
import math
from dataclasses import replace
from pathlib import Path

from engine import events as ev
from engine.runs.listing import list_runs
from tui.app import TunerApp
from tui.config_check import check_config
from tui.screens.path_prompt import PathPrompt

from .conftest import DEMO_DATA, wait_until
from .test_runs import evaluation, started, write_run
from .test_runs_screen import T0, RunsApp, finished, train

SWEEP = f"""model: builtin:tiny-llama
data: {DEMO_DATA}
prompt_loss_weight: [0, 0.1]
seed: [1, 2]
iters: 2
"""


def run(scenario):
    asyncio.run(scenario())


def test_a_sweep_config_validates_in_the_editor_and_says_it_is_a_sweep(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    checked = check_config([path], 0, {str(path): SWEEP})
    assert not checked.errors
    assert checked.sweep_runs == 4
    bad = SWEEP.replace("[0, 0.1]", "[0, 1.5]")
    checked = check_config([path], 0, {str(path): bad})
    assert checked.errors and checked.errors[0].line == 3 and "prompt_loss_weight" in checked.errors[0].message


def test_the_data_screen_counts_a_sweeps_data_once_and_names_every_plw_it_tries(tmp_path):
    from tui.dataset_work import load_dataset

    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    loaded = load_dataset([path], None, use_cache=False)
    assert loaded.stats.plw_text == "0, 0.1"  # the screen's header
    assert loaded.stats.split_guidance("train").endswith("This sweep tries PLW 0 and 0.1.")


def test_t_on_a_sweep_config_trains_the_sweep(tmp_path, monkeypatch):
    import engine.training.sweep as sweep_module

    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    trained = []
    monkeypatch.setattr(sweep_module, "run_sweep", lambda sweep, emit, control: trained.append(sweep) or [])
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))

    async def scenario():
        app = TunerApp(path, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.5)
            app.action_start_training()
            assert await wait_until(pilot, lambda: trained, 60)
            assert [p.name for p in trained[0].points] == ["plw0-seed1", "plw0.1-seed1", "plw0-seed2", "plw0.1-seed2"]

    run(scenario)


def write_sweep(runs_dir: Path) -> Path:
    sweep = runs_dir / "demo-sweep-20261206-120000"
    points = []
    for i, name in enumerate(("plw0-seed1", "plw1-seed1")):
        write_run(sweep / name, started(time=T0 + i), evaluation(0, 2.4), train(10, 2.0), evaluation(20, 1.6), finished(20))
        points.append({"name": name, "values": {"prompt_loss_weight": float(i)}, "run_dir": name, "status": "completed"})
    (sweep / "sweep.json").write_text(json.dumps({"points": points}))
    return sweep


def test_a_sweeps_runs_are_listed_under_it(tmp_path):
    write_run(tmp_path / "alone", started(time=T0 - 100), evaluation(0, 2.4), finished(0))
    sweep = write_sweep(tmp_path)
    names = sorted(summary.name for summary in list_runs(tmp_path))
    assert names == ["alone", f"{sweep.name}/plw0-seed1", f"{sweep.name}/plw1-seed1"]


def test_w_trains_the_selected_run_again_with_the_plw_asked_for(tmp_path):
    write_run(tmp_path / "demo", started(time=T0), evaluation(0, 2.4), train(10, 2.0), finished(10))
    asked = []

    class App(RunsApp):
        def rerun_run(self, run_dir, overrides):
            asked.append((Path(run_dir).name, overrides))

    async def scenario():
        app = App(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 1)
            await pilot.press("W")
            assert await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt))
            await pilot.press("ctrl+a", "ctrl+k", *"1.5", "enter")  # out of range: refused
            await pilot.pause(0.2)
            assert not asked
            await pilot.press("W")
            assert await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt))
            await pilot.press("ctrl+a", "ctrl+k", *"0.01", "enter")
            assert await wait_until(pilot, lambda: asked)
            assert asked == [("demo", {"prompt_loss_weight": 0.01})]

    run(scenario)


def test_the_accuracy_series_is_the_answers_when_the_run_has_one():
    from tui.screens.train_screen import accuracy_of

    report = ev.EvalReport(step=10, split="valid", prompt_loss=2.0, completion_loss=1.0, full_loss=1.5,
                           weighted_loss=1.0, completion_accuracy=0.75, completion_perplexity=2.7,
                           prompt_tokens=100, completion_tokens=30, examples=10, seconds=0.1)
    assert accuracy_of(report) == ("completion accuracy", 0.75)  # plain text: no answer tokens
    assert accuracy_of(replace(report, answer_accuracy=0.25)) == ("answer accuracy", 0.25)
    assert math.isnan(replace(report, answer_accuracy=math.nan).answer_accuracy)
