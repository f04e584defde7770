"""Pilot tests: the app driven from the keyboard the way a person would."""

import asyncio

from textual.widgets import DataTable, TextArea

from engine import events as ev
from tui.app import TunerApp

from .conftest import wait_until, write_config


def has(app, kind, **fields):
    return any(isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()) for e in app.history)


def text_of(widget) -> str:
    return str(widget.render())


def run(scenario):
    asyncio.run(scenario())


def test_config_edit_into_an_error_and_back(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.config_screen
            check = screen.query_one("#config-check")
            assert await wait_until(pilot, lambda: "valid" in text_of(check), 60)
            area = screen.query_one(TextArea)
            original = area.text
            area.load_text(original.replace("batch_size: 8", "batch_size: many"))
            line = 1 + next(i for i, l in enumerate(area.text.splitlines()) if l.startswith("batch_size"))
            assert await wait_until(pilot, lambda: "batch_size" in text_of(check) and "✗" in text_of(check), 60)
            assert f":{line}:" in text_of(check)
            assert screen.error_line == line
            await pilot.press("ctrl+g")
            assert area.cursor_location[0] == line - 1
            assert screen.dirty and "(modified)" in screen.sub_title
            area.load_text(original)
            assert await wait_until(pilot, lambda: "✓" in text_of(check), 60)
            table = screen.query_one("#config-resolved", DataTable)
            assert table.row_count > 30
            assert "default" in str(table.get_row("optimizer")[2])

    run(scenario)


def test_save_writes_the_editor_text(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.config_screen
            area = screen.query_one(TextArea)
            assert await wait_until(pilot, lambda: "iters" in area.text, 60)
            area.load_text(area.text.replace("iters: 20", "iters: 21"))
            await pilot.press("ctrl+s")
            await pilot.pause(0.2)
            assert "iters: 21" in config.read_text()
            assert not screen.dirty

    run(scenario)


def test_train_start_pause_resume_stop_and_open_in_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path, iters=100000, steps_per_report=2, steps_per_eval=100000)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            try:
                await pilot.pause(0.5)
                await pilot.press("t")  # one key, from the config screen
                assert await wait_until(pilot, lambda: has(app, ev.TrainReport), 60)
                assert app.current_mode == "train"
                train = app.train_screen
                assert "step" in text_of(train.query_one("#train-status"))
                await pilot.press("p")
                assert await wait_until(pilot, lambda: has(app, ev.StateChanged, state="paused"), 60)
                assert app.run_state == "paused"
                await pilot.press("p")
                assert await wait_until(pilot, lambda: has(app, ev.StateChanged, state="running"), 60)
                await pilot.press("x")
                assert await wait_until(pilot, lambda: has(app, ev.RunFinished, status="stopped"), 60)
                assert await wait_until(pilot, lambda: app.control is None, 10)
                assert train.query_one("#train-loss").latest is not None
                await pilot.press("4")
                table = app.screen.query_one(DataTable)
                assert await wait_until(pilot, lambda: table.row_count == 1, 10)
                assert "stopped" in str(table.get_row_at(0))
            finally:
                if app.control is not None:
                    app.control.stop()

    run(scenario)
    assert list((tmp_path / "runs").glob("*/adapters/adapters.safetensors"))


def test_quit_during_a_run_asks_then_stops_and_saves(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path, iters=100000, steps_per_report=2, steps_per_eval=100000)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            try:
                await pilot.pause(0.5)
                await pilot.press("t")
                assert await wait_until(pilot, lambda: has(app, ev.TrainReport), 60)
                await pilot.press("ctrl+q")
                await pilot.pause(0.2)
                assert type(app.screen).__name__ == "Confirm"
                await pilot.press("y")
                assert await wait_until(pilot, lambda: has(app, ev.RunFinished, status="stopped"), 60)
            finally:
                if app.control is not None:
                    app.control.stop()

    run(scenario)
    assert list((tmp_path / "runs").glob("*/checkpoints/latest"))


def test_keymap_from_settings_remaps_a_binding(tmp_path, monkeypatch):
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.json").write_text('{"keymap": {"mode-runs": "f4"}}')
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(settings))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("escape")
            await pilot.press("f4")
            await pilot.pause(0.3)
            assert app.current_mode == "runs"
            commands = [c.title for c in app.get_system_commands(app.screen)]
            assert "Start training" in commands and "Stop training and save" in commands

    run(scenario)


