"""``tuner generate``: a run's answer streamed to stdout, the same text as the playground engine's
for the same weights; mistakes are one line before any model loads."""

import argparse

import pytest

from engine.errors import UserError
from engine.launch.generate_command import add_generate_parser, cmd_generate
from engine.playground.generate import generate, prompt_ids
from engine.playground.stream import Finished, Sampling, chat_messages
from engine.playground.weights import BASE, FINAL, open_playground

from .playground_run import trained_run

QUESTION = "Complete the pair of opposites for the word down."
SYSTEM = "Answer every question in one word."


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


def parse(argv: list[str]):
    parser = argparse.ArgumentParser(prog="tuner")
    add_generate_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["generate", *argv])


def expected(run_dir, which, system=None) -> str:
    playground = open_playground(run_dir)
    playground.use(which)
    ids = prompt_ids(playground.tokenizer, chat_messages(QUESTION, system))
    end = list(generate(playground.model, playground.tokenizer, ids, Sampling(max_tokens=12)))[-1]
    assert isinstance(end, Finished)
    return end.text


@pytest.mark.parametrize("flags, which, label", [
    ([], FINAL, "final adapter"), (["--checkpoint", "3"], 3, "checkpoint 3"), (["--base"], BASE, "base model"),
])
def test_prints_the_answer_of_the_chosen_weights(run_dir, capsys, flags, which, label):
    args = parse([str(run_dir), "--prompt", QUESTION, "--system", SYSTEM, "--max-tokens", "12", *flags])
    assert cmd_generate(args) == 0
    out, err = capsys.readouterr()
    assert out == expected(run_dir, which, SYSTEM) + "\n"
    assert err.startswith(f"[{label}: ") and "tokens/s" in err


def test_a_bare_model_answers_as_the_runs_base(run_dir, demo_model_dir, capsys):
    assert cmd_generate(parse([str(demo_model_dir), "--prompt", QUESTION, "--max-tokens", "12"])) == 0
    out, err = capsys.readouterr()
    assert out == expected(run_dir, BASE) + "\n" and err.startswith("[base model: ")


@pytest.mark.parametrize("flags, message", [
    (["--base", "--checkpoint", "3"], "--base and --checkpoint: choose one"),
    (["--temp", "-0.5"], "temperature: -0.5 is not between 0 and 10"),
    (["--top-p", "1.5"], "top-p: 1.5"),
    (["--max-tokens", "0"], "max tokens: 0"),
    (["--checkpoint", "5"], r"no checkpoint at step 5 \(its checkpoints: 3, 6\)"),
])
def test_mistakes_are_one_line_before_the_model_loads(run_dir, monkeypatch, flags, message):
    def never(source):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("engine.playground.weights.open_playground", never)
    with pytest.raises(UserError, match=message):
        cmd_generate(parse([str(run_dir), "--prompt", "hi", *flags]))


def test_a_checkpoint_of_a_bare_model_is_refused(demo_model_dir):
    with pytest.raises(UserError, match="--checkpoint needs a run folder"):
        cmd_generate(parse([str(demo_model_dir), "--prompt", "hi", "--checkpoint", "3"]))


def test_the_command_line_streams_and_refuses_in_one_line(run_dir, capsys):
    from engine.cli import main

    assert main(["generate", str(run_dir), "--prompt", QUESTION, "--max-tokens", "12"]) == 0
    out, _ = capsys.readouterr()
    assert out == expected(run_dir, FINAL) + "\n"
    assert main(["generate", str(run_dir), "--prompt", QUESTION, "--checkpoint", "4"]) == 2
    _, err = capsys.readouterr()
    assert err.strip().count("\n") == 0 and "no checkpoint at step 4" in err and "Traceback" not in err
