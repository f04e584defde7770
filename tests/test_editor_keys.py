"""Keys inside the YAML editor: the global bindings the README lists still work there, and a burst
of keys (fast typing over SSH) acts in the order it was sent."""

import asyncio
import time

from textual import events
from textual.widgets import TextArea

from tui.app import TunerApp
from tui.screens.path_prompt import PathPrompt

from .conftest import wait_until, write_config
from .terminal import app_in_terminal, demo_config


def run(scenario):
    asyncio.run(scenario())


async def in_editor(pilot, app) -> TextArea:
    screen = app.config_screen
    assert await wait_until(pilot, lambda: "✓" in str(screen.query_one("#config-check").render()), 60)
    area = screen.query_one(TextArea)
    area.focus()
    area.cursor_location = (0, 0)
    await pilot.pause()
    return area


def test_alt_digits_switch_screens_from_the_editor(tmp_path, monkeypatch):
    """A terminal sends alt+3 as ESC 3, which Textual reads as "£" (pound_sign): it must switch,
    not type."""
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            area = await in_editor(pilot, app)
            text = area.text
            for key, mode in (("cent_sign", "runs"), ("inverted_exclamation_mark", "config"),
                              ("trade_mark_sign", "dataset"), ("inverted_exclamation_mark", "config"),
                              ("alt+4", "runs"), ("alt+1", "config")):
                await pilot.press(key)
                assert await wait_until(pilot, lambda: app.current_mode == mode), (key, app.current_mode)
            assert area.text == text

    run(scenario)


def test_ctrl_w_opens_save_as_from_the_editor(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            area = await in_editor(pilot, app)
            area.cursor_location = (0, 8)  # inside a word, which delete-word would take
            text = area.text
            await pilot.press("ctrl+w")
            assert await wait_until(pilot, lambda: isinstance(app.screen, PathPrompt))
            await pilot.press("escape")
            assert area.text == text

    run(scenario)


def test_a_burst_of_arrows_then_a_character_types_where_the_arrows_led(tmp_path, monkeypatch):
    """The keys are posted all at once, as the terminal driver does with a burst; Pilot's press
    waits between keys and would hide the race."""
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            area = await in_editor(pilot, app)
            lines = area.text.splitlines()
            burst = ["down"] * 10 + ["X", "right", "right", "Y", "backspace", "Z"]
            for key in burst:
                app.post_message(events.Key(key, key if len(key) == 1 else None))
            assert await wait_until(pilot, lambda: "Z" in area.text)
            await pilot.pause(0.2)
            edited = area.text.splitlines()
            assert edited[10] == "X" + lines[10][:2] + "Z" + lines[10][2:]
            assert edited[:10] == lines[:10] and area.cursor_location == (10, 4)

    run(scenario)


def test_a_burst_in_a_real_terminal_is_saved_in_order(tmp_path):
    """The same burst through tmux and Textual's own input parser, then saved with ctrl+s."""
    config = demo_config(tmp_path / "configs")
    original = config.read_text()
    lines = original.splitlines()
    with app_in_terminal(tmp_path, config) as term:
        assert term.wait_for(lambda: "✓ valid" in term.screen()), term.screen()
        term.keys("Tab", "Tab")  # the side panel has the focus at start; past the table to the editor
        time.sleep(0.5)
        term.keys("C-Home")
        time.sleep(0.3)
        term.keys(*["Down"] * 10, "X", "Right", "Right", "Y", "BSpace", "Z")  # one burst
        time.sleep(1.0)
        term.keys("C-s")
        assert term.wait_for(lambda: "y yes" in term.screen(), 20), term.screen()  # the edit breaks the YAML: asked
        term.keys("y")
        assert term.wait_for(lambda: config.read_text() != original, 20), term.screen()
        edited = config.read_text().splitlines()
        assert edited[10] == "X" + lines[10][:2] + "Z" + lines[10][2:], term.screen()
        assert edited[:10] == lines[:10]


def test_a_burst_in_a_dialogs_text_field_acts_in_order(tmp_path, monkeypatch):
    """Backspace then 5 0 sent at once in the "how many more steps" prompt (its 400 selected)
    left the field empty: the 5 and 0 were typed before Backspace ran and were deleted with it."""
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            answers = []
            app.push_screen(PathPrompt("how many steps?", "400"), answers.append)
            await pilot.pause(0.2)
            field = app.screen.query_one("#prompt-input")
            for key in ["backspace", "backspace", "backspace", "5", "0", "left", "1", "enter"]:
                app.post_message(events.Key(key, key if len(key) == 1 else None))
            assert await wait_until(pilot, lambda: answers, 5), field.value
            assert answers == ["510"]

    run(scenario)
