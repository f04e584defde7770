"""Data sources and per-record format detection."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.data.records import Features, parse_record
from engine.data.rows import FILE_SUFFIXES
from engine.data.sources import hold_out, load_local
from engine.errors import DataError
from engine.hub import looks_like_local_path

ROWS = [
    {"prompt": "p1", "completion": "c1"},
    {"instruction": "do", "input": "", "output": "done"},
    {"text": "plain"},
    {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
]


def test_formats_are_detected_per_record():
    records = [parse_record(row, f"f:{i}") for i, row in enumerate(ROWS)]
    assert [r.fmt for r in records] == ["completion", "alpaca", "text", "chat"]
    assert records[1].messages[0] == {"role": "user", "content": "do"}
    assert records[2].messages is None and records[2].text == "plain"


def test_column_overrides():
    features = Features(prompt="question", completion="answer", chat="conversation")
    record = parse_record({"question": "q", "answer": "a"}, "f:1", features)
    assert record.fmt == "completion" and record.messages[-1]["content"] == "a"
    chat = parse_record({"conversation": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "f:2", features)
    assert chat.fmt == "chat"


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"messages": [{"role": "user", "content": "only a question"}]}, "no assistant message"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "unknown role"),
        ({"prompt": 3, "completion": "x"}, "must be text"),
        ({"foo": "bar"}, "unrecognised record"),
        ([1, 2], "expected an object"),
    ],
)
def test_bad_records_name_their_origin(row, fragment):
    with pytest.raises(DataError) as err:
        parse_record(row, "data.jsonl:7")
    assert str(err.value).startswith("data.jsonl:7") and fragment in str(err.value)


def test_every_file_type_reads_the_same_records(tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(10)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with open(tmp_path / "d.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    seen = []
    for suffix in ("jsonl", "json", "csv", "parquet"):
        splits = load_local(tmp_path / f"d.{suffix}", Features(), valid_fraction=0.2, seed=0)
        assert len(splits.train) == 8 and len(splits.valid) == 2
        seen.append([r.messages for r in splits.train + splits.valid])
    assert all(s == seen[0] for s in seen)


def test_folder_with_validation_named_file(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    (tmp_path / "validation.jsonl").write_text(json.dumps(ROWS[2]) + "\n")
    splits = load_local(tmp_path, Features(), 0.05, 0)
    assert len(splits.train) == 1 and splits.valid[0].fmt == "text"


def test_hold_out_is_deterministic_and_disjoint():
    records = [parse_record({"text": str(i)}, f"f:{i}") for i in range(100)]
    a_train, a_valid = hold_out(records, 0.1, seed=3)
    b_train, b_valid = hold_out(records, 0.1, seed=3)
    assert a_valid == b_valid and len(a_valid) == 10
    assert not {r.origin for r in a_valid} & {r.origin for r in a_train}


def test_local_paths_are_told_from_hub_ids():
    assert looks_like_local_path("./data") and looks_like_local_path("a/b/c")
    assert looks_like_local_path("train.jsonl", FILE_SUFFIXES)
    assert not looks_like_local_path("mlx-community/wikisql", FILE_SUFFIXES)
    assert looks_like_local_path("~/models/llama") and looks_like_local_path("models/") and looks_like_local_path("C:\\m")
    assert not looks_like_local_path("train.jsonl")  # a file type counts only for the loader that reads it


def test_null_columns_of_a_mixed_hugging_face_table_do_not_decide_the_format():
    row = {"messages": None, "prompt": "p", "completion": "c", "text": None}
    assert parse_record(row, "hf#0").fmt == "completion"
    row = {"messages": None, "prompt": None, "completion": None, "text": "plain"}
    assert parse_record(row, "hf#1").fmt == "text"
