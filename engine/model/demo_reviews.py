"""The demo's dataset: short reviews to label positive or negative, which the tiny random-weight
model learns within the demo's minute.

A random base knows nothing, so the demo needs a task it can learn from scratch with LoRA in a few
hundred steps, and whose held-out answers it then gets right, so that a newcomer watches the
sample answers turn right and not only a curve fall. Lookups of facts asked in new wordings (the
``engine.model.demo_data`` set) are beyond it in that time, whatever the method (measured: LoRA
and full fine-tuning stay near chance; mlx-lm's trainer too). Here each review's label follows
from words that recur across the whole set (each adjective appears in dozens of reviews), so a
model that attends roughly evenly over the prompt can read it off, and every review ends with one
of them, right before the answer. With demo.yaml, LoRA on the tiny model reaches 93-100% choice
accuracy on validation by step 400 (seeds 0, 1, 2: 98%, 100%, 93%; from 61% at step 0).

Every review is a new combination of the same words, so the splits share no example: train,
validation and test are drawn from one stream, no text twice. Some chats open with a system
prompt and some hold two reviews in turn, so the Data screen shows how the template and the
masks handle both. ``python -m engine.model.demo_reviews OUT_DIR`` writes the bundled files in
``sample_configs/data/demo-reviews``; a test checks that they match this generator.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from engine.model.demo_data import SYSTEM_PROMPTS

SIZES = {"train": 800, "valid": 100, "test": 100}
SYSTEM_SHARE = 0.15
TWO_REVIEW_SHARE = 0.15

GOOD = ["wonderful", "friendly", "delicious", "lovely", "great", "cheerful", "excellent", "tasty", "pleasant",
        "superb"]
BAD = ["awful", "rude", "terrible", "boring", "horrible", "dirty", "bland", "cold", "noisy", "dreadful"]
THINGS = ["soup", "waiter", "room", "film", "music", "service", "bread", "staff", "garden", "coffee", "view", "price",
          "pasta", "hotel", "concert", "breakfast"]
SENTENCES = [  # each ends with an adjective: the last words before the answer carry the label
    "The {a} was {x} and the {b} was {y}.",
    "We thought the {a} was {x}; the {b} was {y}.",
    "Honestly, the {a} was {x}, and the {b} felt {y}.",
    "The {a}? {X}. The {b}? {Y}.",
]
# The review comes last, right before the answer: with the review first and the question after
# it, the same model stayed at chance for the whole demo (measured). Short openings, so that a
# sample's shortened prompt still shows some of the review.
QUESTIONS = [
    "Positive or negative? {}",
    "Is this review positive or negative? {}",
    "Sentiment, positive or negative: {}",
    "Label it positive or negative: {}",
]


def review(rng: random.Random, positive: bool) -> str:
    """Two things of the same place, each with an adjective of the same polarity."""
    words = GOOD if positive else BAD
    a, b = rng.sample(THINGS, 2)
    x, y = rng.sample(words, 2)
    return rng.choice(SENTENCES).format(a=a, b=b, x=x, y=y, X=x.capitalize(), Y=y.capitalize())


def _turn(rng: random.Random) -> list[dict]:
    positive = rng.random() < 0.5
    question = rng.choice(QUESTIONS).format(review(rng, positive))
    return [{"role": "user", "content": question},
            {"role": "assistant", "content": "positive" if positive else "negative"}]


def _record(rng: random.Random) -> dict:
    messages = [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if rng.random() < SYSTEM_SHARE else []
    for _ in range(2 if rng.random() < TWO_REVIEW_SHARE else 1):
        messages += _turn(rng)
    return {"messages": messages}


def review_splits(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """Train, valid and test records: one stream, no text twice within or across splits. The first
    two validation records (the demo's samples) end in one positive and one negative answer."""
    sizes = sizes or SIZES
    rng = random.Random(seed)
    seen: set[str] = set()
    splits = {}
    for name, size in sizes.items():
        records: list[dict] = []
        while len(records) < size:
            record = _record(rng)
            text = json.dumps(record)
            if text in seen or (name == "valid" and len(records) < 2 and not _fits_sample(records, record)):
                continue
            seen.add(text)
            records.append(record)
        splits[name] = records
    return splits


def _fits_sample(records: list[dict], record: dict) -> bool:
    """A single-turn record with the answer the samples do not have yet."""
    if len(record["messages"]) != 2:
        return False
    answer = record["messages"][-1]["content"]
    return answer == "positive" if not records else answer != records[0]["messages"][-1]["content"]


def write_review_dataset(folder: Path, seed: int = 0) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in review_splits(seed).items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m engine.model.demo_reviews OUT_DIR")
    write_review_dataset(Path(sys.argv[1]))
