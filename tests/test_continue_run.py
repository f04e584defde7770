"""A finished run is never re-run by a resume: its adapters stay, and "train N more" starts a new
run folder, linked from it, from the adapter the run holds now (a promoted checkpoint included)."""

from pathlib import Path

import pytest
from safetensors.numpy import load_file

from engine import events as ev
from engine.cli import main
from engine.config import load_stages
from engine.errors import UserError
from engine.runs.checkpoints import Checkpoints
from engine.runs.folder import next_stage_dir
from engine.runs.more import parse_more
from engine.training.chain import continue_run, resume_run, run_chain

from .conftest import write_config


@pytest.fixture
def completed(tmp_path):
    """A run of 6 steps with checkpoints at 3 and 6, whose step-3 checkpoint was promoted."""
    config = write_config(tmp_path, iters=6, save_every=3, steps_per_eval=100, val_batches=1)
    [result] = run_chain(load_stages([config]), lambda e: None)
    assert result.status == "completed"
    checkpoints = Checkpoints(result.run_dir)
    assert checkpoints.final_step() == 6
    checkpoints.promote(3)
    return result.run_dir


def snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_resuming_a_completed_run_is_refused_and_changes_nothing(completed):
    before = snapshot(completed)
    with pytest.raises(UserError, match="completed at step 6.*--more"):
        resume_run(completed, lambda e: None)
    assert snapshot(completed) == before
    assert Checkpoints(completed).final_step() == 3


def test_cli_resume_of_a_completed_run_says_what_to_do_and_exits_2(completed, capsys):
    before = snapshot(completed)
    assert main(["train", "--resume", str(completed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--more" in err[0] and "resuming would only overwrite" in err[0]
    assert snapshot(completed) == before


def test_a_detached_resume_of_a_completed_run_is_refused_before_any_process_starts(completed, capsys):
    before = snapshot(completed)
    assert main(["train", "--detach", "--resume", str(completed)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tuner: error: ") and "resuming would only overwrite" in err[-1]
    assert len(err) == 2 and err[0].startswith("starting a detached run")  # the progress line, then the one error
    assert snapshot(completed) == before
    assert not (completed.parent / ".launch").exists()  # no detached child was started


def test_continue_trains_a_new_linked_run_from_the_promoted_adapter(completed):
    before = snapshot(completed)
    events = []
    result = continue_run(completed, events.append, steps=4)
    assert result.status == "completed" and result.step == 4
    assert result.run_dir != completed and result.run_dir.name.startswith(completed.name + "-more")
    assert next_stage_dir(completed) == result.run_dir.resolve()
    # the old run's files are untouched, only the link is new
    after = snapshot(completed)
    assert after.pop(Path("next_stage"))
    assert after == before
    [started] = [e for e in events if isinstance(e, ev.RunStarted)]
    assert started.total_steps == 4 and started.resumed_from == 0
    promoted = completed / "checkpoints" / "step-0000003" / "adapters.safetensors"
    assert started.config["resume_adapter_file"] == str(promoted)
    assert started.config["iters"] == 4 and started.config["adapter_path"] is None
    new = Checkpoints(result.run_dir)
    assert new.adapter_file.exists() and new.final_step() == 4
    assert set(load_file(str(new.adapter_file))) == set(load_file(str(promoted)))


def test_continue_by_epochs_and_the_more_option(completed, capsys):
    assert main(["train", "--resume", str(completed), "--more", "0.1 epochs", "--quiet"]) == 0
    following = next_stage_dir(completed)
    assert following is not None and (following / "adapters" / "adapters.safetensors").exists()
    assert "epochs: 0.1" in (following / "config.yaml").read_text()


@pytest.mark.parametrize("text, expected", [
    ("200", {"steps": 200}), (" 5 steps", {"steps": 5}), ("2 epochs", {"epochs": 2.0}),
    ("0.5e", {"epochs": 0.5}), ("3 Epoch", {"epochs": 3.0}),
])
def test_parse_more(text, expected):
    assert parse_more(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-3", "1.5", "many", "2 weeks"])
def test_parse_more_rejects(text):
    with pytest.raises(UserError):
        parse_more(text)


# ---------------------------------------------------------------- the same, driven in the app


def test_r_on_a_completed_run_in_the_app_asks_and_trains_more_as_a_new_run(tmp_path, monkeypatch):
    """Runs → a completed run → promote step 3 with P → R: a dialog asks how much more; escape
    changes nothing; 4 trains a new linked run from step 3's weights, the old run untouched."""
    import asyncio

    from textual.widgets import DataTable, Input

    from tui.app import TunerApp
    from tui.screens.path_prompt import PathPrompt

    from .conftest import wait_until

    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path, iters=6, save_every=3, steps_per_eval=100, val_batches=1)
    [old] = run_chain(load_stages([config]), lambda e: None)
    step3 = old.run_dir / "checkpoints" / "step-0000003" / "adapters.safetensors"
    promoted = {}  # the old run's files once step 3 is promoted: what must stay

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("escape", "4")
            runs = app.screen.query_one("#runs", DataTable)
            assert await wait_until(pilot, lambda: runs.row_count == 1, 20)
            await pilot.press("enter")
            table = app.screen.query_one("#checkpoints", DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 2, 20)
            marks = lambda: {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[4]) for i in range(table.row_count)}  # noqa: E731
            assert marks() == {"3": "", "6": "●"}
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("P")
            assert await wait_until(pilot, lambda: marks() == {"3": "● promoted", "6": ""}, 20)
            assert "final adapter: step 3" in str(app.screen.query_one("#run-summary").content)
            promoted.update(snapshot(old.run_dir))

            await pilot.press("R")
            assert await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt), 10)
            await pilot.press("escape")
            await pilot.pause(0.3)
            assert app.control is None and snapshot(old.run_dir) == promoted

            await pilot.press("R")
            assert await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt), 10)
            assert app.screen.query_one(Input).value == "6"  # the run's own length, to change
            await pilot.press("backspace", "4", "enter")
            done = lambda: [e for e in app.history if isinstance(e, ev.RunFinished)]  # noqa: E731
            assert await wait_until(pilot, lambda: done(), 120)
            assert done()[-1].status == "completed" and done()[-1].step == 4
            [started] = [e for e in app.history if isinstance(e, ev.RunStarted)]
            assert started.run_dir != str(old.run_dir) and started.total_steps == 4
            assert started.config["resume_adapter_file"] == str(step3.resolve())
            assert app.current_mode == "train"

    asyncio.run(scenario())
    # metrics (so its status and start time), checkpoints and the promoted adapter: all as they were
    after = snapshot(old.run_dir)
    assert after.pop(Path("next_stage")) and after == promoted
    assert (old.adapter_dir / "adapters.safetensors").read_bytes() == step3.read_bytes()


