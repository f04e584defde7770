"""F1 on every screen: the screen's keys and the app's in a box that scrolls at 80×24, keys that do
nothing now marked, remapped keys shown as remapped, F1 again closes."""

import asyncio
import json

import pytest
from rich.console import Console

from tui.screens.keys_screen import KeysScreen

from .test_screens_snapshot import make_app

EXPECTED = {
    "config": ["Save the config file", "Open another config file", "Move the cursor to the next error"],
    "dataset": ["Show the next split", "Flip the sort order"],
    "train": ["Train the open config", "Pause or resume between steps (not now)", "compute lever"],
    "runs": ["Rescan the runs folder now"],
}


def shown_text(app) -> str:
    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    console.print(app.screen.listing())
    return " ".join(console.export_text().split())


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_f1_lists_the_screens_keys_and_the_apps(tmp_path, monkeypatch, mode):
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode(mode)
            await pilot.pause(0.3)
            app.screen.set_focus(None)  # the config editor would take the key
            await pilot.press("f1")
            await pilot.pause(0.2)
            assert isinstance(app.screen, KeysScreen)
            text = shown_text(app)
            for expected in EXPECTED[mode] + ["Everywhere", "Every run, finished or live", "Command palette"]:
                assert expected in text, (expected, text)
            box = app.screen.query_one("#keys-box")
            assert box.max_scroll_y > 0, "at 80×24 the list scrolls"
            await pilot.press("pagedown")
            assert await_scrolled(box)
            await pilot.press("f1")
            await pilot.pause(0.2)
            assert not isinstance(app.screen, KeysScreen)

    asyncio.run(scenario())


def await_scrolled(box) -> bool:
    return box.scroll_y > 0 or box.scroll_target_y > 0


def test_a_remapped_key_shows_as_remapped(tmp_path, monkeypatch):
    (tmp_path / "settings").mkdir()
    (tmp_path / "settings" / "settings.json").write_text(json.dumps({"keymap": {"train-start": "T"}}))
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(100, 40)) as pilot:
            app.switch_mode("train")
            await pilot.pause(0.3)
            await pilot.press("f1")
            await pilot.pause(0.2)
            text = shown_text(app)
            assert "T Train the open config train-start" in text
            assert " t Train the open config" not in text

    asyncio.run(scenario())
