"""Dataset statistics against numbers computed here by hand, independently of engine.data.tokenize."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from engine.config import load_config
from engine.data import stats_measure
from engine.data.sources import load_splits
from engine.data.stats import compute_stats, plw_guidance, rg_stats
from engine.data.stats_measure import load_record
from engine.data.stats_report import stats_to_json
from engine.data.token_view import token_view
from engine.data.tokenize import encode_records, tokenize_split
from engine.errors import DataError
from engine.roles import COMPLETION

from .conftest import REPO, write_config

LONG_PROMPT = "Read this carefully. " * 20 + "What is the capital of Norvania?"
LONG_ANSWER = "Velspar is the capital, and it is a fine city by the sea. " * 8
RECORDS = [
    {"prompt": "What is the capital of Norvania?", "completion": "Velspar"},
    {"prompt": "Name the colour of a ripe tomato.", "completion": "red"},
    {"messages": [{"role": "user", "content": "Opposite of hot?"}, {"role": "assistant", "content": "cold"}]},
    {"instruction": "Say what a cow says.", "input": "", "output": "moo"},
    {"prompt": LONG_PROMPT, "completion": "Velspar"},
    {"prompt": "Describe the capital of Norvania.", "completion": LONG_ANSWER},
    {"text": "Plain text has no prompt, so it has no generation ratio."},
]
MAX_LEN = 64


def write_jsonl(path, rows, extra_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")


def hand_counts(tokenizer, row):
    """(prompt, completion) tokens the way the article counts them: render the prompt with the
    generation prompt, render the whole chat, and count tokens of each."""
    tok = tokenizer._tokenizer
    if "text" in row:
        return 0, len(tok.encode(row["text"], add_special_tokens=False)) + 1  # + the EOS training adds
    if "messages" in row:
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
    else:
        user = row.get("prompt") or row["instruction"]
        answer = row.get("completion") or row["output"]
    chat = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(chat, tokenize=False)
    n_prompt = len(tok.encode(prompt, add_special_tokens=False))
    return n_prompt, len(tok.encode(full, add_special_tokens=False)) - n_prompt


@pytest.fixture
def small(tmp_path, demo_tokenizer):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", RECORDS)
    write_jsonl(data / "valid.jsonl", RECORDS[:2])
    stage = load_config(write_config(tmp_path, data=str(data), max_seq_length=MAX_LEN, prompt_loss_weight=0.05))
    counts = np.array([hand_counts(demo_tokenizer, row) for row in RECORDS])
    return stage, counts[:, 0], counts[:, 1]


def test_rg_and_truncation_match_hand_counts(small):
    stage, prompt, completion = small
    total = prompt + completion
    # the data is built to have one example cut inside its prompt and one inside its completion
    assert prompt[4] >= MAX_LEN and prompt[5] < MAX_LEN < total[5]

    train = compute_stats(stage, use_cache=False).splits["train"]

    assert [row.prompt_tokens for row in train.rows] == prompt.tolist()
    assert [row.completion_tokens for row in train.rows] == completion.tolist()
    has_prompt = prompt > 0
    rg = completion[has_prompt] / prompt[has_prompt]
    assert train.rg.count == 6 and train.rg.no_prompt == 1
    assert train.rg.arithmetic_mean == pytest.approx(np.mean(rg))
    assert train.rg.geometric_mean == pytest.approx(np.exp(np.mean(np.log(rg))))
    assert train.rg.median == pytest.approx(np.median(rg))
    assert train.rg.share_below_1 == pytest.approx(np.mean(rg < 1))
    assert train.rg.ratio_of_means == pytest.approx(completion[has_prompt].mean() / prompt[has_prompt].mean())
    assert sum(train.rg.bin_counts) == 6
    assert np.isnan(train.rows[-1].rg)

    # single-turn completions sit at the end, so any cut removes completion tokens; an example
    # keeps no completion target when its prompt fills max_seq_length
    truncated = total > MAX_LEN
    assert train.truncated == truncated.sum() == 2
    assert train.completion_cut == 2
    assert train.zero_completion == (truncated & (prompt >= MAX_LEN)).sum() == 1
    assert [row.zero_completion for row in train.rows] == (truncated & (prompt >= MAX_LEN)).tolist()
    assert train.total.max == total.max() and train.total.p50 == np.percentile(total, 50)
    assert sum(train.total.bin_counts) == 7 and len(train.total.bin_edges) == len(train.total.bin_counts) + 1
    assert train.formats == {"chat": 1, "completion": 4, "alpaca": 1, "text": 1}


def test_truncation_counts_agree_with_training(small, demo_tokenizer):
    stage, _, _ = small
    records = load_splits(stage).train
    for max_len in (8, 20, MAX_LEN):
        split = tokenize_split(demo_tokenizer, records, max_len)
        stage_at = load_config(stage.path, [f"max_seq_length={max_len}"])
        train = compute_stats(stage_at, use_cache=False).splits["train"]
        assert (train.truncated, train.completion_cut, train.zero_completion) == (
            split.truncated, split.completion_cut, len(split.dropped)
        )


def test_guidance_names_the_regime_and_the_config_plw(small):
    stage, _, _ = small
    stats = compute_stats(stage, use_cache=False)
    # one long answer lifts the mean of ratios above 1, the paper's ratio of means stays below
    assert stats.splits["train"].rg.arithmetic_mean > 1 > stats.splits["train"].rg.ratio_of_means > 0.5
    assert "small effect" in stats.guidance and "PLW 0.05" in stats.guidance
    short = load_config(stage.path, ["data=" + str(REPO / "sample_configs" / "data" / "demo")])
    short_reading = compute_stats(short, use_cache=False).guidance
    assert "0.01-0.1" in short_reading and "tuner's own sweep agrees (docs/plw-experiment.md" in short_reading
    long = plw_guidance(rg_stats(np.array([10, 20]), np.array([30, 50])), 1.0)
    assert "matters little" in long and "PLW 1 (the plain full-sequence loss)" in long
    assert "plain text" in plw_guidance(rg_stats(np.array([0]), np.array([5])), 0.0)
    swept = compute_stats(short, use_cache=False).for_sweep((0, 0.01, 1))
    assert swept.guidance.endswith("This sweep tries PLW 0, 0.01 and 1.") and swept.plw_text == "0, 0.01, 1"
    assert swept.split_guidance("valid").endswith("This sweep tries PLW 0, 0.01 and 1.")
    assert swept.for_sweep(()) is swept


def test_duplicates_and_overlap(tmp_path):
    same_as_chat = {"prompt": "Opposite of hot?", "completion": "cold"}  # renders to RECORDS[2]'s tokens
    write_jsonl(tmp_path / "d" / "train.jsonl", RECORDS + [RECORDS[0], same_as_chat])
    write_jsonl(tmp_path / "d" / "valid.jsonl", [RECORDS[1], {"prompt": "Unseen?", "completion": "yes"}])
    write_jsonl(tmp_path / "d" / "test.jsonl", [RECORDS[6], RECORDS[6]])
    stats = compute_stats(load_config(write_config(tmp_path, data=str(tmp_path / "d"))), use_cache=False)
    assert stats.splits["train"].duplicates == 2
    assert stats.splits["valid"].duplicates == 0
    assert stats.splits["test"].duplicates == 1
    assert stats.overlap == {"train/valid": 1, "train/test": 2}


def test_unreadable_rows_are_listed_and_the_rest_counted(tmp_path):
    data = tmp_path / "d"
    write_jsonl(data / "train.jsonl", RECORDS[:3], ["{not json", json.dumps({"question": "?"})])
    write_jsonl(data / "valid.jsonl", RECORDS[:2], ['{"messages": []}'])
    stage = load_config(write_config(tmp_path, data=str(data)))
    with pytest.raises(DataError, match="train.jsonl:4"):
        load_splits(stage)  # training still stops at the first bad row

    stats = compute_stats(stage, use_cache=False)
    train, valid = stats.splits["train"], stats.splits["valid"]
    assert train.count == 3 and valid.count == 2
    assert len(train.parse_errors) == 2
    assert train.parse_errors[0].startswith(f"{data / 'train.jsonl'}:4: not valid JSON")
    assert train.parse_errors[1].startswith(f"{data / 'train.jsonl'}:5: unrecognised record")
    assert valid.parse_errors == (f"{data / 'valid.jsonl'}:3: field 'messages' must be a non-empty list of messages",)
    assert load_record(stage, "valid", 1).origin == f"{data / 'valid.jsonl'}:2"


def test_a_record_the_chat_template_refuses_is_an_error_line(tmp_path, demo_model_dir):
    model = tmp_path / "model"
    shutil.copytree(demo_model_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
        + config["chat_template"]
    )
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    with_system = {"system": "Be brief.", "prompt": "Opposite of up?", "completion": "down"}
    write_jsonl(tmp_path / "d" / "train.jsonl", RECORDS[:3] + [with_system])
    stage = load_config(write_config(tmp_path, model=str(model), data=str(tmp_path / "d"), valid_fraction=0))
    stats = compute_stats(stage, use_cache=False)
    train = stats.splits["train"]
    assert train.count == 3
    assert len(train.parse_errors) == 1 and "train.jsonl:4: the chat template failed: no system turns" in train.parse_errors[0]


def test_sources_of_a_mixed_hf_dataset_list(tmp_path):
    # one format per dataset: Hugging Face fills a column that a row lacks with null
    simple = [RECORDS[0], RECORDS[1], RECORDS[4], RECORDS[5]]
    for name, rows, bad in (("a", simple[:3], []), ("b", simple[1:], ['{"prompt": "?", "completion": null}'])):
        write_jsonl(tmp_path / name / "train.jsonl", rows, bad)
    entries = [
        {"path": str(tmp_path / name), "train_split": "train", "valid_split": "train[:1]",
         "config": {"cache_dir": str(tmp_path / "hf-cache")}}
        for name in ("a", "b")
    ]
    stats = compute_stats(load_config(write_config(tmp_path, data=None, hf_dataset=entries)), use_cache=False)
    train = stats.splits["train"]
    assert train.count == 6
    a, b = f"{tmp_path / 'a'}[train]", f"{tmp_path / 'b'}[train]"
    assert list(train.sources) == [a, b]
    assert train.sources[a].count == 3 and train.sources[b].count == 3
    assert train.sources[a].parse_errors == () and len(train.sources[b].parse_errors) == 1
    assert train.parse_errors == train.sources[b].parse_errors
    assert train.sources[a].rows == () and train.sources[a].sources == {}
    assert stats.splits["valid"].count == 2 and stats.splits["valid"].parse_errors == ()


def test_token_view_follows_training_roles(small, demo_tokenizer):
    stage, _, _ = small
    record = load_splits(stage).train[5]  # the long answer: cut inside its completion
    ids, roles = encode_records(demo_tokenizer, [record])[0]
    cells = token_view(demo_tokenizer, record, MAX_LEN, 0.05)

    assert len(cells) == len(ids) > MAX_LEN
    assert [c.role == "completion" for c in cells] == (roles == COMPLETION).tolist()
    assert {c.weight for c in cells if c.role == "prompt"} == {0.05}
    assert {c.weight for c in cells if c.role == "completion"} == {1.0}
    assert [c.truncated for c in cells] == [i >= MAX_LEN for i in range(len(ids))]
    kept = tokenize_split(demo_tokenizer, [record], MAX_LEN).examples[0]
    assert [c.role == "completion" for c in cells if not c.truncated] == (kept.roles == COMPLETION).tolist()

    specials = [c.text for c in cells if c.special]
    assert specials == ["<|im_start|>", "<|im_end|>"] * 2
    rendered = demo_tokenizer._tokenizer.apply_chat_template(list(record.messages), tokenize=False)
    assert "".join(c.text for c in cells) == rendered


def test_token_view_reads_naturally_across_multibyte_characters(demo_tokenizer):
    from engine.data.records import parse_record

    record = parse_record({"prompt": "Grüße aus Köln 😀, bitte.", "completion": "Danke ✓"}, "x:1")
    cells = token_view(demo_tokenizer, record, 512, 0.0)
    assert "".join(c.text for c in cells) == demo_tokenizer._tokenizer.apply_chat_template(
        list(record.messages), tokenize=False
    )
    assert not any("\ufffd" in c.text for c in cells)


def test_a_gguf_model_is_counted_and_shown_with_its_own_tokenizer(tmp_path):
    """The Data screen's path: `model: x.gguf` resolves as training resolves it, tokenizer and all."""
    from engine.data.stats import load_stage_tokenizer

    from .test_gguf import write_tiny_gguf

    write_tiny_gguf(tmp_path / "tiny.gguf")
    write_jsonl(tmp_path / "d" / "train.jsonl", RECORDS)
    write_jsonl(tmp_path / "d" / "valid.jsonl", RECORDS[:2])
    stage = load_config(write_config(tmp_path, model="tiny.gguf", data=str(tmp_path / "d"), max_seq_length=4096))
    tokenizer = load_stage_tokenizer(stage)
    assert tokenizer._tokenizer.vocab_size < 400  # the GGUF's own small vocabulary, not the demo model's
    train = compute_stats(stage, use_cache=False).splits["train"]
    counts = np.array([hand_counts(tokenizer, row) for row in RECORDS])
    assert [r.prompt_tokens for r in train.rows] == counts[:, 0].tolist()
    assert [r.completion_tokens for r in train.rows] == counts[:, 1].tolist()
    record = load_record(stage, "train", 0)
    cells = token_view(tokenizer, record, 4096, 0.0)
    assert "".join(c.text for c in cells) == tokenizer._tokenizer.apply_chat_template(list(record.messages), tokenize=False)


