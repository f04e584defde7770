"""The Compare screen, driven by keys: mark two runs on the Runs screen, open them together,
switch series and axes, read the legend and the table, open a sweep, follow a live run."""

import asyncio
import json
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from engine.runs.metrics import MetricsWriter
from tui.screens.compare_screen import CompareScreen
from tui.widgets.compare_chart import CompareChart
from tui.widgets.compare_table import CompareTable
from tui.widgets.seed_table import SeedTable

from .conftest import wait_until
from .test_runs import evaluation, make_old, started, write_run
from .test_runs_screen import RunsApp, finished, train

T0 = 1_700_000_000.0


def make_pair(runs_dir):
    """Two finished runs that differ by PLW only: PLW 0.01 reaches the lower completion loss."""
    common = {"model": "builtin:tiny-llama", "seed": 2, "name": None}
    write_run(runs_dir / "plw-0.01", started(time=T0, config={**common, "prompt_loss_weight": 0.01}),
              evaluation(0, 2.4), train(10, 2.0), evaluation(20, 1.3), train(20, 1.5), evaluation(40, 1.1),
              train(40, 1.0), finished(40))
    write_run(runs_dir / "plw-1", started(time=T0 + 60, config={**common, "prompt_loss_weight": 1.0}),
              evaluation(0, 2.5), train(10, 2.2), evaluation(20, 1.9), train(20, 1.8), evaluation(40, 1.6),
              train(40, 1.4), finished(40))


def text_of(app, selector) -> str:
    widget = app.screen.query_one(selector)
    content = widget.render() if not isinstance(widget, Static) else widget.content
    return str(content)


def table_text(app, widget_type) -> str:
    """What a Rich-table Static shows, as plain text."""
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(app.screen.query_one(widget_type).content)
    return console.export_text()


async def open_marked(app, pilot) -> CompareScreen:
    table = app.screen.query_one("#runs", DataTable)
    assert await wait_until(pilot, lambda: table.row_count == 2)
    await pilot.press("space", "down", "space")
    assert await wait_until(pilot, lambda: sum("●" in str(table.get_row_at(i)[0]) for i in range(2)) == 2)
    await pilot.press("c")
    assert await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.runs, 10)
    await pilot.pause(0.2)
    return app.screen


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_mark_two_runs_open_them_and_switch_what_is_shown(tmp_path, size):
    make_pair(tmp_path)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=size) as pilot:
            screen = await open_marked(app, pilot)
            legend = text_of(app, "#compare-legend")
            assert "PLW 0.01" in legend and "PLW 1" in legend and "seed" not in legend
            rows = table_text(app, CompareTable)
            best_line = next(line for line in rows.splitlines() if "★" in line)
            assert "PLW 0.01" in best_line and "1.100" in best_line and "40" in best_line
            assert "steps to compl ≤1.600" in rows  # the worst run's best is the default threshold
            assert not app.screen.query_one(SeedTable).display
            chart = app.screen.query_one(CompareChart)
            assert len(chart._lines) == 2 and chart._lines[1][-1] == (40.0, 1.1)  # marked second: newest first
            await pilot.press("s", "s", "s")  # completion -> answer accuracy -> prompt -> train loss
            assert screen.series == "train loss" and chart._lines[0][0] == (10.0, 2.2)
            assert "best train loss" in table_text(app, CompareTable)
            await pilot.press("e")
            assert screen.smooth and chart._lines[0][1] == (20.0, pytest.approx(0.6 * 2.2 + 0.4 * 1.8))
            await pilot.press("l")
            assert screen.log_scale and "log on" in text_of(app, "#compare-status")
            await pilot.press("x")  # epochs: 50 steps each
            assert chart._x_label == "epoch" and chart._lines[0][0][0] == pytest.approx(0.2)
            await pilot.press("x")  # trained tokens: 100 a step
            assert chart._x_label == "tokens" and chart._lines[0][0][0] == pytest.approx(1000)
            await pilot.press("s")
            assert screen.series == "learning rate" and "best valid completion" in table_text(app, CompareTable)
            await pilot.press("s")  # back to the first
            assert screen.series == "valid completion"
            await pilot.press("t")
            await pilot.press(*"1.2", "enter")
            assert await wait_until(pilot, lambda: "steps to compl ≤1.200" in table_text(app, CompareTable))
            best_line = next(line for line in table_text(app, CompareTable).splitlines() if "★" in line)
            assert best_line.split()[-1] == "40"  # plw-0.01 first reached 1.1 ≤ 1.2 at step 40
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: not isinstance(app.screen, CompareScreen))

    asyncio.run(scenario())


