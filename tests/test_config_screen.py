"""The Config screen driven from the keyboard: what it refuses to save or start, every error in
sight, the provenance column, the LR preview of an epoch-based config, samples and the Open dialog."""

import asyncio

from textual.widgets import DataTable, Input, OptionList, TextArea

from tui.app import TunerApp
from tui.config_check import check_config
from tui.screens.path_prompt import Confirm, OpenPrompt, PathPrompt, SamplePicker

from .conftest import DEMO_DATA, REPO, wait_until, write_config


def text_of(widget) -> str:
    return str(widget.render())


def run(scenario):
    asyncio.run(scenario())


async def ready(pilot, screen) -> None:
    assert await wait_until(pilot, lambda: "✓" in text_of(screen.query_one("#config-check")), 60)


def test_t_with_invalid_unsaved_edits_neither_saves_nor_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)
    saved = config.read_text()

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.config_screen
            await ready(pilot, screen)
            area = screen.query_one(TextArea)
            area.load_text(saved.replace("batch_size: 8", "batch_sise: 8"))
            await pilot.press("t")  # at once: the debounced check has not run yet
            await pilot.pause(0.3)
            assert app.control is None and app.run_state == "idle"
            assert app.current_mode == "config"
            assert config.read_text() == saved
            check = text_of(screen.query_one("#config-check"))
            assert "✗" in check and "batch_sise" in check
            await pilot.press("3", "d")  # a detached start from the Train screen: back to the errors
            assert await wait_until(pilot, lambda: app.current_mode == "config")
            assert app.control is None and app.run_state == "idle" and config.read_text() == saved
            await pilot.press("ctrl+s")  # saving a broken version asks first
            assert await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
            await pilot.press("n")
            await pilot.pause(0.1)
            assert config.read_text() == saved
            await pilot.press("ctrl+s")
            assert await wait_until(pilot, lambda: isinstance(app.screen, Confirm))
            await pilot.press("y")
            assert await wait_until(pilot, lambda: "batch_sise" in config.read_text())

    run(scenario)


