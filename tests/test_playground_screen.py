"""The Playground screen, reached from the Runs screen: a prompt streams an answer from the run's
adapter, the same text the engine gives; the base answers differently; a stop ends an answer;
validation prompts come with their reference; every key fits the 80-column footer."""

import asyncio

import pytest
from textual.widgets import DataTable, Input, Static

from engine.playground.generate import generate, prompt_ids
from engine.playground.stream import Sampling, chat_messages
from engine.playground.weights import BASE, FINAL, open_playground
from tui.app import TunerApp
from tui import playground_work
from tui.screens.playground_screen import PlaygroundScreen
from tui.widgets.answer_view import AnswerView

from .conftest import wait_until
from .playground_run import trained_run
from .test_footer import footer_fits
from .test_screens_snapshot import CONFIG

QUESTION = "Please shout this word by writing it all in upper case: nest."


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def expected(run_dir):
    """The engine's greedy answers (20 tokens) for QUESTION, by weights."""
    playground = open_playground(run_dir)
    ids = prompt_ids(playground.tokenizer, chat_messages(QUESTION))
    answers = {}
    for which in (FINAL, BASE, 3):
        playground.use(which)
        answers[which] = list(generate(playground.model, playground.tokenizer, ids, Sampling(max_tokens=20)))[-1].text
    assert answers[FINAL] != answers[BASE]
    return answers


def make_app(tmp_path, monkeypatch, run_dir) -> TunerApp:
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text(CONFIG)
    return TunerApp("demo.yaml", runs_dir=run_dir.parent, poll_memory=False)


async def open_from_runs(app, pilot) -> PlaygroundScreen:
    app.switch_mode("runs")
    assert await wait_until(pilot, lambda: app.screen.query("#runs") and app.screen.query_one(
        "#runs", DataTable).row_count == 1, 20)
    await pilot.press("g")
    screen = app.playground_screen
    assert await wait_until(pilot, lambda: app.screen is screen and screen.loaded, 60)
    return screen


async def ask(pilot, screen, question: str, max_tokens: str = "20") -> None:
    """Send ``question`` and wait until every shown pane has its whole answer."""
    shown = [view for view in screen.query(AnswerView) if view.display]
    for view in shown:
        view.border_subtitle = ""
    screen.query_one("#max-tokens", Input).value = max_tokens
    screen.query_one("#prompt", Input).value = question
    screen.query_one("#prompt", Input).focus()
    await pilot.press("enter")
    ok = await wait_until(pilot, lambda: not screen.generating and all(
        view.border_subtitle.startswith(("ended", "max tokens")) for view in shown), 120)
    assert ok, [(view.id, view.border_subtitle) for view in shown]


def pane(screen, name: str) -> AnswerView:
    return screen.query_one(f"#answer-{name}", AnswerView)


def test_chat_with_the_adapter_and_the_base_stop_and_validation_prompts(tmp_path, monkeypatch, run_dir, expected):
    app = make_app(tmp_path, monkeypatch, run_dir)
    monkeypatch.setattr(playground_work, "THROTTLE", 0.0)  # every token its own message
    updates = []
    add = AnswerView.add
    monkeypatch.setattr(AnswerView, "add", lambda self, text, tokens: (updates.append(text), add(self, text, tokens)))

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_from_runs(app, pilot)
            assert "final adapter" in str(screen.query_one("#playground-status", Static).content)
            await pilot.press("escape")  # out of the fields: 1-5 switch screens again
            assert isinstance(app.focused, AnswerView)
            assert {"escape", "ctrl+t", "ctrl+b", "ctrl+o", "ctrl+n", "ctrl+l", "1", "5", "f1"} <= set(
                await footer_fits(app, pilot))

            await ask(pilot, screen, QUESTION)
            assert pane(screen, "adapter").text == expected[FINAL]
            assert len(updates) > 1 and "".join(updates) == expected[FINAL]  # streamed, not at once
            assert pane(screen, "adapter").border_title == "final adapter"
            assert not pane(screen, "base").display  # toggled at 80 columns: one answer shown

            await pilot.press("ctrl+t")
            assert pane(screen, "base").display and not pane(screen, "adapter").display
            await ask(pilot, screen, QUESTION)
            assert pane(screen, "base").text == expected[BASE]

            await pilot.press("ctrl+o", "ctrl+o")  # final -> step 3 -> step 6: back to the adapter, step 6
            assert screen.adapter == 6 and screen.show == "adapter"
            await pilot.press("ctrl+o", "ctrl+o")  # -> final -> step 3
            await ask(pilot, screen, QUESTION)
            assert pane(screen, "adapter").text == expected[3]
            assert pane(screen, "adapter").border_title == "checkpoint 3"

            await pilot.press("ctrl+b")  # both, side by side
            assert pane(screen, "base").display and pane(screen, "adapter").display

            await pilot.press("ctrl+b")  # one again: the adapter
            assert pane(screen, "adapter").display and not pane(screen, "base").display
            await pilot.press("ctrl+t")  # the base alone, asked for a long answer, stopped
            assert pane(screen, "base").display and not pane(screen, "adapter").display
            screen.query_one("#max-tokens", Input).value = "20000"
            screen.query_one("#prompt", Input).value = QUESTION
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: len(pane(screen, "base").text) > 20, 30)
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: not screen.generating, 30)
            assert pane(screen, "base").border_subtitle.startswith("stopped")
            assert int(pane(screen, "base").border_subtitle.split()[1]) < 20000

            await pilot.press("ctrl+n")  # the first validation prompt, with its reference
            first = screen.prompts[0]
            assert screen.query_one("#prompt", Input).value == first.question
            reference = str(screen.query_one("#reference", Static).content)
            assert reference.endswith(first.reference) and f"1/{len(screen.prompts)}" in reference
            await pilot.press("ctrl+n")
            assert screen.query_one("#prompt", Input).value == screen.prompts[1].question

    asyncio.run(scenario())


