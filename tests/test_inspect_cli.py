"""``tuner inspect`` as a user runs it: the report, the documented JSON keys, one-line errors."""

import json

from .conftest import DEMO_DATA, REPO
from .test_cli import assert_user_error, tuner

TOP_KEYS = {"schema_version", "tokenizer", "max_seq_length", "prompt_loss_weight", "cached", "guidance", "overlap", "splits"}
SPLIT_KEYS = {
    "name", "count", "formats", "parse_errors", "prompt", "completion", "total", "rg",
    "truncated", "completion_cut", "zero_completion", "duplicates", "sources",
}
DISTRIBUTION_KEYS = {"count", "mean", "min", "p10", "p25", "p50", "p75", "p90", "p99", "max", "bin_edges", "bin_counts"}
RG_KEYS = {
    "count", "no_prompt", "arithmetic_mean", "geometric_mean", "median", "share_below_1", "ratio_of_means",
    "log10_bin_edges", "bin_counts",
}
ROW_KEYS = {
    "index", "origin", "fmt", "prompt_tokens", "completion_tokens", "total_tokens", "rg",
    "truncated", "completion_cut", "zero_completion",
}


def test_json_has_the_documented_keys():
    result = tuner("inspect", REPO / "sample_configs" / "demo.yaml", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == TOP_KEYS
    assert out["schema_version"] == 1 and out["max_seq_length"] == 256 and out["prompt_loss_weight"] == 0.1
    assert set(out["overlap"]) == {"train/valid", "train/test"}
    assert set(out["splits"]) == {"train", "valid", "test"}
    for split in out["splits"].values():
        assert set(split) == SPLIT_KEYS  # no rows unless asked for
        for key in ("prompt", "completion", "total"):
            assert set(split[key]) == DISTRIBUTION_KEYS
        assert set(split["rg"]) == RG_KEYS
    assert out["splits"]["train"]["count"] == 800


def test_rows_on_request_with_null_for_no_rg(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    chat = (DEMO_DATA / "train.jsonl").read_text().splitlines()[0]
    (data / "train.jsonl").write_text(chat + "\n" + json.dumps({"text": "just text"}) + "\n")
    (data / "valid.jsonl").write_text(chat + "\n")
    result = tuner("inspect", data, "--model", "builtin:tiny-llama", "--rows", "--no-cache")
    assert result.returncode == 0, result.stderr
    train = json.loads(result.stdout)["splits"]["train"]
    assert set(train) == SPLIT_KEYS | {"rows"}
    assert [set(row) for row in train["rows"]] == [ROW_KEYS, ROW_KEYS]
    assert train["rows"][1]["rg"] is None and train["rg"]["no_prompt"] == 1


def test_bare_data_path_with_model_and_overrides():
    result = tuner("inspect", DEMO_DATA, "--model", "builtin:tiny-llama", "--max-seq-length", "24",
                   "--prompt-loss-weight", "0")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "max_seq_length 24" in out and "PLW 0" in out
    assert "train: 800 examples (chat 800)" in out
    assert "Rg = completion / prompt tokens" in out and "^ max_seq_length 24" in out
    assert "the prompt is masked" in out


def test_bad_input_is_one_line():
    assert_user_error(tuner("inspect", "no/such/data.jsonl", "--model", "builtin:tiny-llama"),
                      "no/such/data.jsonl", "no such file or folder")
    assert_user_error(tuner("inspect", DEMO_DATA), "--model")
    assert_user_error(tuner("inspect", REPO / "sample_configs" / "demo.yaml", "--max-seq-length", "1"),
                      "max_seq_length")
    assert_user_error(tuner("inspect", DEMO_DATA, "--model", "./no/such/model"), "model", "no such model folder")


def test_a_gguf_model_counts_with_its_own_tokenizer(tmp_path):
    """`model: x.gguf` works for inspect as for training: the file is imported once, its tokenizer counts."""
    from .test_gguf import write_tiny_gguf

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "run.yaml").write_text(f"model: tiny.gguf\ndata: {json.dumps(str(DEMO_DATA))}\n")
    from_config = tuner("inspect", tmp_path / "run.yaml", "--json", "--no-cache")
    assert from_config.returncode == 0, from_config.stderr
    out = json.loads(from_config.stdout)
    assert out["tokenizer"] == str(gguf) and out["splits"]["train"]["count"] == 800
    demo = json.loads(tuner("inspect", DEMO_DATA, "--model", "builtin:tiny-llama", "--json").stdout)
    assert out["splits"]["train"]["total"]["mean"] != demo["splits"]["train"]["total"]["mean"]  # another vocabulary

    bare = tuner("inspect", DEMO_DATA, "--model", gguf, "--json")
    assert bare.returncode == 0, bare.stderr
    assert json.loads(bare.stdout)["splits"]["train"]["total"] == out["splits"]["train"]["total"]
    assert_user_error(tuner("inspect", DEMO_DATA, "--model", tmp_path / "gone.gguf"), "model", "gone.gguf")


def test_inspect_lists_a_runs_worst_validation_examples(tmp_path):
    import json
    import subprocess
    import sys

    from engine.config import load_stages
    from engine.training.chain import run_chain

    from .conftest import REPO, write_config

    config = write_config(tmp_path, iters=4, steps_per_eval=4, val_batches=2)
    [result] = run_chain(load_stages([config]), lambda e: None)
    out = subprocess.run([sys.executable, "-m", "engine.cli", "inspect", str(config), "--run", str(result.run_dir), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    worst = json.loads(out.stdout)["worst_valid"]
    assert worst["step"] == 4 and len(worst["examples"]) == 10
    losses = [row["completion_loss"] for row in worst["examples"]]
    assert losses == sorted(losses, reverse=True)
    first = worst["examples"][0]
    assert first["rg"] == first["completion_tokens"] / first["prompt_tokens"]
    text = subprocess.run([sys.executable, "-m", "engine.cli", "inspect", str(config), "--run", str(result.run_dir)],
                          capture_output=True, text=True, cwd=REPO, timeout=300).stdout
    assert "worst validation examples" in text and first["origin"] in text
