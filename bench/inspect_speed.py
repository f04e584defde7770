"""Dataset-statistics speed: tuner's batched ``compute_stats`` against one-example-at-a-time loops.

    python bench/inspect_speed.py                      # 20,000 demo examples, the demo tokenizer
    python bench/inspect_speed.py --examples 100000
    python bench/inspect_speed.py --json               # one JSON line only

All sides count the same synthetic chats (``engine.model.demo_data``) with the demo model's tokenizer
and chat template, one after the other in this process:

* naive: per example, ``apply_chat_template(messages, tokenize=False)`` and ``encode`` it. Token
  counts only: it cannot tell prompt from completion tokens, so it gives no Rg.
* per-example masks: ``encode_records`` on one example at a time, the exact prompt/completion
  roles training uses. Against the naive loop it shows what the masks cost; against tuner, what
  batching buys.
* tuner: ``compute_stats`` with the cache off: reading the JSONL file, the same roles in chunks
  of 2,048 examples (one batched tokenizer call each), and everything ``tuner inspect`` reports
  (lengths, Rg, truncation, duplicates, overlap).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.config import load_stages  # noqa: E402
from engine.data.records import parse_record  # noqa: E402
from engine.model.demo_data import demo_records  # noqa: E402
from engine.model.demo import ensure_demo_model  # noqa: E402
from engine.levers.platform_check import maybe_reexec_with_openblas  # noqa: E402
from engine.data.stats import compute_stats, load_stage_tokenizer  # noqa: E402
from engine.data.tokenize import encode_records, hf_tokenizer  # noqa: E402


def naive(tokenizer, rows: list[dict]) -> int:
    tok = hf_tokenizer(tokenizer)
    tokens = 0
    for row in rows:
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        tokens += len(tok.encode(text, add_special_tokens=False))
    return tokens


def per_example_masks(tokenizer, rows: list[dict]) -> int:
    records = [parse_record(row, f"row {i}") for i, row in enumerate(rows)]
    return sum(len(encode_records(tokenizer, [record])[0][0]) for record in records)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> int:
    maybe_reexec_with_openblas()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    args = parser.parse_args()

    rows = demo_records(args.examples, seed=7)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "train.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        config = f"model: {json.dumps(str(ensure_demo_model()))}\ndata: {json.dumps(str(data))}\nvalid_fraction: 0\n"
        stage = load_stages(["bench"], texts={"bench": config})[0]
        tokenizer = load_stage_tokenizer(stage)
        seconds = {
            "naive": timed(naive, tokenizer, rows),
            "per_example_masks": timed(per_example_masks, tokenizer, rows),
            "tuner": timed(compute_stats, stage, None, False),
        }
    rates = {name: args.examples / s for name, s in seconds.items()}
    result = {
        "examples": args.examples,
        "seconds": seconds,
        "examples_per_s": rates,
        "tuner_over_naive": rates["tuner"] / rates["naive"],
        "tuner_over_per_example_masks": rates["tuner"] / rates["per_example_masks"],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.examples:,} demo chats, demo tokenizer")
    for name, label in (("naive", "naive loop (no masks)"), ("per_example_masks", "per-example masks"),
                        ("tuner", "tuner compute_stats")):
        print(f"  {label:<24} {rates[name]:>10,.0f} examples/s   {seconds[name]:7.2f} s")
    print(f"  tuner / naive: {result['tuner_over_naive']:.2f}x   "
          f"tuner / per-example masks: {result['tuner_over_per_example_masks']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
