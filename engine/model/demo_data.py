"""A small, deterministic instruction dataset of facts: the one the tests, the sample chains and
``smollm2-demo.yaml`` train on (the demo itself labels reviews: :mod:`engine.model.demo_reviews`).

Every task is a lookup (made-up capitals, colours, opposites, animal sounds, words in capitals)
asked in several wordings, each wording ending with the fact's key. Prompts are wordier than
answers, like real short-answer datasets, so the completion tokens are a small share of each
example. A random-weight model does not learn the lookups in the demo's minute (mlx-lm's trainer
stalls at the same completion loss): its validation loss falls as it learns the answers' form and
the chat template, and a pretrained base (SmolLM2) is what makes its sample answers right.

The splits are honest. Each (fact, wording) question belongs to exactly one split: for every fact
one wording is held out for validation and another for test, so validation asks about facts that
train teaches, in wordings train never pairs with them, and no question, let alone a whole
example, is shared between splits. No split holds the same example twice.

Run ``python -m engine.model.demo_data chat OUT_DIR`` (or ``text OUT_DIR``) to (re)write the bundled
files in ``sample_configs/data/demo`` (``demo-text``); a test checks that they match this generator.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SYSTEM_SHARE = 0.15
MULTI_TURN_SHARE = 0.15

# Made-up countries so the "facts" come only from this dataset.
CAPITALS = {
    "Norvania": "Velspar",
    "Quellmark": "Dunmoor",
    "Tarsidia": "Oskerlin",
    "Belmora": "Fenwick",
    "Zerulia": "Kastagne",
    "Ombrevia": "Lutessa",
    "Calvania": "Grendholm",
    "Marisoll": "Pellatine",
    "Drevonia": "Sarnacht",
    "Elbaria": "Torvique",
    "Faldoria": "Ashbourne",
    "Yrenvale": "Corrastel",
}

COLOURS = {
    "banana": "yellow",
    "lemon": "yellow",
    "grass": "green",
    "leaf": "green",
    "clear sky": "blue",
    "ocean": "blue",
    "fresh snow": "white",
    "glass of milk": "white",
    "lump of coal": "black",
    "crow": "black",
    "ripe tomato": "red",
    "cherry": "red",
    "pumpkin": "orange",
    "carrot": "orange",
    "plum": "purple",
    "chocolate bar": "brown",
}

ANTONYMS = {
    "hot": "cold",
    "big": "small",
    "up": "down",
    "fast": "slow",
    "happy": "sad",
    "light": "dark",
    "open": "closed",
    "early": "late",
    "full": "empty",
    "loud": "quiet",
    "wet": "dry",
    "hard": "soft",
    "high": "low",
    "strong": "weak",
    "rich": "poor",
    "young": "old",
}

SOUNDS = {
    "cow": "moo",
    "dog": "woof",
    "cat": "meow",
    "duck": "quack",
    "sheep": "baa",
    "owl": "hoot",
    "lion": "roar",
    "pig": "oink",
    "horse": "neigh",
    "frog": "ribbit",
    "bee": "buzz",
    "snake": "hiss",
}

WORDS = [
    "cat", "dog", "sun", "tree", "fish", "bird", "lamp", "rain", "book", "star",
    "milk", "moon", "rose", "ship", "wind", "gold", "road", "cake", "frog", "leaf",
    "hat", "cup", "pen", "box", "map", "key", "bell", "drum", "kite", "nest",
]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a concise assistant. Answer in as few words as possible.",
    "You are a quiz bot. Reply with the answer only, without any explanation.",
    "Answer every question briefly and accurately.",
]


# Each task: its fact table and the wordings of its question; "{}" is the fact's key.
TEMPLATES = {
    "capital": [
        "What is the capital of {}?",
        "Name the capital city of {}.",
        "I am studying geography. Which city is the capital of {}?",
        "Quick quiz question: what is the capital city of {}?",
        "Which city is the seat of government of {}?",
        "My atlas is missing a page. Tell me the capital of {}.",
    ],
    "colour": [
        "What colour is a {}?",
        "Tell me in one word the usual colour of a {}.",
        "Picture it in your mind: what colour is a {}?",
        "Which colour would you use to paint a {}?",
        "Name the colour of a {}.",
        "A child is drawing. Which crayon colour fits a {}?",
    ],
    "antonym": [
        "What is the opposite of {}?",
        "Give me one word that means the opposite of {}.",
        "Answer with one word: which word is the antonym of {}?",
        "Name a word with the reverse meaning of {}.",
        "What word means the contrary of {}?",
        "Complete the pair of opposites for the word {}.",
    ],
    "sound": [
        "What sound does this animal make: {}?",
        "My child asked me about a noise. What does a {} say?",
        "Write as a single word the sound made by a {}.",
        "On the farm or in the wild, what is the call of a {}?",
        "Which word imitates the call of a {}?",
        "In a picture book, what does it say under the {}?",
    ],
    "uppercase": [
        "Write in capital letters the word {}.",
        "Convert to uppercase and reply with the result only: {}.",
        "Please shout this word by writing it all in upper case: {}.",
        "Change every letter to a capital letter in the word {}.",
        "How is this written in block capitals: {}?",
        "Type with the caps lock key on the word {}.",
    ],
}

FACTS = {
    "capital": CAPITALS,
    "colour": COLOURS,
    "antonym": {**ANTONYMS, **{opposite: word for word, opposite in ANTONYMS.items()}},
    "sound": SOUNDS,
    "uppercase": {word: word.upper() for word in WORDS},
}

SPLITS = ("train", "valid", "test")


def demo_questions(seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """Every (question, answer) pair, split so that no question is in two splits.

    For each fact, one wording (chosen at random) goes to validation, another to test and the
    rest to train: every fact and every wording is taught in train, and the held-out splits ask
    about known facts in wordings train never used for them.
    """
    rng = random.Random(seed)
    pools: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLITS}
    for task, facts in FACTS.items():
        templates = TEMPLATES[task]
        for key, answer in facts.items():
            order = rng.sample(range(len(templates)), len(templates))
            for split, index in zip(("valid", "test"), order):
                pools[split].append((templates[index].format(key), answer))
            pools["train"] += [(templates[index].format(key), answer) for index in order[2:]]
    return pools


def _record(rng: random.Random, pool: list[tuple[str, str]]) -> dict:
    messages = []
    if rng.random() < SYSTEM_SHARE:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for _ in range(2 if rng.random() < MULTI_TURN_SHARE else 1):
        question, answer = rng.choice(pool)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def demo_records(n: int, seed: int = 0, pool: list[tuple[str, str]] | None = None) -> list[dict]:
    """``n`` chat records drawn from ``pool`` (default: every question); repeats are possible.

    The same arguments always give the same list. Tokenizer training and benchmarks use this
    stream; the bundled splits come from :func:`demo_splits`, which also removes repeats.
    """
    rng = random.Random(seed)
    pool = pool or [pair for pairs in demo_questions(seed).values() for pair in pairs]
    return [_record(rng, pool) for _ in range(n)]


def demo_splits(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """``train/valid/test`` records built from disjoint question pools, each without repeats."""
    sizes = sizes or {"train": 800, "valid": 100, "test": 100}
    rng = random.Random(seed)
    splits = {}
    for name, pool in demo_questions(seed).items():
        seen, records = set(), []
        while len(records) < sizes[name]:
            record = _record(rng, pool)
            text = json.dumps(record)
            if text not in seen:
                seen.add(text)
                records.append(record)
        splits[name] = records
    return splits


def write_demo_dataset(folder: Path, seed: int = 0) -> None:
    """Write the bundled ``train/valid/test.jsonl`` into ``folder``."""
    splits = demo_splits(seed)
    write_splits(folder, [row for name in SPLITS for row in splits[name]], len(splits["train"]), len(splits["valid"]))


def write_splits(folder: Path, records: list[dict], n_train: int, n_valid: int) -> None:
    """``train/valid/test.jsonl``: consecutive slices of one record stream, the rest is test."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": records[:n_train],
        "valid": records[n_train:n_train + n_valid],
        "test": records[n_train + n_valid:],
    }
    for name, rows in splits.items():
        lines = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"{name}.jsonl").write_text(lines, encoding="utf-8")