def test_every_error_is_listed_marked_in_the_editor_and_stays_in_sight(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.config_screen
            await ready(pilot, screen)
            area = screen.query_one(TextArea)
            broken = (area.text.replace("batch_size: 8", "batch_size: many")
                      .replace("learning_rate: 0.002", "learning_rate: fast").replace("iters: 20", "iterz: 20"))
            area.load_text(broken)
            lines = [1 + i for i, line in enumerate(broken.splitlines())
                     if line.startswith(("batch_size", "learning_rate", "iterz"))]
            area.cursor_location = (len(broken.splitlines()) - 1, 0)  # past the last: ctrl+g wraps to the first
            await pilot.press("ctrl+g")  # within the debounce: the current text's errors, found now
            assert area.cursor_location[0] == lines[0] - 1
            check = screen.query_one("#config-check")
            assert "3 errors" in text_of(check)
            assert all(f":{line}:" in text_of(check) for line in lines)
            assert area.error_lines == {line - 1 for line in lines}
            await pilot.press("ctrl+g")  # the next one
            assert area.cursor_location[0] == lines[1] - 1
            # focus through the side panel and scroll it: the errors stay on the screen
            screen.query_one("#config-resolved", DataTable).focus()
            screen.query_one("#config-side").scroll_end(animate=False)
            await pilot.pause(0.2)
            region = check.region
            assert region.height >= 2 and 0 <= region.y < 24
            area.load_text(config.read_text())
            await ready(pilot, screen)
            assert area.error_lines == set()

    run(scenario)


def test_the_provenance_column_shows_at_160_columns_and_at_80_with_ctrl_r(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    def visible(table, column: int) -> bool:
        """The column's cells start and end inside the table's visible width."""
        widths = [c.get_render_width(table) for c in table.ordered_columns]
        return sum(widths[: column + 1]) <= table.scrollable_content_region.width

    async def scenario(size):
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=size) as pilot:
            screen = app.config_screen
            await ready(pilot, screen)
            table = screen.query_one("#config-resolved", DataTable)
            await pilot.pause(0.2)
            labels = [str(c.label) for c in table.ordered_columns]
            if size[0] >= 160:
                assert labels == ["key", "value", "from"] and visible(table, 2)
                assert "run.yaml" in str(table.get_row("batch_size")[2])
                return
            assert labels == ["key", "value"] and visible(table, 1)
            assert len(str(table.get_row("model")[1])) >= 10  # a value wider than four characters
            await pilot.press("ctrl+r")
            assert [str(c.label) for c in table.ordered_columns] == ["key", "from"] and visible(table, 1)
            assert "run.yaml" in str(table.get_row("batch_size")[1])
            assert "default" in str(table.get_row("optimizer")[1])

    asyncio.run(scenario((160, 48)))
    asyncio.run(scenario((80, 24)))


def test_the_lr_preview_of_an_epoch_config_counts_the_trainers_updates(tmp_path):
    text = (REPO / "sample_configs" / "plw.yaml").read_text().replace("data: data/demo", f"data: {DEMO_DATA}")
    path = tmp_path / "plw.yaml"
    path.write_text(text)
    checked = check_config([path], 0, {str(path): text})
    assert not checked.errors
    assert checked.curve[-1][0] == 150  # 3 epochs x 100 batches of 8, an update every 2 batches
    assert "3 ep" in checked.curve_note


def test_ctrl_n_starts_an_unsaved_copy_of_a_sample(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.config_screen
            await ready(pilot, screen)
            await pilot.press("ctrl+n")
            assert await wait_until(pilot, lambda: isinstance(app.screen, SamplePicker))
            picker = app.screen
            sample = next(p for p in picker.samples if p.name == "demo.yaml")
            before = sample.read_bytes()
            options = picker.query_one(OptionList)
            options.focus()
            options.highlighted = picker.samples.index(sample)
            await pilot.press("enter")
            area = screen.query_one(TextArea)
            assert await wait_until(pilot, lambda: "model:" in area.text, 30)
            copied = area.text
            assert f"data: {sample.parent / 'data'}" in copied  # found from wherever the copy is saved
            assert screen.untitled and "unsaved" in screen.sub_title
            await pilot.press("t")  # an unsaved copy is not trained: it has no file yet
            await pilot.pause(0.2)
            assert app.control is None
            await pilot.press("ctrl+s")  # asks for a name, in the current folder
            assert await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt))
            field = app.screen.query_one(Input)
            assert field.value == str(tmp_path / sample.name)
            field.value = str(tmp_path / "mine.yaml")
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: (tmp_path / "mine.yaml").exists())
            assert sample.read_bytes() == before
            assert (tmp_path / "mine.yaml").read_text() == copied
            assert screen.path == tmp_path / "mine.yaml" and not screen.untitled
            await ready(pilot, screen)  # the copy validates where it was saved

    run(scenario)


def test_the_open_dialog_lists_config_files_and_completes_with_tab(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)
    (tmp_path / "experiments").mkdir()
    other = write_config(tmp_path / "experiments", "lowrank.yaml", batch_size=4)
    (tmp_path / "experiments" / "notes.txt").write_text("not a config")

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.config_screen
            await ready(pilot, screen)
            await pilot.press("ctrl+o")
            assert await wait_until(pilot, lambda: isinstance(app.screen, OpenPrompt))
            dialog = app.screen
            options = dialog.query_one(OptionList)
            assert await wait_until(pilot, lambda: options.option_count == 2)
            assert {str(p) for p in dialog.files} == {"run.yaml", "experiments/lowrank.yaml"}
            field = dialog.query_one(Input)
            field.value = "exp"
            await pilot.press("tab")
            assert field.value == "experiments/"
            await pilot.press("l", "tab")
            assert field.value == "experiments/lowrank.yaml"
            await pilot.press("enter")
            area = screen.query_one(TextArea)
            assert await wait_until(pilot, lambda: "batch_size: 4" in area.text, 30)
            assert screen.path == other.relative_to(tmp_path)

    run(scenario)