def test_every_theme_applies(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))

    async def scenario():
        app = TunerApp(write_config(tmp_path), runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            for name in ("tuner-light", "nord", "tuner-dark"):
                app.theme = name
                await pilot.pause(0.05)
            for mode in ("dataset", "train", "runs", "config"):
                app.switch_mode(mode)
                await pilot.pause(0.1)
                app.theme = "tuner-light"
                await pilot.pause(0.05)
        assert '"theme": "tuner-light"' in (tmp_path / "settings" / "settings.json").read_text()

    run(scenario)


def test_chain_of_configs_switch_stages_and_catch_a_shape_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    first = write_config(tmp_path, "a.yaml")
    second = tmp_path / "b.yaml"
    second.write_text("iters: 5\n")

    async def scenario():
        app = TunerApp([first, second], runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.config_screen
            check = screen.query_one("#config-check")
            assert await wait_until(pilot, lambda: "✓" in text_of(check), 60)
            assert "a.yaml" in text_of(screen.query_one("#config-chain"))
            await pilot.press("right_square_bracket")
            area = screen.query_one(TextArea)
            assert await wait_until(pilot, lambda: area.text == "iters: 5\n", 60)
            table = screen.query_one("#config-resolved", DataTable)
            assert await wait_until(pilot, lambda: "stage 1" in str(table.get_row("batch_size")[2]), 60)
            area.load_text("iters: 5\nlora_parameters:\n  rank: 4\n")
            assert await wait_until(pilot, lambda: "✗" in text_of(check) and "rank" in text_of(check), 60)
            await pilot.press("left_square_bracket")
            assert await wait_until(pilot, lambda: "iters: 20" in area.text, 60)
            await pilot.press("right_square_bracket")  # the unsaved edit of stage 2 survives
            assert await wait_until(pilot, lambda: "rank: 4" in area.text, 60)
            assert second.read_text() == "iters: 5\n"

    run(scenario)


def test_resume_a_stopped_run_from_the_runs_screen(tmp_path, monkeypatch):
    from engine.config import load_stages
    from engine.runs.control import Control
    from engine.training.chain import run_chain

    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path, iters=6, steps_per_eval=100, val_batches=1)
    control = Control()
    control.stop()
    [stopped] = run_chain(load_stages([config]), lambda e: None, control)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("escape", "4")
            table = app.screen.query_one(DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 1, 10)
            await pilot.press("R")
            assert await wait_until(pilot, lambda: has(app, ev.RunFinished, status="completed"), 60)
            started = [e for e in app.history if isinstance(e, ev.RunStarted)]
            assert started[0].run_dir == str(stopped.run_dir) and started[0].resumed_from == 0

    run(scenario)


def test_events_that_arrive_before_the_train_screen_opens_are_shown_when_it_does(tmp_path, monkeypatch):
    """Attaching from the command line starts following before the Train screen exists: the
    evaluation at step 0 and the reports so far must still reach its charts."""
    from .test_screens_snapshot import fake_run, make_app

    app = make_app(tmp_path, monkeypatch)
    events = fake_run()

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            for event in events:
                app.events.put(event)
            assert await wait_until(pilot, lambda: len(app.history) >= len(events), 10)
            assert not app.train_screen.is_mounted
            app.switch_mode("train")
            await pilot.pause(0.3)
            screen = app.train_screen
            last_eval = [e for e in events if isinstance(e, ev.EvalReport)][-1]
            assert screen.query_one("#val-completion").latest == last_eval.completion_loss
            assert len(screen.query_one("#train-loss").history) == 12  # each report once; the NaN one is not drawn
            assert "step 65/100" in text_of(screen.query_one("#train-status"))

    run(scenario)


def test_the_compute_plan_shows_as_one_line_and_opens_lever_by_lever_at_80_columns(tmp_path, monkeypatch):
    from .test_screens_snapshot import PLAN, fake_run, make_app

    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode("train")
            await pilot.pause(0.2)
            panel = app.train_screen.query_one("#train-plan")
            assert not panel.display  # no run yet
            for event in fake_run():
                app.events.put(event)
            assert await wait_until(pilot, lambda: panel.display and panel.region.height > 0, 10)  # shown, laid out
            assert text_of(panel) == "compute plan: fast BLAS, sparse logits, fast SiLU on · 2 off · i: why"
            assert panel.region.height == 1 and panel.region.width <= 80
            await pilot.press("i")
            lines = text_of(panel).splitlines()
            assert lines[0] == "compute plan:" and len(lines) == 1 + len(PLAN)
            assert lines[1] == "  on   fast BLAS — MLX's matmuls run on an optimised BLAS"
            assert lines[4] == "  off  shared prefix — no common prefix"
            await pilot.press("i")
            assert text_of(panel).startswith("compute plan: fast BLAS")
            app.events.put(ev.RunStarted(**{**vars(fake_run()[0]), "run_dir": "runs/other", "compute_plan": ()}))
            assert await wait_until(pilot, lambda: not panel.display, 10)  # a run without a plan shows none

    run(scenario)


def test_the_session_follows_its_events_and_ends_with_the_thread_message(tmp_path, monkeypatch):
    """Events and the thread's end injected, no thread: the loop's state comes from the events,
    a failure is notified, and the end drains what is left before the session goes idle."""
    from engine.runs.control import Control
    from tui.messages import TrainingEnded

    from .test_screens_snapshot import fake_run, make_app

    app = make_app(tmp_path, monkeypatch)
    notes = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append((message, kw.get("severity"))))

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            app.control = Control()
            app.set_state("running")
            for event in fake_run():
                app.events.put(event)
            app.events.put(ev.StateChanged(state="paused", step=65))
            assert await wait_until(pilot, lambda: app.run_state == "paused", 10)
            app.events.put(ev.StateChanged(state="running", step=65))
            app.events.put(ev.RunFailed(step=65, error="out of memory"))
            app.post_message(TrainingEnded())  # the timer may not have drained the last events yet
            await pilot.pause(0.05)
            assert app.control is None and app.run_state == "idle"
            assert isinstance(app.history[-1], ev.RunFailed)
            assert notes == [("failed at step 65: out of memory", "error")]

    run(scenario)