def demo_text_records(n: int, seed: int = 0) -> list[dict]:
    """Plain-text paragraphs stating the same facts, for the continued-pretraining stage.

    A chain that first reads these facts as prose and then learns to answer questions about
    them is the smallest honest example of "pretrain, then instruction-tune".
    """
    rng = random.Random(seed)
    facts = (
        [f"The capital of {country} is {city}." for country, city in CAPITALS.items()]
        + [f"A {thing} is {colour}." for thing, colour in COLOURS.items()]
        + [f"The opposite of {word} is {other}." for word, other in ANTONYMS.items()]
        + [f"A {animal} says {sound}." for animal, sound in SOUNDS.items()]
    )
    return [{"text": " ".join(rng.sample(facts, rng.randint(3, 6)))} for _ in range(n)]


def write_demo_text(folder: Path, seed: int = 0, n_train: int = 400, n_valid: int = 50) -> None:
    """Write ``train/valid.jsonl`` of plain-text records into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = demo_text_records(n_train + n_valid, seed)
    for name, rows in (("train", records[:n_train]), ("valid", records[n_train:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("chat", "text"):
        sys.exit("usage: python -m engine.model.demo_data chat|text OUT_DIR")
    (write_demo_dataset if sys.argv[1] == "chat" else write_demo_text)(Path(sys.argv[2]))