def test_the_runs_screen_opens_the_selected_checkpoint(tmp_path, monkeypatch, run_dir, expected):
    app = make_app(tmp_path, monkeypatch, run_dir)

    async def scenario():
        async with app.run_test(size=(120, 40)) as pilot:
            app.switch_mode("runs")
            assert await wait_until(pilot, lambda: app.screen.query("#runs") and app.screen.query_one(
                "#runs", DataTable).row_count == 1, 20)
            await pilot.press("enter")  # open the run: its checkpoints fill the table
            checkpoints = app.screen.query_one("#checkpoints", DataTable)
            assert await wait_until(pilot, lambda: checkpoints.row_count == 2, 20)
            checkpoints.move_cursor(row=0)  # step 3
            await pilot.press("g")
            screen = app.playground_screen
            assert await wait_until(pilot, lambda: app.screen is screen and screen.loaded, 60)
            assert screen.adapter == 3
            assert screen.show == "both"  # 120 columns: side by side
            await ask(pilot, screen, QUESTION)
            assert pane(screen, "adapter").text == expected[3] and pane(screen, "base").text == expected[BASE]

    asyncio.run(scenario())


def test_without_a_model_sending_says_how_to_load_one(tmp_path, monkeypatch, run_dir):
    app = make_app(tmp_path, monkeypatch, run_dir)
    notes = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append(message))

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("escape", "5")
            screen = app.playground_screen
            assert await wait_until(pilot, lambda: app.screen is screen, 10)
            screen.query_one("#prompt", Input).value = "hello"
            screen.query_one("#prompt", Input).focus()
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: any("no model loaded" in n for n in notes), 10)
            assert not screen.generating

    asyncio.run(scenario())


def test_f1_lists_the_playgrounds_keys(tmp_path, monkeypatch, run_dir):
    from tui.screens.keys_screen import KeysScreen

    from .test_keys_screen import shown_text

    app = make_app(tmp_path, monkeypatch, run_dir)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode("playground")
            await pilot.pause(0.3)
            app.screen.set_focus(None)
            await pilot.press("f1")
            assert await wait_until(pilot, lambda: isinstance(app.screen, KeysScreen), 5)
            text = shown_text(app)
            for tooltip in ("Stop the answer being generated", "Answer with the run's adapter or with the base",
                            "Answer with both, side by side", "The adapter of the run's next checkpoint",
                            "The run's next validation prompt", "Load a run folder or a model",
                            "Talk to a run's adapter and its base model"):
                assert tooltip in text, (tooltip, text)

    asyncio.run(scenario())


def test_a_fast_answer_reaches_the_screen_in_few_messages(monkeypatch):
    from engine.playground.stream import Chunk, Finished
    from tui.messages import AnswerFinished, AnswerStreamed

    monkeypatch.setattr(playground_work, "THROTTLE", 60.0)  # nothing is due before the end
    chunks = [Chunk(f"t{i} ", i + 1) for i in range(500)]
    end = Finished("length", 500, 1.0, "".join(c.text for c in chunks))
    posted = []
    playground_work.stream_answer([*chunks, end], "base", posted.append)
    assert [type(m) for m in posted] == [AnswerStreamed, AnswerFinished]
    assert posted[0].text == end.text and posted[0].tokens == 500 and posted[1].finished is end

    monkeypatch.setattr(playground_work, "THROTTLE", 0.0)  # every token due: one message each
    posted.clear()
    playground_work.stream_answer([*chunks, end], "base", posted.append)
    assert len(posted) == 501 and "".join(m.text for m in posted[:-1]) == end.text
