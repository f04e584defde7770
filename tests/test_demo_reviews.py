"""The demo's review dataset: bundled files as the generator writes them, honest splits, and a demo
run whose held-out answers become right (the tiny random-weight model, with demo.yaml as shipped)."""

import json

from engine import events as ev
from engine.config import load_stages
from engine.model.demo_reviews import BAD, GOOD, review_splits, write_review_dataset
from engine.training.chain import run_chain

from .conftest import REPO

BUNDLED = REPO / "sample_configs" / "data" / "demo-reviews"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (BUNDLED / f"{name}.jsonl").read_text().splitlines()]


def test_bundled_files_match_the_generator(tmp_path):
    write_review_dataset(tmp_path)
    for name in ("train", "valid", "test"):
        assert (BUNDLED / f"{name}.jsonl").read_bytes() == (tmp_path / f"{name}.jsonl").read_bytes()
    assert [len(rows(n)) for n in ("train", "valid", "test")] == [800, 100, 100]


def test_no_example_repeats_within_or_across_splits():
    texts = [json.dumps(r) for n in ("train", "valid", "test") for r in rows(n)]
    assert len(set(texts)) == len(texts)
    train_questions = {m["content"] for r in rows("train") for m in r["messages"] if m["role"] == "user"}
    for held_out in ("valid", "test"):
        asked = {m["content"] for r in rows(held_out) for m in r["messages"] if m["role"] == "user"}
        assert not asked & train_questions


def test_every_answer_follows_from_the_reviews_words():
    for name in ("train", "valid", "test"):
        for record in rows(name):
            turns = [m for m in record["messages"] if m["role"] != "system"]
            for question, answer in zip(turns[::2], turns[1::2]):
                words = {w.strip(".,;?").lower() for w in question["content"].split()}
                expected = "positive" if words & set(GOOD) else "negative"
                assert bool(words & set(GOOD)) != bool(words & set(BAD))  # one polarity per review
                assert answer["content"] == expected


def test_both_labels_and_both_shapes_occur_and_the_samples_differ():
    splits = review_splits()
    answers = [m["content"] for r in splits["train"] for m in r["messages"] if m["role"] == "assistant"]
    assert 0.4 < answers.count("positive") / len(answers) < 0.6
    assert any(r["messages"][0]["role"] == "system" for r in splits["train"])
    assert any(len(r["messages"]) >= 4 for r in splits["train"])
    first, second = splits["valid"][:2]
    assert [first["messages"][-1]["content"], second["messages"][-1]["content"]] == ["positive", "negative"]


def test_the_demo_as_shipped_learns_to_answer_its_held_out_reviews(tmp_path, demo_model_dir):
    """demo.yaml unchanged but for where its run goes: the samples start as noise and end right,
    and validation choice accuracy climbs from about chance to at least 90% (98% measured)."""
    events = []
    [stage] = load_stages([REPO / "sample_configs" / "demo.yaml"], [f"runs_dir={tmp_path}"])
    run_chain([stage], events.append)
    evals = [e for e in events if isinstance(e, ev.EvalReport) and e.split == "valid"]
    assert evals[0].choice_accuracy < 0.7 and evals[-1].choice_accuracy >= 0.9
    samples = [e for e in events if isinstance(e, ev.SampleGenerated)]
    first, last = samples[:2], samples[-2:]
    assert all(s.completion.strip() != s.reference for s in first)
    assert [s.completion.strip() for s in last] == [s.reference for s in last] == ["positive", "negative"]
