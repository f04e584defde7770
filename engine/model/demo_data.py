"""A small, deterministic instruction dataset for the offline demo.

The demo has to show a falling validation loss within about a minute on a
laptop CPU, using a tiny random-weight model. So every task here is a short,
rule-based answer to a templated question: the answers come from fixed tables
or simple string/number rules that a tiny model can partly pick up. Prompts are
deliberately wordier than answers, like real short-answer datasets, so the
completion tokens are a small share of each example.

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


def _capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(list(CAPITALS))
    question = rng.choice([
        "What is the capital of {c}?",
        "Name the capital city of {c}. Reply with the city name only.",
        "I am studying the geography of {c}. Which city is its capital?",
        "Quick quiz question: what is the capital city of the country {c}?",
    ]).format(c=country)
    return question, CAPITALS[country] + "."


def _colour(rng: random.Random) -> tuple[str, str]:
    thing = rng.choice(list(COLOURS))
    question = rng.choice([
        "What colour is a {t}?",
        "Tell me the usual colour of a {t}, in one word.",
        "If you picture a {t} in your mind, what colour is it?",
    ]).format(t=thing)
    return question, COLOURS[thing].capitalize() + "."


def _antonym(rng: random.Random) -> tuple[str, str]:
    pair = rng.choice(list(ANTONYMS.items()))
    word, opposite = pair if rng.random() < 0.5 else pair[::-1]
    question = rng.choice([
        "What is the opposite of '{w}'?",
        "Give me one word that means the opposite of '{w}'.",
        "Which word is the antonym of the word '{w}'? Answer with one word.",
    ]).format(w=word)
    return question, opposite


def _sound(rng: random.Random) -> tuple[str, str]:
    animal = rng.choice(list(SOUNDS))
    question = rng.choice([
        "What sound does a {a} make?",
        "My child asked me what noise a {a} makes. What should I say?",
        "Write the sound that a {a} makes, as a single word.",
    ]).format(a=animal)
    return question, SOUNDS[animal].capitalize() + "."


def _reverse(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    question = rng.choice([
        "Reverse the letters of the word '{w}'.",
        "Write the word '{w}' backwards, letter by letter.",
        "Spell '{w}' in reverse order. Give only the result.",
    ]).format(w=word)
    return question, word[::-1]


def _uppercase(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    question = rng.choice([
        "Write the word '{w}' in capital letters.",
        "Convert '{w}' to uppercase and reply with the result only.",
        "Please shout the word '{w}' by writing it all in upper case.",
    ]).format(w=word)
    return question, word.upper()


def _next_number(rng: random.Random) -> tuple[str, str]:
    start, step = rng.randint(1, 20), rng.randint(1, 5)
    terms = [start + step * i for i in range(5)]
    shown = ", ".join(str(t) for t in terms[:4])
    question = rng.choice([
        "What number comes next in the sequence {s}?",
        "Continue this sequence with the next number: {s}, ...",
        "Here is a list of numbers that follows a simple rule: {s}. What is the next one?",
    ]).format(s=shown)
    return question, str(terms[4])


def _compare(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(range(1, 100), 2)
    if rng.random() < 0.5:
        question = rng.choice([
            "Which number is larger, {a} or {b}?",
            "Compare {a} and {b}. Which one is the bigger number?",
        ])
        answer = max(a, b)
    else:
        question = rng.choice([
            "Which number is smaller, {a} or {b}?",
            "Compare {a} and {b}. Which one is the smaller number?",
        ])
        answer = min(a, b)
    return question.format(a=a, b=b), str(answer)


TASKS = [_capital, _colour, _antonym, _sound, _reverse, _uppercase, _next_number, _compare]


def _turn(rng: random.Random) -> list[dict]:
    question, answer = rng.choice(TASKS)(rng)
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def demo_records(n: int, seed: int = 0) -> list[dict]:
    """Return ``n`` chat records; the same ``(n, seed)`` always gives the same list."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        messages = []
        if rng.random() < SYSTEM_SHARE:
            messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
        messages += _turn(rng)
        if rng.random() < MULTI_TURN_SHARE:
            messages += _turn(rng)
        records.append({"messages": messages})
    return records


def write_demo_dataset(
    folder: Path, seed: int = 0, n_train: int = 800, n_valid: int = 100, n_test: int = 100
) -> None:
    """Write ``train/valid/test.jsonl`` into ``folder``.

    The splits are consecutive slices of a single record stream, rather than
    separately seeded streams that would start out identical.
    """
    write_splits(folder, demo_records(n_train + n_valid + n_test, seed), n_train, n_valid)


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
