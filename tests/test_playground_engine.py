"""The playground's engine: a run's adapters at any checkpoint answer as mlx-lm's own generate
does with that adapter, differently from the base; a stop ends an answer between tokens."""

import json
import shutil

import pytest
from mlx_lm import generate as mlx_generate
from mlx_lm import load as mlx_load

from engine.errors import UserError
from engine.playground.generate import generate, prompt_ids
from engine.playground.prompts import validation_prompts
from engine.playground.stream import Chunk, Finished, Sampling, chat_messages
from engine.playground.weights import BASE, FINAL, open_playground

from .conftest import DEMO_DATA
from .playground_run import trained_run

QUESTION = "Write in capital letters the word wind."
GREEDY = Sampling(temp=0.0, max_tokens=24)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def playground(run_dir):
    return open_playground(run_dir)


def answer(playground, which, sampling=GREEDY, question=QUESTION) -> Finished:
    playground.use(which)
    ids = prompt_ids(playground.tokenizer, chat_messages(question))
    *chunks, end = generate(playground.model, playground.tokenizer, ids, sampling)
    assert all(isinstance(c, Chunk) for c in chunks) and isinstance(end, Finished)
    assert "".join(c.text for c in chunks) == end.text  # the chunks are the answer, streamed
    return end


def mlx_lm_answer(model_path, adapter_dir=None, question=QUESTION) -> str:
    model, tokenizer = mlx_load(model_path, adapter_path=str(adapter_dir) if adapter_dir else None)
    prompt = tokenizer.apply_chat_template(chat_messages(question), add_generation_prompt=True)
    return mlx_generate(model, tokenizer, prompt, max_tokens=GREEDY.max_tokens)


def test_the_run_lists_its_checkpoints(playground):
    assert playground.steps() == [3, 6] and playground.has_final()


def test_adapters_answer_as_mlx_lm_does_and_unlike_the_base(playground, run_dir, tmp_path):
    model_path = json.loads((run_dir / "adapters" / "adapter_config.json").read_text())["model"]
    base = answer(playground, BASE)
    final = answer(playground, FINAL)
    step3 = answer(playground, 3)
    assert base.text != final.text and base.text != step3.text
    assert base.text == mlx_lm_answer(model_path)
    assert final.text == mlx_lm_answer(model_path, run_dir / "adapters")
    # a checkpoint that is not the final adapter: its weights in an adapter folder of their own
    only3 = tmp_path / "step3"
    only3.mkdir()
    shutil.copy(run_dir / "adapters" / "adapter_config.json", only3)
    shutil.copy(run_dir / "checkpoints" / "step-0000003" / "adapters.safetensors", only3)
    assert step3.text == mlx_lm_answer(model_path, only3)
    assert answer(playground, BASE).text == base.text  # switched back, the base is whole again


def test_top_p_this_small_keeps_only_the_likeliest_token(playground):
    greedy = answer(playground, FINAL)
    narrow = answer(playground, FINAL, Sampling(temp=1.0, top_p=0.001, max_tokens=GREEDY.max_tokens))
    assert narrow.text == greedy.text


def test_a_stop_ends_the_answer_between_tokens(playground):
    playground.use(BASE)
    ids = prompt_ids(playground.tokenizer, chat_messages(QUESTION))
    seen = []

    def stop() -> bool:
        return len(seen) >= 3

    for item in generate(playground.model, playground.tokenizer, ids, Sampling(max_tokens=200), stop):
        seen.append(item)
    *chunks, end = seen
    assert end.reason == "stopped" and end.tokens == 3 and len(chunks) == 3


def test_max_tokens_ends_with_length(playground):
    end = answer(playground, BASE, Sampling(max_tokens=5))
    assert end.reason == "length" and end.tokens == 5


def test_a_missing_checkpoint_is_one_clear_line(playground, run_dir):
    with pytest.raises(UserError, match=r"no checkpoint at step 4 \(its checkpoints: 3, 6\)"):
        playground.use(4)


@pytest.mark.parametrize("kwargs, message", [
    ({"temp": -1}, "temperature"), ({"top_p": 0}, "top-p"), ({"max_tokens": 0}, "max tokens"),
])
def test_bad_sampling_values_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message):
        Sampling(**kwargs)


def test_validation_prompts_come_with_their_reference_answers(run_dir):
    prompts = validation_prompts(run_dir)
    rows = [json.loads(line) for line in (DEMO_DATA / "valid.jsonl").read_text().splitlines() if line.strip()]
    assert len(prompts) == len(rows)
    first = rows[0]["messages"]
    assert prompts[0].reference == first[-1]["content"]
    assert prompts[0].messages == tuple(first[:-1]) and prompts[0].question == first[-2]["content"]
