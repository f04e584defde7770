"""The Runs screen at 80×24 and 160×48: a title header, every column, the selection in view with
a run open, y labels on evenly spaced rows, and a legend that covers no points."""

import asyncio
import re

import pytest
from textual.widgets import DataTable, Header, Static

from tui.screens.runs_screen import COLUMNS, NARROW_COLUMNS
from tui.widgets.loss_chart import LossChart, y_axis

from .test_runs import started, write_run
from .test_runs_screen import T0, RunsApp, evaluation, finished, train
from .conftest import wait_until


def many_runs(runs_dir, n=8):
    for i in range(n):
        write_run(runs_dir / f"run-20261206-21{i:04d}", started(time=T0 + i * 60), evaluation(0, 2.4),
                  train(10, 2.0), evaluation(20, 1.6 - i / 100), train(20, 1.5), evaluation(40, 1.2), finished(40))


def chart_lines(app) -> list[str]:
    chart = app.screen.query_one(LossChart)
    return [strip.text for strip in (chart.render_line(y) for y in range(chart.size.height))]


@pytest.mark.parametrize("size, columns", [((80, 24), NARROW_COLUMNS), ((160, 48), COLUMNS), ((90, 28), NARROW_COLUMNS)])
def test_every_column_shows_and_the_selection_stays_in_view(tmp_path, size, columns):
    many_runs(tmp_path)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=size) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 8)
            assert app.screen.query(Header), "a title header like the other screens"
            assert tuple(str(c.label) for c in table.columns.values()) == columns
            width = sum(c.get_render_width(table) for c in table.columns.values())
            assert width <= table.size.width, "no column is pushed out of sight"
            model, when = table.get_row_at(0)[columns.index("model")], table.get_row_at(0)[columns.index("started")]
            assert "tiny-llama" in str(model) and re.search(r"\d\d:\d\d$", str(when))
            await pilot.press(*["down"] * 5, "enter")
            assert await wait_until(pilot, lambda: "step 40/100" in str(app.screen.query_one("#run-summary").content))
            await pilot.pause(0.3)
            visible = table.size.height - 1  # less the header row
            assert visible >= 5, "the list keeps its rows while a run is open"
            assert table.scroll_y <= table.cursor_row < table.scroll_y + visible
            # the legend is a line of its own; plotext's box over the first points is gone
            assert "valid completion" in str(app.screen.query_one("#chart-legend", Static).content)
            lines = chart_lines(app)
            assert not any("valid" in line for line in lines)
            labelled = [i for i, line in enumerate(lines) if "┤" in line]
            gaps = {b - a for a, b in zip(labelled, labelled[1:])}
            assert len(labelled) >= 2 and len(gaps) == 1, lines

    asyncio.run(scenario())


@pytest.mark.parametrize("rows", range(2, 40))
def test_y_ticks_fall_on_evenly_spaced_rows(rows):
    limits, ticks, labels = y_axis(1.234, 4.9, rows)
    assert limits == (1.234, 4.9) and ticks[0] == pytest.approx(1.234) and ticks[-1] <= 4.9 + 1e-9
    per_row = (4.9 - 1.234) / max(rows - 1, 1)
    tick_rows = [round((t - 1.234) / per_row, 6) for t in ticks]
    assert all(r == int(r) for r in tick_rows), "every tick on a row"
    assert len({b - a for a, b in zip(tick_rows, tick_rows[1:])}) <= 1, "equally far apart"
    assert len(ticks) >= 2 or rows < 3
    assert len({len(label.split(".")[-1]) for label in labels}) == 1  # equal decimals
    assert len(set(labels)) == len(labels)


def test_y_ticks_of_a_flat_series():
    (low, high), ticks, labels = y_axis(2.0, 2.0, 10)
    assert low < 2.0 < high and len(set(labels)) == len(labels)


def test_widening_the_terminal_brings_back_the_full_columns_and_keeps_the_selection(tmp_path):
    many_runs(tmp_path)

    async def scenario():
        app = RunsApp(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            assert await wait_until(pilot, lambda: table.row_count == 8)
            await pilot.press("down", "down", "down")
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
            await pilot.resize_terminal(160, 48)
            assert await wait_until(pilot, lambda: tuple(str(c.label) for c in table.columns.values()) == COLUMNS)
            assert await wait_until(pilot, lambda: table.row_count == 8)
            assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == key
            assert str(table.get_row_at(0)[COLUMNS.index("model")]) == "builtin:tiny-llama"

    asyncio.run(scenario())