def test_a_new_run_clears_the_samples_of_the_run_shown_before(tmp_path, monkeypatch):
    """The Train screen's samples panel belongs to the run shown: a new run's start empties it."""
    import asyncio
    import dataclasses

    from textual.widgets import Static

    from .conftest import wait_until
    from .test_screens_snapshot import fake_run, make_app

    app = make_app(tmp_path, monkeypatch)
    events = fake_run()
    other = dataclasses.replace(events[0], run_dir="runs/other", adapter_dir="runs/other/adapters")

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode("train")
            await pilot.pause(0.2)
            panel = app.train_screen.query_one("#train-samples", Static)
            for event in events:
                app.events.put(event)
            assert await wait_until(pilot, lambda: "Velspar" in str(panel.content), 10)
            app.events.put(other)
            assert await wait_until(pilot, lambda: "Velspar" not in str(panel.content), 10)
            assert "samples appear at each evaluation" in str(panel.content)

    asyncio.run(scenario())


def test_the_final_adapters_checkpoint_is_read_from_its_record_and_checked_against_the_file(completed):
    """``final.json`` answers without reading the weights; an adapter changed behind its back
    (copied in by hand) is recognised by comparing the files instead."""
    checkpoints = Checkpoints(completed)
    assert checkpoints.final_step() == 3  # promoted, recorded
    adapter = checkpoints.adapter_file
    adapter.write_bytes((checkpoints.at(6).folder / "adapters.safetensors").read_bytes())  # by hand
    assert checkpoints.final_step() == 6
    (checkpoints.root / "final.json").unlink()  # a run from before the record
    assert checkpoints.final_step() == 6


def test_resuming_a_run_another_process_trains_is_refused_in_the_foreground_too(tmp_path):
    """Two processes training one folder would interleave its checkpoints and metrics."""
    from engine.runs.control import Control
    from engine.runs.folder import clear_process_record, write_process_record

    control = Control()
    config = write_config(tmp_path, iters=6, steps_per_eval=100, val_batches=1, steps_per_report=1)

    def stop_at_2(event):
        if isinstance(event, ev.TrainReport) and event.step == 2:
            control.stop()

    [stopped] = run_chain(load_stages([config]), stop_at_2, control)
    assert stopped.status == "stopped"
    write_process_record(stopped.run_dir)  # this process, alive: as a detached trainer would be
    try:
        before = snapshot(stopped.run_dir)
        with pytest.raises(UserError, match="still training in process"):
            resume_run(stopped.run_dir, lambda e: None)
        assert snapshot(stopped.run_dir) == before
    finally:
        clear_process_record(stopped.run_dir)


def test_set_and_more_are_refused_where_they_cannot_apply(completed, capsys):
    assert main(["train", "--resume", str(completed), "--set", "iters=9"]) == 2
    assert "keeps the config it was trained with" in capsys.readouterr().err
    assert main(["train", str(completed / "config.yaml"), "--more", "5"]) == 2
    assert "--more goes with --resume" in capsys.readouterr().err


def test_more_steps_go_on_at_the_learning_rate_the_run_ended_with(tmp_path):
    """The run's cosine schedule had decayed to its end; starting it over (a warmup back to the
    peak) made the validation loss of the continued demo rise from 1.60 to 2.13."""
    config = write_config(tmp_path, iters=6, steps_per_report=2, steps_per_eval=100, val_batches=1,
                          lr_schedule={"name": "cosine_decay", "arguments": [2e-3, 2, 1e-4], "warmup": 1})
    [first] = run_chain(load_stages([config]), lambda e: None)
    events = []
    more = continue_run(first.run_dir, events.append, steps=4)
    ended_at = [e.learning_rate for e in run_reports(first.run_dir)][-1]
    assert ended_at < 5e-4  # decayed
    rates = [e.learning_rate for e in events if isinstance(e, ev.TrainReport)]
    assert rates and all(abs(rate - ended_at) < 1e-12 for rate in rates)
    [stage] = load_stages([more.run_dir / "config.yaml"])
    assert stage.config.lr_schedule is None and stage.config.learning_rate == ended_at


def run_reports(run_dir: Path) -> list[ev.TrainReport]:
    from engine.runs.metrics import read_events

    return [e for e in read_events(run_dir) if isinstance(e, ev.TrainReport)]
