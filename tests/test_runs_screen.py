"""The Runs screen lists run folders written by MetricsWriter, opens one, and follows a live one."""

import asyncio
import time
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import DataTable, Static

from engine import events as ev
from engine.runs.metrics import MetricsWriter
from tui.screens.runs_screen import RunsScreen

from .conftest import wait_until
from .test_runs import evaluation, make_old, started, write_run

T0 = 1_700_000_000.0


def train(step: int, loss: float) -> ev.TrainReport:
    return ev.TrainReport(
        step=step, total_steps=100, epoch=step / 50, loss=loss, prompt_loss=3.0, completion_loss=loss,
        learning_rate=1e-4, grad_norm=1.0, update_norm=0.1, tokens_per_second=1000.0, trained_tokens=step * 100,
        peak_memory_gb=1.0, active_memory_gb=1.0, cache_memory_gb=0.0, elapsed=float(step),
    )


def finished(step: int, status: str = "completed") -> ev.RunFinished:
    return ev.RunFinished(step=step, status=status, adapter_dir="", elapsed=1.0)


def make_runs(runs_dir, *, live: bool = False):
    """Three runs, oldest first: a completed one, a stopped one, and a third that never finished."""
    write_run(
        runs_dir / "plw-0.1", started(time=T0), evaluation(0, 2.4), train(10, 2.0), evaluation(20, 1.6),
        train(20, 1.7), train(30, 1.2), evaluation(40, 1.4), train(40, 1.1), finished(40),
    )
    write_run(
        runs_dir / "plw-1.0", started(time=T0 + 3600, prompt_loss_weight=1.0, stage=2), evaluation(0, 2.5),
        train(10, 2.2), evaluation(20, 1.9), finished(20, "stopped"),
    )
    third = write_run(runs_dir / "third", started(time=T0 + 7200, prompt_loss_weight=0.0), evaluation(0, 2.6))
    if not live:
        make_old(third)
    return third


class RunsApp(App):
    def __init__(self, runs_dir):
        super().__init__()
        self.runs_dir = runs_dir

    def on_mount(self) -> None:
        self.push_screen(RunsScreen(self.runs_dir))



def table_of(app) -> DataTable:
    return app.screen.query_one(DataTable)


def summary_of(app) -> str:
    return str(app.screen.query_one("#run-summary", Static).content)


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def test_lists_runs_newest_first_with_their_status(tmp_path):
    make_runs(tmp_path)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            table = table_of(app)
            assert await wait_until(pilot, lambda: table.row_count == 3)
            assert [str(c.label) for c in table.columns.values()] == [
                "name", "status", "stage", "steps", "best valid loss", "PLW", "model", "started",
            ]
            rows = cells(table)
            assert [r[:6] for r in rows] == [
                ["third", "interrupted", "1/2", "0/100", "2.600", "0"],
                ["plw-1.0", "stopped", "2/2", "20/100", "1.900", "1"],
                ["plw-0.1", "completed", "1/2", "40/100", "1.400", "0.1"],
            ]
            assert rows[2][7] == time.strftime("%Y-%m-%d %H:%M", time.localtime(T0))

            write_run(tmp_path / "newest", started(time=T0 + 9000))  # no evaluation yet
            await pilot.press("r")
            assert await wait_until(pilot, lambda: table.row_count == 4)
            assert cells(table)[0][:5] == ["newest", "running", "1/2", "0/100", "—"]

    asyncio.run(scenario())


def test_enter_opens_the_selected_run(tmp_path):
    make_runs(tmp_path)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            assert await wait_until(pilot, lambda: table_of(app).row_count == 3)
            await pilot.press("down", "down", "enter")
            assert await wait_until(pilot, lambda: summary_of(app).startswith("plw-0.1"))
            text = summary_of(app)
            assert "completed" in text and "step 40/100" in text
            assert "best valid completion loss 1.400 at step 40" in text
            assert str(tmp_path / "plw-0.1") in text

    asyncio.run(scenario())


def test_an_open_running_run_is_followed_live(tmp_path):
    live = make_runs(tmp_path, live=True)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            assert await wait_until(pilot, lambda: table_of(app).row_count == 3)
            await pilot.press("enter")  # the newest run, still being written
            assert await wait_until(pilot, lambda: "running" in summary_of(app))
            assert "loss 2.600 at step 0" in summary_of(app)

            writer = MetricsWriter(live)
            writer(train(10, 2.0))
            writer(evaluation(20, 1.25))
            assert await wait_until(pilot, lambda: "loss 1.250 at step 20" in summary_of(app))
            assert "step 20/100" in summary_of(app)

            writer(finished(20))
            writer.close()
            assert await wait_until(pilot, lambda: summary_of(app).startswith("third: completed"))

    asyncio.run(scenario())


