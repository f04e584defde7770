"""The offline demo: bundled dataset and the locally built tiny Llama."""

import json
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
import pytest

from engine.model.demo_data import (
    demo_questions,
    demo_records,
    demo_text_records,
    write_demo_dataset,
    write_demo_text,
)
from engine.model.demo import DEMO_MODEL_ID, MODEL_DIRNAME, ensure_demo_model, resolve_builtin

BUNDLED = Path(__file__).resolve().parents[1] / "sample_configs" / "data" / "demo"

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of Norvania?"},
    {"role": "assistant", "content": "Velspar."},
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Build once per module; loading is what most tests exercise."""
    path = ensure_demo_model(tmp_path_factory.mktemp("cache"))
    model, tokenizer = mlx_lm.load(str(path))
    return path, model, tokenizer


def test_forward_pass_is_finite_and_near_uniform(loaded):
    path, model, tokenizer = loaded
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    assert vocab == len(tokenizer.get_vocab())

    ids = tokenizer.apply_chat_template(demo_records(1, seed=3)[0]["messages"])
    tokens = mx.array([ids])
    logits = model(tokens)
    assert logits.shape == (1, len(ids), vocab)
    assert mx.all(mx.isfinite(logits)).item()

    loss = nn.losses.cross_entropy(logits[0, :-1], tokens[0, 1:]).mean().item()
    assert abs(loss - math.log(vocab)) < 1.0


def test_tokenizer_is_fast_and_round_trips(loaded):
    _, _, tokenizer = loaded
    hf = tokenizer._tokenizer
    assert hf.is_fast
    assert "offset_mapping" in hf("Reverse 'cat'.", return_offsets_mapping=True)
    for record in demo_records(300, seed=5):
        for message in record["messages"]:
            text = message["content"]
            assert hf.decode(hf.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_chatml(loaded):
    _, _, tokenizer = loaded
    expected = (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of Norvania?<|im_end|>\n"
        "<|im_start|>assistant\nVelspar.<|im_end|>\n"
    )
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == expected
    prompt = tokenizer.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt == expected.split("Velspar.")[0]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.eos_token_id in tokenizer.apply_chat_template(CONVERSATION)


def test_completions_are_shorter_than_prompts(loaded):
    _, _, tokenizer = loaded
    prompt_tokens = completion_tokens = 0
    for record in demo_records(200, seed=9):
        messages = record["messages"]
        prompt = tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages)
        prompt_tokens += len(prompt)
        completion_tokens += len(full) - len(prompt)
    assert completion_tokens < 0.5 * prompt_tokens


def test_second_call_reuses_the_built_folder(tmp_path):
    first = ensure_demo_model(tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging leftovers


def test_incomplete_folder_is_rebuilt(tmp_path):
    target = tmp_path / "models" / MODEL_DIRNAME
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    assert ensure_demo_model(tmp_path) == target
    assert (target / "model.safetensors").is_file()
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"


def test_resolve_builtin(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CACHE", str(tmp_path))
    assert resolve_builtin("mlx-community/SmolLM-135M") == "mlx-community/SmolLM-135M"
    assert resolve_builtin(DEMO_MODEL_ID) == str(tmp_path / "models" / MODEL_DIRNAME)
    with pytest.raises(ValueError, match="builtin:tiny-llama"):
        resolve_builtin("builtin:nope")


def test_demo_records_are_deterministic():
    assert demo_records(50, seed=1) == demo_records(50, seed=1)
    assert demo_records(50, seed=1) != demo_records(50, seed=2)


def test_demo_records_shape():
    records = demo_records(2000, seed=0)
    with_system = sum(r["messages"][0]["role"] == "system" for r in records)
    multi_turn = sum(
        sum(m["role"] == "assistant" for m in r["messages"]) == 2 for r in records
    )
    assert 0.10 < with_system / len(records) < 0.20
    assert 0.10 < multi_turn / len(records) < 0.20
    for record in records:
        turns = [m for m in record["messages"] if m["role"] != "system"]
        assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert all(m["content"].strip() for m in record["messages"])


def test_bundled_files_match_generator(tmp_path):
    write_demo_dataset(tmp_path)
    for name in ("train", "valid", "test"):
        assert (BUNDLED / f"{name}.jsonl").read_bytes() == (tmp_path / f"{name}.jsonl").read_bytes()
    sizes = [len((BUNDLED / f"{n}.jsonl").read_text().splitlines()) for n in ("train", "valid", "test")]
    assert sizes == [800, 100, 100]


def questions_of(path: Path) -> list[str]:
    return [m["content"] for line in path.read_text().splitlines()
            for m in json.loads(line)["messages"] if m["role"] == "user"]


def test_bundled_splits_share_no_question_and_repeat_no_example():
    """Validation must measure what train taught, not what it showed: no example repeats within a
    split, no question of valid or test occurs in train, and every fact they ask about is taught."""
    lines = {name: (BUNDLED / f"{name}.jsonl").read_text().splitlines() for name in ("train", "valid", "test")}
    for name, rows in lines.items():
        assert len(set(rows)) == len(rows), f"{name} repeats an example"
    train_questions = set(questions_of(BUNDLED / "train.jsonl"))
    for held_out in ("valid", "test"):
        assert not train_questions & set(questions_of(BUNDLED / f"{held_out}.jsonl"))
    pools = demo_questions()
    taught = {answer for _, answer in pools["train"]}
    assert {answer for _, answer in pools["valid"] + pools["test"]} <= taught


def test_bundled_text_corpus_matches_generator(tmp_path):
    write_demo_text(tmp_path)
    bundled = BUNDLED.parent / "demo-text"
    for name in ("train", "valid"):
        assert (bundled / f"{name}.jsonl").read_bytes() == (tmp_path / f"{name}.jsonl").read_bytes()
    records = demo_text_records(20, seed=3)
    assert records == demo_text_records(20, seed=3)
    assert all(r["text"].endswith(".") and r["text"].count(".") >= 3 for r in records)