def test_quitting_during_a_run_exits_once_the_thread_has_ended(tmp_path, monkeypatch):
    from engine.runs.control import Control
    from tui.messages import TrainingEnded

    from .test_screens_snapshot import make_app

    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            app.control = control = Control()
            app.set_state("running")
            await pilot.press("escape", "ctrl+q")
            await pilot.pause(0.2)
            await pilot.press("y")
            assert control.stopping and app.run_state == "stopping" and app.is_running
            app.post_message(TrainingEnded())
            assert await wait_until(pilot, lambda: not app.is_running, 10)

    run(scenario)


def test_a_detached_start_that_fails_is_told_and_leaves_the_app_idle(tmp_path, monkeypatch):
    from tui.messages import DetachFailed

    from .test_screens_snapshot import make_app

    app = make_app(tmp_path, monkeypatch)
    notes = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append((message, kw.get("severity"))))

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            app.set_state("starting")
            app.post_message(DetachFailed("run.yaml:3: no such model"))
            assert await wait_until(pilot, lambda: app.run_state == "idle", 10)
            assert notes == [("run.yaml:3: no such model", "error")]

    run(scenario)


def test_the_config_chain_opens_stages_and_replaces_files():
    from tui.config_chain import ConfigChain

    chain = ConfigChain(["a.yaml", "b.yaml", "c.yaml"], index=-1)
    assert (chain.index, chain.current.name, len(chain)) == (2, "c.yaml", 3)
    assert not chain.step(1) and chain.index == 2  # past the end nothing changes
    assert chain.step(-2) and chain.current.name == "a.yaml" and not chain.step(-1)
    chain.open("other.yaml")
    assert [p.name for p in chain.paths] == ["other.yaml", "b.yaml", "c.yaml"]
    assert chain.step(1) and [p.name for p in chain.up_to_current()] == ["other.yaml", "b.yaml"]