def test_one_mark_is_not_enough_and_answer_accuracy_says_when_absent(tmp_path):
    make_pair(tmp_path)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 2)
            await pilot.press("space", "c")
            await pilot.pause(0.3)
            assert not isinstance(app.screen, CompareScreen)
            await pilot.press("space")  # unmarked again
            assert await wait_until(pilot, lambda: "●" not in str(table.get_row_at(0)[0]))
            await pilot.press("space", "down", "space", "c")
            assert await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.runs, 10)
            await pilot.pause(0.2)
            await pilot.press("s")
            assert "no run has answer accuracy yet" in text_of(app, "#compare-status")

    asyncio.run(scenario())


def test_a_sweep_opens_with_a_seed_table_and_a_live_run_is_followed(tmp_path):
    sweep = tmp_path / "sweep-plw"
    points = []
    for plw in (0.0, 1.0):
        for seed in (0, 1):
            name = f"plw-{plw:g}-seed-{seed}"
            loss = 1.0 + plw + seed / 10
            write_run(sweep / name, started(time=T0, config={"prompt_loss_weight": plw, "seed": seed}),
                      evaluation(0, 2.5), evaluation(20, loss), evaluation(20, loss + 0.3, "test"), finished(20))
            points.append({"run_dir": name, "values": {"prompt_loss_weight": plw, "seed": seed}})
    live = write_run(sweep / "plw-2-seed-0", started(time=T0, config={"prompt_loss_weight": 2.0, "seed": 0}),
                     evaluation(0, 2.5))
    points.append({"run_dir": str(live), "values": {"prompt_loss_weight": 2.0, "seed": 0}})
    (sweep / "sweep.json").write_text(json.dumps({"points": points}))
    make_old(live)

    async def scenario():
        app = RunsApp(sweep)  # the runs folder is the sweep's: c on any of its runs opens the sweep
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 5)
            await pilot.press("c")
            assert await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.runs, 10)
            await pilot.pause(0.2)
            assert len(app.screen.runs) == 5
            seeds = table_text(app, SeedTable)
            assert app.screen.query_one(SeedTable).display
            line = next(line for line in seeds.splitlines() if line.strip().startswith("PLW 0 "))
            assert "1.050" in line and "0.050" in line and "1.000–1.100" in line  # mean, std, range
            assert "test mean" in seeds and line.split()[-2:] == ["1.350", "(2)"]  # (1.3 + 1.4) / 2, of 2 runs
            first = next(line for line in table_text(app, CompareTable).splitlines() if "PLW 0, seed 0" in line)
            assert first.split()[-1] == "1.300"  # its test value; the live run has none yet
            writer = MetricsWriter(live)  # the live run evaluates again
            writer(evaluation(20, 0.5))
            writer.close()
            assert await wait_until(pilot, lambda: "0.500" in table_text(app, CompareTable), 10)
            best_line = next(line for line in table_text(app, CompareTable).splitlines() if "★" in line)
            assert "PLW 2" in best_line

    asyncio.run(scenario())


@pytest.mark.parametrize("manifest, says", [("{", "not JSON"), ('{"points": [3]}', "points[0] needs 'run_dir'")])
def test_a_bad_sweep_folder_says_why(tmp_path, manifest, says):
    (tmp_path / "sweep.json").write_text(manifest)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            await pilot.press("c")  # nothing marked, no run selected: asks for a sweep folder
            await pilot.pause(0.3)
            await pilot.press("enter")  # the runs folder, offered
            assert await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
            assert await wait_until(pilot, lambda: says in text_of(app, "#compare-legend"), 10)

    asyncio.run(scenario())


