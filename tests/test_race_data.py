"""The RACE-like multiple-choice generator and the dataset bundled from it.

The PLW experiment is only meaningful if every question can be answered from its passage, so
these tests read each bundled record back from its prompt text (not from the generator's
internals) and check the letter against the story.
"""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from engine.data.records import parse_record
from bench.race_data import INSTRUCTION, LETTERS, race_records, write_race_dataset

BUNDLED = Path(__file__).resolve().parent.parent / "sample_configs" / "data" / "race-like"
PROMPT = re.compile(
    r"\A(?P<instruction>[^\n]+)\nContext: (?P<passage>[^\n]+)\nQuestion: (?P<question>[^\n]+)\n"
    r"Options: A\) (?P<A>.+) B\) (?P<B>.+) C\) (?P<C>.+) D\) (?P<D>.+)\Z"
)


def _rows(split: str) -> list[dict]:
    return [json.loads(line) for line in (BUNDLED / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_bundled_files_match_the_generator(tmp_path):
    write_race_dataset(tmp_path)
    for split in ("train", "valid", "test"):
        assert (BUNDLED / f"{split}.jsonl").read_bytes() == (tmp_path / f"{split}.jsonl").read_bytes(), (
            f"{split}.jsonl is stale: run python -m bench.race_data sample_configs/data/race-like"
        )
    assert [len(_rows(s)) for s in ("train", "valid", "test")] == [600, 100, 100]


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_every_answer_is_one_letter_stated_in_the_passage(split):
    for row in _rows(split):
        match = PROMPT.match(row["prompt"])
        assert match, row["prompt"]
        assert match["instruction"] == INSTRUCTION
        options = [match[letter] for letter in LETTERS]
        assert len(set(options)) == 4, options
        assert row["completion"] in LETTERS
        assert match[row["completion"]] == row["answer"]
        # Stated in the passage, as a whole word (so "two" does not match inside "twelve").
        assert re.search(rf"\b{re.escape(row['answer'])}\b", match["passage"]), row
        assert parse_record(row, "x").fmt == "completion"


def test_the_generator_is_deterministic_and_balanced():
    assert race_records(50, seed=3) == race_records(50, seed=3)
    assert race_records(50, seed=3) != race_records(50, seed=4)
    letters = Counter(r["completion"] for r in race_records(800))
    assert set(letters) == set(LETTERS) and min(letters.values()) > 150
    prompts = [r["prompt"] for r in race_records(800)]
    assert len(set(prompts)) == len(prompts)
