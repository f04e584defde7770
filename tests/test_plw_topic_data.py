"""The PLW experiment's data (bench/plw_topic_data.py): bundled files match the generator, no
prompt repeats or crosses splits, the answers are the four letters in even shares, and every
passage holds more cues of its own topic than of any other."""

import json
from collections import Counter
from pathlib import Path

from bench.plw_topic_data import CODE, CUES, write

BUNDLED = Path(__file__).resolve().parents[1] / "sample_configs" / "data" / "plw-topics"


def rows(folder: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_bundled_files_match_the_generator(tmp_path):
    write(tmp_path)
    for split in ("train", "valid", "test"):
        assert (BUNDLED / f"{split}.jsonl").read_bytes() == (tmp_path / f"{split}.jsonl").read_bytes(), (
            f"{split}.jsonl is stale: run python -m bench.plw_topic_data sample_configs/data/plw-topics")


def test_splits_are_disjoint_balanced_and_the_cues_point_to_the_answer():
    splits = {split: rows(BUNDLED, split) for split in ("train", "valid", "test")}
    assert [len(r) for r in splits.values()] == [1200, 200, 300]
    prompts = [row["prompt"] for split in splits.values() for row in split]
    assert len(set(prompts)) == len(prompts)
    counts = Counter(row["completion"] for row in splits["train"])
    assert set(counts) == set(CODE.values()) and min(counts.values()) > 0.2 * 1200
    topic_of = {letter: topic for topic, letter in CODE.items()}
    for row in splits["test"]:
        found = {topic: sum(row["prompt"].count(f" {cue}") for cue in cues) for topic, cues in CUES.items()}
        assert max(found, key=found.get) == topic_of[row["completion"]], row["prompt"]


def test_every_sample_config_validates(capsys):
    """What the README offers to run must at least validate (the chain's second stage with its first)."""
    from engine.cli import main

    samples = BUNDLED.parents[1]
    configs = [[p] for p in sorted(samples.glob("*.yaml")) + sorted(samples.glob("plw-sweep/*.yaml"))
               if p.name != "chain-instruct.yaml"]
    configs.append([samples / "chain-pretrain.yaml", samples / "chain-instruct.yaml"])
    for paths in configs:
        assert main(["validate", *map(str, paths)]) == 0, (paths, capsys.readouterr().err)
    assert "sweep of 12 runs" in capsys.readouterr().out