def test_cache_hit_skips_tokenising(small, monkeypatch):
    stage, _, _ = small
    first = compute_stats(stage)
    assert not first.cached

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised although the cache holds these statistics")

    monkeypatch.setattr(stats_measure, "encode_records", no_tokenising)
    again = compute_stats(load_config(stage.path, ["prompt_loss_weight=0.5"]))  # PLW is not in the key
    assert again.cached and again.prompt_loss_weight == 0.5 and "PLW 0.5" in again.guidance
    assert stats_to_json(again, rows=True)["splits"] == stats_to_json(first, rows=True)["splits"]

    with pytest.raises(AssertionError, match="tokenised"):
        compute_stats(load_config(stage.path, ["max_seq_length=32"]))
    data = stage.config.data + "/train.jsonl"
    with open(data, "a") as f:
        f.write(json.dumps(RECORDS[0]) + "\n")
    with pytest.raises(AssertionError, match="tokenised"):
        compute_stats(stage)


def test_progress_reports_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(stats_measure, "CHUNK", 3)
    write_jsonl(tmp_path / "d" / "train.jsonl", RECORDS)
    write_jsonl(tmp_path / "d" / "valid.jsonl", RECORDS[:2])
    calls = []
    compute_stats(load_config(write_config(tmp_path, data=str(tmp_path / "d"))), progress=lambda *a: calls.append(a),
                  use_cache=False)
    assert calls[-1] == (9, 9)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert len(calls) >= 4


def test_bench_measures_both_ways():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "inspect_speed.py"), "--examples", "300", "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["examples"] == 300
    assert set(result["examples_per_s"]) == {"naive", "per_example_masks", "tuner"}
    assert result["tuner_over_naive"] == pytest.approx(result["examples_per_s"]["tuner"] / result["examples_per_s"]["naive"])
