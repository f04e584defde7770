"""``system_feature`` names the field holding a record's system prompt, as the other *_feature keys do."""

import json

import pytest

from engine.config import load_stages
from engine.data.sources import load_splits
from engine.data.tokenize import tokenize_split
from engine.errors import DataError

from .conftest import write_config

SYSTEM = "Answer in one word."


def dataset(folder):
    """Prompt/completion and chat rows whose system prompt is in a field called ``instructions``."""
    folder.mkdir()
    rows = [
        {"instructions": SYSTEM, "prompt": "Opposite of hot?", "completion": "cold"},
        {"instructions": SYSTEM, "messages": [{"role": "user", "content": "Opposite of up?"},
                                              {"role": "assistant", "content": "down"}]},
        {"instructions": SYSTEM, "instruction": "Opposite of left?", "output": "right"},
    ]
    for split in ("train", "valid"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_the_named_field_opens_every_chat_as_its_system_prompt(tmp_path, demo_tokenizer):
    data = dataset(tmp_path / "data")
    stage = load_stages([write_config(tmp_path, data=str(data), system_feature="instructions")])[0]
    splits = load_splits(stage)
    for record in splits.train + splits.valid:
        assert record.messages[0] == {"role": "system", "content": SYSTEM}
        assert [m["role"] for m in record.messages[1:]] == ["user", "assistant"]
    examples = tokenize_split(demo_tokenizer, splits.train, 256).examples
    assert all(SYSTEM in demo_tokenizer.decode(list(e.ids)) for e in examples)


def test_without_it_the_field_is_not_read(tmp_path):
    data = dataset(tmp_path / "data")
    stage = load_stages([write_config(tmp_path, data=str(data))])[0]
    assert stage.config.system_feature == "system"
    splits = load_splits(stage)
    assert all(m["role"] != "system" for r in splits.train for m in r.messages)


def test_a_system_field_that_is_not_text_names_the_configured_key(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"sys": 3, "prompt": "p", "completion": "c"}) + "\n")
    stage = load_stages([write_config(tmp_path, data=str(data), system_feature="sys")])[0]
    with pytest.raises(DataError, match="train.jsonl:1: field 'sys' must be text"):
        load_splits(stage)


def test_hf_dataset_entries_accept_it(tmp_path):
    entry = {"path": "someone/dataset", "system_feature": "persona"}
    stage = load_stages([write_config(tmp_path, data=None, hf_dataset=entry)])[0]
    assert stage.config.hf_dataset[0].system_feature == "persona"
