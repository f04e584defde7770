"""The footer at 80 columns: every key a screen offers at the moment fits, none is cut off.

The five screen keys share one "12345 Screens" entry, and keys that do nothing now (Pause with no
run, Start during one, the Playground's chat keys with no model) are hidden rather than dimmed."""

import asyncio

import pytest
from textual.widgets import Footer
from textual.widgets._footer import FooterKey, FooterLabel

from engine.runs.control import RemoteControl

from .conftest import wait_until
from .playground_run import trained_run
from .test_screens_snapshot import make_app


async def footer_fits(app, pilot) -> list[str]:
    """The footer's keys, after checking that the last one ends inside the terminal."""
    await pilot.pause(0.3)
    footer = app.screen.query_one(Footer)
    # the footer recomposes when the bindings change (a screen that has just loaded, say)
    assert await wait_until(pilot, lambda: any(k.key == "f1" for k in footer.query(FooterKey)), 10)
    await pilot.pause(0.2)
    keys = list(footer.query(FooterKey))
    assert keys, "the footer shows keys"
    rightmost = max(widget.region.right for widget in [*keys, *footer.query(FooterLabel)])
    assert rightmost <= app.size.width, f"cut at {app.size.width} columns: {[k.key for k in keys]}"
    return [key.key for key in keys]


@pytest.mark.parametrize("mode", ["config", "dataset", "train", "runs"])
def test_every_screens_footer_fits_80_columns(tmp_path, monkeypatch, mode):
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode(mode)
            keys = await footer_fits(app, pilot)
            assert {"1", "2", "3", "4", "5", "f1"} <= set(keys)

    asyncio.run(scenario())


def test_the_train_footer_shows_the_keys_of_the_moment(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode("train")
            idle = await footer_fits(app, pilot)
            assert {"t", "d", "c", "v"} <= set(idle) and not {"p", "x", "s", "e", "l"} & set(idle)
            app.control = RemoteControl(run_dir)  # following a run another process trains
            app.set_state("running")
            following = await footer_fits(app, pilot)
            assert {"p", "x", "s", "e", "l", "c", "v"} <= set(following)
            assert not {"t", "d"} & set(following)

    asyncio.run(scenario())


def test_the_playground_footer_idle_and_while_an_answer_is_generated(tmp_path, monkeypatch, tmp_path_factory):
    from textual.widgets import Input

    app = make_app(tmp_path, monkeypatch)
    chat_keys = {"escape", "ctrl+t", "ctrl+b", "ctrl+o", "ctrl+n", "ctrl+r", "ctrl+l", "f1"}
    screen_keys = {"1", "2", "3", "4", "5"}  # shown once the fields are left (digits type there)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode("playground")
            screen = app.playground_screen
            nothing_loaded = await footer_fits(app, pilot)
            assert {"escape", "ctrl+l", "f1"} <= set(nothing_loaded)
            assert not {"ctrl+t", "ctrl+r", "ctrl+n"} & set(nothing_loaded)
            screen.open_source(trained_run(tmp_path_factory))
            assert await wait_until(pilot, lambda: screen.loaded and screen.prompts, 60)
            assert chat_keys <= set(await footer_fits(app, pilot))
            await pilot.press("escape")  # out of the fields: every key at once, the widest footer
            assert chat_keys | screen_keys <= set(await footer_fits(app, pilot))
            screen.query_one("#max-tokens", Input).value = "20000"
            screen.query_one("#prompt", Input).value = "Tell me a long story."
            screen.query_one("#prompt", Input).focus()
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: screen.generating and screen.query_one("#answer-adapter").text, 30)
            assert chat_keys <= set(await footer_fits(app, pilot))
            screen.set_focus(screen.query_one("#answer-adapter"))  # reading the answer (a click)
            assert chat_keys | screen_keys <= set(await footer_fits(app, pilot))
            assert screen.generating  # still going: this was the footer of an answer being generated
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: not screen.generating, 30)

    asyncio.run(scenario())
