"""The throughput benchmark runs end to end and its JSON says what its table says.

A handful of steps only: this checks the plumbing (both trainers run, both are measured, the
ratio is ours over theirs), not the speed. The pieces the scenarios add (presets, generated data
sets, the big-vocabulary model, the MFU arithmetic) are checked on their own, without training.
"""

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from .conftest import DEMO_DATA, REPO


@pytest.fixture(scope="module")
def bench(demo_model_dir):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "throughput.py"), "--json", "--model", str(demo_model_dir),
         "--data", str(DEMO_DATA), "--iters", "6", "--batch-size", "4", "--steps-per-report", "2",
         "--repeats", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout  # --json prints the JSON line and nothing else
    return json.loads(lines[0])


def test_both_trainers_are_measured(bench):
    for side in (bench["tuner"], bench["mlx_lm"]):
        assert side["tokens_per_second"] > 0
        assert side["peak_memory_gb"] > 0
        assert side["max_rss_gb"] > 0
        assert side["measured_tokens"] > 0
        assert side["examples_seen"] == 6 * 4


def test_ratios_are_ours_over_theirs(bench):
    for key, ratio in bench["ratios"].items():
        assert ratio == pytest.approx(bench["tuner"][key] / bench["mlx_lm"][key])


def test_same_settings_for_both(bench):
    spec = bench["spec"]
    assert (spec["iters"], spec["batch_size"], spec["mask_prompt"]) == (6, 4, False)
    assert "real (non-pad) tokens" in bench["fairness"]


def test_whole_run_and_mfu_are_measured(bench):
    assert bench["matmul_peak_flops"] > 0
    for side in (bench["tuner"], bench["mlx_lm"]):
        # the whole run holds the measured window, plus start-up, loading, warm-up and the save
        assert side["whole_run_seconds"] > side["measured_seconds"] + side["warmup_seconds"]
        assert side["flops_per_token"] > 0
        assert 0 < side["mfu"] < 1
        assert side["achieved_flops"] == pytest.approx(side["flops_per_token"] * side["tokens_per_second"])
        assert side["attention_length"] >= side["mean_example_tokens"]  # token-weighted, so never shorter
    assert {"whole_run_seconds", "mfu"} <= set(bench["ratios"])


# --------------------------------------------------------------------------- the pieces, without training

spec = importlib.util.spec_from_file_location("throughput", REPO / "bench" / "throughput.py")
throughput = importlib.util.module_from_spec(spec)
spec.loader.exec_module(throughput)


def test_mfu_is_model_flops_at_the_measured_rate_over_the_peak():
    side = {"tokens_per_second": 200.0}
    throughput.add_mfu(side, flops_per_token=5e8, peak=4e11)
    assert side == {"tokens_per_second": 200.0, "flops_per_token": 5e8, "achieved_flops": 1e11, "mfu": 0.25}


def test_no_scenario_keeps_the_plain_defaults():
    args = throughput.parse_args([])
    assert (args.scenario, args.model, args.data, args.batch_size, args.mask_prompt) == (None, None, "demo", 8, False)


def test_scenario_presets():
    short = throughput.parse_args(["--scenario", "short"])
    assert (short.model, short.data, short.batch_size, short.mask_prompt, short.num_layers) == (
        "builtin:smollm2-135m", "race", 4, True, -1)
    long = throughput.parse_args(["--scenario", "long"])
    assert (long.data, long.mask_prompt) == ("demo", False)
    memory = throughput.parse_args(["--scenario", "memory"])
    assert (memory.model, memory.data, memory.max_seq_length, memory.batch_size) == ("big-vocab", "long", 2048, 1)


def test_explicit_flags_override_a_scenario():
    args = throughput.parse_args(["--batch-size", "2", "--scenario", "short", "--no-mask-prompt", "--model", "m"])
    assert (args.batch_size, args.mask_prompt, args.model, args.data) == (2, False, "m", "race")


def _both_loaders(folder, tokenizer, max_seq_length):
    """The folder's training examples as tuner and mlx-lm each tokenize them."""
    from mlx_lm.tuner.datasets import load_dataset

    from engine.data.records import Features
    from engine.data.sources import load_local
    from engine.data.tokenize import tokenize_split

    ours = tokenize_split(tokenizer, load_local(Path(folder), Features(), 0.0, 0).train, max_seq_length)
    args = types.SimpleNamespace(data=str(folder), train=True, test=False, mask_prompt=True)
    train, valid, _ = load_dataset(args, tokenizer)
    assert len(valid) > 0
    return ours, [train.process(train[i]) for i in range(len(train))]


def test_race_data_is_written_and_both_trainers_read_it(tmp_path, demo_model_dir, demo_tokenizer):
    folder = throughput.prepare_data("race", str(demo_model_dir), 2048, tmp_path)
    ours, theirs = _both_loaders(folder, demo_tokenizer, 2048)
    assert len(ours.examples) == len(theirs) == 600
    assert not ours.truncated and not ours.dropped
    for ids, offset in theirs[:20]:  # mask_prompt: the completion is a letter and the end of the turn
        assert 0 < len(ids) - offset < 5


def test_long_chats_fill_most_of_max_seq_length(tmp_path, demo_model_dir, demo_tokenizer):
    folder = throughput.prepare_data("long", str(demo_model_dir), 1024, tmp_path)
    ours, theirs = _both_loaders(folder, demo_tokenizer, 1024)
    target = int(throughput.LONG_CHAT_SHARE * 1024)
    assert not ours.truncated
    for example in ours.examples:
        assert 0.9 * target < len(example) <= target + 8  # pieces counted apart may merge at the seams
        assert example.completion_targets > 50
    assert [len(ids) for ids, _ in theirs] == [len(e) for e in ours.examples]


def test_big_vocab_model_has_qwens_vocabulary_and_loads(tmp_path):
    from mlx_lm.utils import load_model, load_tokenizer

    sys.path.insert(0, str(REPO / "bench"))
    from big_vocab_model import VOCAB_SIZE, ensure_big_vocab_model

    folder = ensure_big_vocab_model(tmp_path)
    assert ensure_big_vocab_model(tmp_path) == folder  # built once
    model, config = load_model(folder, lazy=True)
    assert VOCAB_SIZE == config["vocab_size"] == 151_936
    assert model.model.embed_tokens.weight.shape == (151_936, 256)
    tokenizer = load_tokenizer(folder)
    assert len(tokenizer.encode("What is the capital of Norvania?")) > 0
    assert len(tokenizer.get_vocab()) < 2048  # the demo tokenizer: ids never reach the top rows


def test_distributed_scaling_measures_both_sides(demo_model_dir):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "distributed_scaling.py"), "--json", "--model", str(demo_model_dir),
         "--iters", "6", "--steps-per-report", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one, many = result["one_process"], result["ranks"]
    assert (one["world_size"], many["world_size"]) == (1, 2)
    assert one["tokens_per_second"] > 0 and len(many["rank_tokens_per_second"]) == 2
    assert result["scaling"] == pytest.approx(many["tokens_per_second"] / one["tokens_per_second"])
    assert many["final_loss"] == pytest.approx(one["final_loss"], rel=1e-4)  # the same training
