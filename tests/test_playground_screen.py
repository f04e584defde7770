"""The Playground screen, reached from the Runs screen: a prompt streams an answer from the run's
adapter, the same text the engine gives; the base answers differently; a stop ends an answer;
validation prompts come with their reference; every key fits the 80-column footer."""

import asyncio

import pytest
from textual.widgets import DataTable, Input, Static

from engine.playground.chat import Turn, conversation, split_record
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
            assert screen.picked is screen.prompts[1] and not split_record(screen.prompts[1].messages)[1]
            await ask(pilot, screen, screen.prompts[1].question)  # a one-turn record: its reference stays
            assert str(screen.query_one("#reference", Static).content).endswith(screen.prompts[1].reference)
            await ask(pilot, screen, FOLLOW_UP)  # the chat moves on: the reference no longer applies
            assert str(screen.query_one("#reference", Static).content) == "" and screen.picked is None

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
                            "A new chat from the run's next validation prompt", "Load a run folder or a model",
                            "Talk to a run's adapter and its base model",
                            "Start a new chat: both panes forget the turns so far", "playground-new-chat"):
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


@pytest.fixture(scope="module")
def engine_playground(run_dir):
    """The engine's own view of the run, to compute what each turn's answer must be."""
    return open_playground(run_dir)


def engine_answer(playground, which, messages, max_tokens: int = 20) -> str:
    playground.use(which)
    ids = prompt_ids(playground.tokenizer, messages)
    return list(generate(playground.model, playground.tokenizer, ids, Sampling(max_tokens=max_tokens)))[-1].text


FOLLOW_UP = "Now the word road, please."
THIRD = "And the word sky?"


def test_a_conversation_keeps_its_turns_and_a_new_chat_forgets_them(tmp_path, monkeypatch, run_dir,
                                                                     engine_playground):
    """Each answer reads the chat so far through the chat template; ctrl+r and ctrl+o start over
    (saying why); when old turns no longer fit they go, said once."""
    app = make_app(tmp_path, monkeypatch, run_dir)
    notes = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append(message))

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_from_runs(app, pilot)
            view = pane(screen, "adapter")
            screen.query_one("#system", Input).value = "Be brief."
            await ask(pilot, screen, QUESTION)
            await ask(pilot, screen, FOLLOW_UP)
            first, second = screen.history["adapter"]
            assert first == Turn(QUESTION, engine_answer(engine_playground, FINAL, conversation(
                "Be brief.", (), QUESTION)))
            assert second == Turn(FOLLOW_UP, engine_answer(engine_playground, FINAL, conversation(
                "Be brief.", (first,), FOLLOW_UP)))
            assert view.text == second.assistant and screen.history["base"] == []
            assert view.shown_text() == "\n".join([f"you › {QUESTION}", first.assistant,
                                                    f"you › {FOLLOW_UP}", second.assistant])
            assert [str(w.content) for w in view.query(".user")] == [f"you › {QUESTION}", f"you › {FOLLOW_UP}"]

            # the oldest turn no longer fits: it goes, and the chat says so once
            budget = len(prompt_ids(engine_playground.tokenizer, conversation("Be brief.", (second,), THIRD)))
            limit, fitted = {"tokens": budget}, playground_work.prompt_budget
            monkeypatch.setattr(playground_work, "prompt_budget",
                                lambda context, max_tokens: limit["tokens"] or fitted(context, max_tokens))
            await ask(pilot, screen, THIRD)
            assert screen.history["adapter"][0] == second and len(screen.history["adapter"]) == 2
            assert screen.history["adapter"][1].assistant == engine_answer(
                engine_playground, FINAL, conversation("Be brief.", (second,), THIRD))
            await ask(pilot, screen, QUESTION)
            assert sum("no longer fit" in n for n in notes) == 1
            assert "no longer fit" in view.shown_text()
            limit["tokens"] = None  # the model's own budget again

            await pilot.press("ctrl+r")  # a new chat: both panes forget
            assert screen.history == {"adapter": [], "base": []} and view.text == ""
            assert view.shown_text() == "new chat"
            await ask(pilot, screen, FOLLOW_UP)
            assert screen.history["adapter"] == [Turn(FOLLOW_UP, engine_answer(
                engine_playground, FINAL, conversation("Be brief.", (), FOLLOW_UP)))]

            await pilot.press("ctrl+o")  # other weights: a new chat, said in the pane and aloud
            assert screen.adapter == 3 and screen.history["adapter"] == [] and view.border_title == "checkpoint 3"
            assert "came from other weights" in view.shown_text() and any("other weights" in n for n in notes)

            await ask(pilot, screen, QUESTION)
            await pilot.press("ctrl+l")  # another model: a new chat too
            field = app.screen.query_one("#prompt-input", Input)
            field.value = "builtin:tiny-llama"
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: app.screen is screen and screen.loaded and not screen.is_run, 60)
            assert screen.history == {"adapter": [], "base": []}
            assert pane(screen, "base").shown_text() == (
                "new chat with builtin:tiny-llama (the earlier answers came from other weights)")
            assert any(n.startswith("new chat with builtin:tiny-llama") for n in notes)

    asyncio.run(scenario())


def test_a_validation_prompt_starts_a_chat_from_its_earlier_turns_and_a_stop_is_kept(
        tmp_path, monkeypatch, run_dir, engine_playground):
    app = make_app(tmp_path, monkeypatch, run_dir)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_from_runs(app, pilot)
            await ask(pilot, screen, FOLLOW_UP)  # a chat that ctrl+n replaces
            assert await wait_until(pilot, lambda: screen.prompts, 20)
            await pilot.press("ctrl+n")
            record = screen.prompts[0]
            system, turns, question = split_record(record.messages)
            assert turns, "the demo data's first validation record has an earlier turn"
            assert screen.history == {"adapter": list(turns), "base": list(turns)}
            assert screen.query_one("#prompt", Input).value == question
            view = pane(screen, "adapter")
            assert f"you › {turns[0].user}" in view.shown_text() and turns[0].assistant in view.shown_text()

            await ask(pilot, screen, question)  # the question as the record asks it, after its turns
            assert view.text == engine_answer(engine_playground, FINAL, conversation(system, turns, question))
            assert str(screen.query_one("#reference", Static).content).endswith(record.reference)
            await pilot.press("ctrl+t")
            await ask(pilot, screen, question)  # the base pane has its own copy of the record's turns
            assert pane(screen, "base").text == engine_answer(engine_playground, BASE,
                                                              conversation(system, turns, question))

            # a long answer stopped: it stays in the chat as it was cut, and the next turn reads it
            screen.query_one("#max-tokens", Input).value = "20000"
            screen.query_one("#prompt", Input).value = FOLLOW_UP
            await pilot.press("enter")
            base = pane(screen, "base")
            assert await wait_until(pilot, lambda: len(base.text) > 20, 30)
            assert str(screen.query_one("#reference", Static).content) == ""  # the chat moved on
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: not screen.generating, 30)
            assert base.border_subtitle.startswith("stopped")
            cut = screen.history["base"][-1]
            assert cut.user == FOLLOW_UP and cut.assistant == base.text and len(screen.history["base"]) == len(turns) + 2
            await ask(pilot, screen, THIRD)
            assert screen.history["base"][-2] == cut

    asyncio.run(scenario())
