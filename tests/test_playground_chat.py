"""The Playground's chat as the model reads it: the messages of a multi-turn chat, a validation
record split back into its turns, the rendered prompt growing by exactly the answer each turn,
and the oldest turns dropped when they no longer fit."""

from types import SimpleNamespace

import pytest

from engine.playground.chat import MOST_TURNS, Turn, conversation, fit_turns, prompt_budget, split_record
from engine.playground.weights import Playground

TURNS = (Turn("What is 2+2?", "4"), Turn("And times 3?", "12"), Turn("Minus 5?", "7"))


def test_a_three_turn_chat_with_a_system_prompt():
    assert conversation("Be brief.", TURNS, "Squared?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And times 3?"}, {"role": "assistant", "content": "12"},
        {"role": "user", "content": "Minus 5?"}, {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Squared?"},
    ]
    assert conversation(None, (), "Hi") == [{"role": "user", "content": "Hi"}]
    assert conversation("", (), "Hi") == [{"role": "user", "content": "Hi"}]  # an empty field: no system turn


def test_a_record_splits_back_into_its_turns():
    assert split_record(conversation("Be brief.", TURNS, "Squared?")) == ("Be brief.", TURNS, "Squared?")
    assert split_record(conversation(None, (), "Hi")) == (None, (), "Hi")
    odd = [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "a"},
           {"role": "user", "content": "b"}]
    assert split_record(odd) == (None, (Turn("", "Hello."),), "a\nb")  # nothing is lost


def test_each_turn_renders_what_the_model_read_before_plus_its_answer(demo_tokenizer):
    """Through the demo model's chat template: the prompt of turn n+1 starts with the prompt of
    turn n followed by its answer, so the model reads the chat as it happened."""
    def render(turns, prompt):
        return demo_tokenizer.apply_chat_template(conversation("Be brief.", turns, prompt),
                                                  add_generation_prompt=True, tokenize=False)

    for n in range(len(TURNS)):
        before, after = render(TURNS[:n], TURNS[n].user), render(TURNS[:n + 1], "next")
        assert after.startswith(before + TURNS[n].assistant), (before, after)
    assert render(TURNS, "next").count("Be brief.") == 1


def words(messages) -> int:
    """A stand-in token count: words of every message, plus one per message."""
    return sum(len(str(m["content"]).split()) + 1 for m in messages)


def longest_fitting_suffix(turns, prompt, budget, most):
    """The reference: try every suffix, longest first."""
    for start in range(max(0, len(turns) - most), len(turns) + 1):
        if words(conversation(None, turns[start:], prompt)) <= budget:
            return tuple(turns[start:])
    return ()


@pytest.mark.parametrize("budget", range(0, 30))
@pytest.mark.parametrize("most", [0, 1, 2, 3, 20])
def test_the_oldest_turns_go_first_when_they_do_not_fit(budget, most):
    kept = fit_turns(None, TURNS, "Squared?", words, budget, most)
    assert kept == longest_fitting_suffix(TURNS, "Squared?", budget, most)
    assert kept == TURNS[len(TURNS) - len(kept):]  # the latest turns, in order


def test_a_long_chat_keeps_at_most_most_turns():
    turns = tuple(Turn(f"q{i}", f"a{i}") for i in range(MOST_TURNS + 7))
    kept = fit_turns("sys", turns, "q", lambda messages: 0, 10**6)
    assert len(kept) == MOST_TURNS and kept[-1] == turns[-1] and kept[0] == turns[7]


def test_the_prompt_budget_leaves_room_for_the_answer():
    assert prompt_budget(2048, 256) == 1792
    assert prompt_budget(2048, 20_000) == 1024  # never more than half the context for the answer
    assert prompt_budget(1, 256) == 1


def test_the_context_length_comes_from_the_model():
    def playground(config, max_length):
        return Playground(SimpleNamespace(config=config, tokenizer=SimpleNamespace(model_max_length=max_length)),
                          None, None)

    assert playground({"max_position_embeddings": 1024}, 512).context_length == 1024
    assert playground({}, 512).context_length == 512
    assert playground({}, int(1e30)).context_length == 2048  # transformers' "no limit"
