"""A short-answer task with long prompts that a 135M model can learn but does not know: the PLW
experiment's data (docs/plw-experiment.md).

Each prompt is a passage of about a hundred words about one of four topics, then a question asking
for the passage's category letter; the completion is the letter alone, so the generation ratio Rg
is about 0.02, RACE's range. The letters stand for the topics by a fixed but arbitrary code that
the prompt never states, so the base model answers at chance (25%) and must learn the code from
the training data; reading the topic off the passage is within a small pretrained model's reach.
Each passage names three words of its own topic and one word of each of two other topics, so a
single word does not give the answer away.

Run ``python -m bench.plw_topic_data OUT_DIR`` to write ``train``/``valid``/``test.jsonl``
(prompt/completion records); the same seed always writes the same files, with no example repeated
and none shared between splits.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

CODE = {"music": "A", "weather": "B", "sports": "C", "cooking": "D"}
CUES = {
    "music": ["guitar", "melody", "choir", "concert", "drummer", "violin", "chorus", "orchestra",
              "rhythm", "album", "piano", "singer"],
    "weather": ["thunderstorm", "forecast", "drizzle", "hailstones", "fog", "breeze", "rainbow", "frost",
                "humidity", "snowfall", "heatwave", "clouds"],
    "sports": ["referee", "goalkeeper", "stadium", "tournament", "striker", "coach", "penalty", "league",
               "marathon", "scoreboard", "teammates", "trophy"],
    "cooking": ["saucepan", "recipe", "oven", "dough", "spices", "stockpot", "ladle", "butter",
                "casserole", "chopping board", "whisk", "flour"],
}
NAMES = ["Mara", "Tobin", "Lena", "Oskar", "Priya", "Felix", "Nadia", "Hugo", "Ines", "Ravi", "Greta", "Milo"]
PLACES = ["the old town", "the village hall", "a small flat", "the riverside", "her cousin's house",
          "the community centre", "the school", "a quiet street"]
TIMES = ["On Monday", "Last weekend", "Early in the morning", "After lunch", "In the evening", "Every spring"]
SENTENCES = [
    "{time}, {name} spent a long time thinking about the {cue}.",
    "Nobody in {place} had expected the {cue} to matter so much.",
    "{name} wrote a few notes about the {cue} in a worn notebook.",
    "Later, a neighbour asked {name} whether the {cue} had changed anything.",
    "Everyone agreed that the {cue} was the part worth remembering.",
    "{time}, the talk in {place} turned to the {cue} once again.",
]
FILLER = [
    "The day itself was otherwise ordinary.",
    "{name} had lived in {place} for many years.",
    "There was tea on the table and the windows were open.",
    "Most of the afternoon passed without anything unusual.",
]
QUESTION = "\n\nWhich category does this passage belong to? Answer with the letter A, B, C or D."


def passage(rng: random.Random, topic: str) -> str:
    """About a hundred words: three cues of ``topic`` and one of each of two other topics, shuffled
    among filler sentences."""
    others = rng.sample([t for t in CUES if t != topic], 2)
    cues = rng.sample(CUES[topic], 3) + [rng.choice(CUES[other]) for other in others]
    lines = [rng.choice(SENTENCES) for _ in cues] + rng.sample(FILLER, 2)
    words = cues + [None, None]
    order = list(range(len(lines)))
    rng.shuffle(order)
    out = []
    for i in order:
        out.append(lines[i].format(time=rng.choice(TIMES), name=rng.choice(NAMES), place=rng.choice(PLACES),
                                   cue=words[i] or ""))
    return " ".join(out)


def records(n: int, rng: random.Random, seen: set[str]) -> list[dict]:
    out = []
    while len(out) < n:
        topic = rng.choice(list(CODE))
        prompt = "Passage: " + passage(rng, topic) + QUESTION
        if prompt in seen:
            continue
        seen.add(prompt)
        out.append({"prompt": prompt, "completion": CODE[topic]})
    return out


def write(folder: Path, seed: int = 0, sizes: tuple[int, int, int] = (1200, 200, 300)) -> None:
    rng, seen = random.Random(seed), set()
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in zip(("train", "valid", "test"), sizes):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(n, rng, seen)),
                                              encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.plw_topic_data OUT_DIR")
    write(Path(sys.argv[1]))
