"""A small, deterministic RACE-like multiple-choice reading task, for PLW experiments offline.

The published prompt-loss-weight results were measured on RACE: a passage, a question and four
options in the prompt, one letter as the completion, so the generation ratio Rg is about 0.01.
RACE itself is not available offline, so this module writes look-alike data: short made-up
stories built from fixed pools of names, towns, animals, objects, colours, days and numbers, and
questions whose answer is stated in the story. The three wrong options come from the same pool
as the right one. Where the story mentions another value of the kind asked about (a second
person, a second job), that value is always one of the distractors, so the answer has to be read
from the passage, not guessed from which option "looks like" the story.

The prompt follows the article's RACE template (``Choose the correct option based on the
context.`` / ``Context:`` / ``Question:`` / ``Options:``) with lettered options on one line; the
completion is the letter alone.

Run ``python -m bench.race_data OUT_DIR`` to (re)write the bundled files in
``sample_configs/data/race-like``; a test checks that they match this generator.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from engine.model.demo_data import write_splits

LETTERS = "ABCD"
INSTRUCTION = "Choose the correct option based on the context."

NAMES = [
    "Mara", "Tobin", "Lena", "Oskar", "Priya", "Felix", "Nadia", "Hugo", "Ines", "Ravi",
    "Greta", "Milo", "Sofia", "Jonas", "Aisha", "Pavel", "Clara", "Dev", "Yuki", "Ruben",
]
TOWNS = [
    "Velspar", "Dunmoor", "Oskerlin", "Fenwick", "Kastagne", "Lutessa", "Grendholm",
    "Pellatine", "Sarnacht", "Torvique", "Ashbourne", "Corrastel",
]
PLACES = ["market", "library", "harbour", "bakery", "museum", "park", "station", "school"]
ANIMALS = ["dog", "cat", "parrot", "rabbit", "goat", "tortoise", "hamster", "pony"]
PET_NAMES = ["Biscuit", "Pepper", "Comet", "Maple", "Ziggy", "Noodle", "Button", "Juniper"]
OBJECTS = ["kite", "umbrella", "lantern", "scarf", "basket", "drum", "teapot", "backpack"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEATHER = ["rainy", "windy", "sunny", "foggy", "snowy", "cloudy"]
HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine"]
ITEMS = ["apples", "pears", "eggs", "loaves of bread", "oranges", "candles", "postcards"]
RELATIVES = ["aunt", "uncle", "grandmother", "grandfather", "cousin", "sister", "brother"]
JOBS = ["baker", "teacher", "fisher", "doctor", "painter", "carpenter", "gardener", "pilot"]


def _story(rng: random.Random) -> tuple[str, list[tuple[str, str, list[str], list[str]]]]:
    """One passage and the questions it can answer, as ``(question, answer, also, pool)``.

    ``pool`` is where distractors come from; ``also`` lists the values of the same kind that the
    story mentions besides the answer (see :func:`_options`).
    """
    hero, friend = rng.sample(NAMES, 2)
    town = rng.choice(TOWNS)
    place = rng.choice(PLACES)
    animal, pet = rng.choice(ANIMALS), rng.choice(PET_NAMES)
    day = rng.choice(DAYS)
    count, items = rng.choice(NUMBERS), rng.choice(ITEMS)
    obj, colour = rng.choice(OBJECTS), rng.choice(COLOURS)
    relative = rng.choice(RELATIVES)
    hero_job, friend_job = rng.sample(JOBS, 2)
    weather, hour = rng.choice(WEATHER), rng.choice(HOURS)

    if rng.random() < 0.5:
        passage = (
            f"{hero} is a {hero_job} who lives in {town} with a {animal} called {pet}. "
            f"Last {day}, {hero} walked to the {place} and bought {count} {items}. "
            f"There {hero} met {friend}, a {friend_job}, who was carrying a {colour} {obj}. "
            f"{friend} said the {obj} had once belonged to {friend}'s {relative}. "
            f"It was a {weather} day, and {hero} was home again by {hour} o'clock."
        )
    else:
        passage = (
            f"On {day} morning {friend} the {friend_job} knocked on the door of {hero}, a {hero_job} "
            f"in {town}. {friend} had brought a {colour} {obj} that once belonged to {friend}'s {relative}. "
            f"Together they took {hero}'s {animal}, {pet}, to the {place}, where {hero} bought "
            f"{count} {items}. The day was {weather}, so they were back by {hour} o'clock."
        )

    questions = [
        (f"Where does {hero} live?", town, [], TOWNS),
        (f"What kind of animal is {pet}?", animal, [], ANIMALS),
        (f"What is the name of {hero}'s {animal}?", pet, [], PET_NAMES),
        (f"How many {items} did {hero} buy?", count, [], NUMBERS),
        (f"What colour was the {obj}?", colour, [], COLOURS),
        (f"Who did the {obj} once belong to?", relative, [], RELATIVES),
        (f"Where did {hero} buy the {items}?", place, [], PLACES),
        ("Which day is mentioned in the story?", day, [], DAYS),
        ("What was the weather like?", weather, [], WEATHER),
        (f"By what time was {hero} home?", f"{hour} o'clock", [], [f"{h} o'clock" for h in HOURS]),
        (f"What is {hero}'s job?", hero_job, [friend_job], JOBS),
        (f"What is {friend}'s job?", friend_job, [hero_job], JOBS),
        (f"Who had the {obj}?", friend, [hero], NAMES),
        (f"Who bought the {items}?", hero, [friend], NAMES),
    ]
    return passage, questions


def _options(rng: random.Random, answer: str, also: list[str], pool: list[str]) -> list[str]:
    """The answer and three distinct distractors, shuffled.

    ``also`` holds values of the same kind that the story mentions (the other person, the other
    job): one of them is always among the distractors, the rest are drawn from ``pool``.
    """
    distractors = also[:1]
    rest = [v for v in pool if v != answer and v not in distractors]
    distractors += rng.sample(rest, 3 - len(distractors))
    options = [answer, *distractors]
    rng.shuffle(options)
    return options


def format_prompt(passage: str, question: str, options: list[str]) -> str:
    """The article's RACE prompt, with the options lettered on one line."""
    lettered = " ".join(f"{letter}) {text}" for letter, text in zip(LETTERS, options))
    return f"{INSTRUCTION}\nContext: {passage}\nQuestion: {question}\nOptions: {lettered}"


def race_records(n: int, seed: int = 0) -> list[dict]:
    """Return ``n`` prompt/completion records; the same ``(n, seed)`` always gives the same list.

    Each record also keeps the ``answer`` as text, which training ignores, so that a person
    reading the files (or a test) can check the letter against the story.
    """
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        passage, questions = _story(rng)
        question, answer, also, pool = rng.choice(questions)
        options = _options(rng, answer, also, pool)
        letter = LETTERS[options.index(answer)]
        records.append({
            "prompt": format_prompt(passage, question, options),
            "completion": letter,
            "answer": answer,
        })
    return records


def write_race_dataset(
    folder: Path, seed: int = 0, n_train: int = 600, n_valid: int = 100, n_test: int = 100
) -> None:
    """Write ``train/valid/test.jsonl`` into ``folder``: consecutive slices of one stream."""
    write_splits(folder, race_records(n_train + n_valid + n_test, seed), n_train, n_valid)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.race_data OUT_DIR")
    write_race_dataset(Path(sys.argv[1]))