def test_an_open_stopped_run_that_is_resumed_is_followed_again(tmp_path):
    make_runs(tmp_path)
    stopped = tmp_path / "plw-1.0"

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            assert await wait_until(pilot, lambda: table_of(app).row_count == 3)
            await pilot.press("down", "enter")  # the second newest: the stopped run
            assert await wait_until(pilot, lambda: summary_of(app).startswith("plw-1.0: stopped"))

            writer = MetricsWriter(stopped)  # resumed (by R, or tuner train --resume elsewhere)
            writer(started(time=T0 + 9000, prompt_loss_weight=1.0, stage=2, resumed_from=20))
            writer(train(30, 1.5))
            writer(evaluation(40, 1.2))
            writer(finished(40))
            writer.close()
            assert await wait_until(pilot, lambda: summary_of(app).startswith("plw-1.0: completed"), 15), summary_of(app)
            assert "loss 1.200 at step 40" in summary_of(app)

    asyncio.run(scenario())


@pytest.fixture
def utc(monkeypatch):
    """The started column shows local time; the snapshot must not depend on the machine's zone."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_snapshot(tmp_path, monkeypatch, snap_compare, utc):
    monkeypatch.chdir(tmp_path)  # a relative runs folder keeps tmp_path out of the picture
    runs_dir = Path("runs")
    third = make_runs(runs_dir)
    writer = MetricsWriter(third)  # a finished run's status never depends on the clock
    writer(ev.RunFailed(step=0, error="out of memory"))
    writer.close()

    async def run_before(pilot):
        assert await wait_until(pilot, lambda: table_of(pilot.app).row_count == 3)
        await pilot.press("down", "down", "enter")
        assert await wait_until(pilot, lambda: summary_of(pilot.app).startswith("plw-0.1"))

    assert snap_compare(RunsApp(runs_dir), terminal_size=(100, 30), run_before=run_before)


def test_promote_a_checkpoint_from_the_table(tmp_path):
    """A real short run: its checkpoints are listed with their eval, and P promotes one."""
    import mlx.core as mx
    import numpy as np
    from textual.app import App

    from engine.config import load_stages
    from engine.training.chain import run_chain
    from tui.screens.runs_screen import RunsScreen

    from .conftest import write_config

    [result] = run_chain(load_stages([write_config(tmp_path, iters=6, save_every=2, steps_per_eval=2)]), lambda e: None)

    class Host(App):
        def on_mount(self):
            self.push_screen(RunsScreen(tmp_path / "runs"))

    async def scenario():
        app = Host()
        async with app.run_test(size=(120, 40)) as pilot:
            runs = app.screen.query_one(DataTable)
            for _ in range(100):
                await pilot.pause(0.1)
                if runs.row_count:
                    break
            await pilot.press("enter")
            table = app.screen.query_one("#checkpoints", DataTable)
            for _ in range(100):
                await pilot.pause(0.1)
                if table.row_count:
                    break
            steps = [table.get_row_at(i)[0] for i in range(table.row_count)]
            assert "2" in steps and "6" in steps
            table.move_cursor(row=steps.index("2"))
            table.focus()
            await pilot.press("P")
            await pilot.pause(0.2)

    asyncio.run(scenario())
    promoted = mx.load(str(result.adapter_dir / "adapters.safetensors"))
    step2 = mx.load(str(result.run_dir / "checkpoints" / "step-0000002" / "adapters.safetensors"))
    assert all(np.array_equal(np.array(promoted[k]), np.array(step2[k])) for k in step2)


def test_scan_results_arrive_as_messages_and_a_superseded_one_is_dropped(tmp_path):
    """Results injected as the scan worker would post them, no thread: a newer scan's cancellation
    of an older one makes the older result a no-op."""
    from types import SimpleNamespace

    from engine.runs.listing import list_runs

    make_runs(tmp_path)
    runs = list_runs(tmp_path)

    async def scenario():
        app = RunsApp(tmp_path / "missing")  # its own scans find nothing
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await pilot.pause(0.2)
            stale = RunsScreen.Scanned(runs[:1])
            stale.worker = SimpleNamespace(is_cancelled=True)
            screen.post_message(stale)
            await pilot.pause(0.1)
            assert table_of(app).row_count == 0
            screen.post_message(RunsScreen.Scanned(runs))
            assert await wait_until(pilot, lambda: table_of(app).row_count == 3)
            assert [row[0] for row in cells(table_of(app))] == ["third", "plw-1.0", "plw-0.1"]

    asyncio.run(scenario())