def test_the_real_apps_f1_lists_the_keys_and_the_compare_footer_fits_80_columns(tmp_path, monkeypatch):
    from tui.screens.keys_screen import KeysScreen

    from .test_footer import footer_fits
    from .test_keys_screen import shown_text
    from .test_screens_snapshot import make_app

    app = make_app(tmp_path, monkeypatch)
    make_pair(tmp_path / "runs")

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode("runs")
            await pilot.pause(0.3)
            await pilot.press("f1")
            assert await wait_until(pilot, lambda: isinstance(app.screen, KeysScreen))
            text = shown_text(app)
            assert "space Mark the selected run for comparing" in text and "c Open the marked runs" in text
            await pilot.press("f1")
            await pilot.pause(0.2)
            screen = await open_marked(app, pilot)
            keys = await footer_fits(app, pilot)
            assert {"s", "e", "l", "x", "t", "escape", "f1"} <= set(keys)
            await pilot.press("f1")
            assert await wait_until(pilot, lambda: isinstance(app.screen, KeysScreen))
            assert "Steps, epochs or trained tokens on the x axis" in shown_text(app)
            await pilot.press("f1")
            assert await wait_until(pilot, lambda: app.screen is screen)

    asyncio.run(scenario())


def test_c_with_nothing_marked_offers_the_newest_sweep_as_the_sweep_engine_lays_it_out(tmp_path):
    """runs/<sweep>/sweep.json names its points' folders inside it; a pending point has none yet."""
    sweep = tmp_path / "plw-sweep"
    points = []
    for plw in (0.0, 1.0):
        name = f"plw-{plw:g}"
        write_run(sweep / name, started(time=T0, config={"prompt_loss_weight": plw, "seed": 0}),
                  evaluation(0, 2.5), evaluation(20, 1.0 + plw), finished(20))
        (sweep / name / "sweep_point.json").write_text(json.dumps({"sweep": str(sweep), "values": {}}))
        points.append({"name": name, "values": {"prompt_loss_weight": plw}, "run_dir": name, "status": "completed"})
    points.append({"name": "plw-2", "values": {"prompt_loss_weight": 2.0}, "run_dir": None, "status": "pending"})
    (sweep / "sweep.json").write_text(json.dumps({"points": points}))
    write_run(tmp_path / "lone", started(time=T0), evaluation(0, 2.0), finished(0))

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 3)  # the sweep's runs listed under it
            keys = [row.value for row in table.rows]
            table.move_cursor(row=next(i for i, key in enumerate(keys) if key.endswith("lone")))  # no sweep
            await pilot.pause(0.1)
            await pilot.press("c")
            assert await wait_until(pilot, lambda: app.screen.query("#prompt-input"))
            assert app.screen.query_one("#prompt-input").value == str(sweep)
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.runs, 10)
            assert [run.name for run in app.screen.runs] == ["plw-0", "plw-1"]
            await pilot.pause(0.2)
            assert "PLW 0" in text_of(app, "#compare-legend") and "PLW 1" in text_of(app, "#compare-legend")

    asyncio.run(scenario())


def test_esc_at_the_sweep_question_goes_back_to_the_runs(tmp_path):
    make_pair(tmp_path)  # runs, but no sweep: c with nothing marked asks for one

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 2)
            await pilot.press("c")
            assert await wait_until(pilot, lambda: app.screen.query("#prompt-input"))
            assert app.screen.query_one("#prompt-input").value == str(tmp_path)  # no sweep: the runs folder
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: app.screen.query("#runs"))

    asyncio.run(scenario())


def test_snapshot(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)
    make_pair(Path("runs"))

    async def run_before(pilot):
        await open_marked(pilot.app, pilot)
        await pilot.press("e")
        await pilot.pause(0.3)

    assert snap_compare(RunsApp(Path("runs")), terminal_size=(80, 24), run_before=run_before)
