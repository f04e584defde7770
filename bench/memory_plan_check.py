"""The memory planner's prediction against MLX's measured peak, for a grid of configs.

Each config trains a few steps in its own process (a clean peak, and mlx-lm's grad_checkpoint
wraps a block's class for the life of a process) on text records longer than the longest
max_seq_length, so every batch is full: batch_size x max_seq_length tokens, every one trained.
The peak is ``mx.get_peak_memory()`` after ``mx.reset_peak_memory()``, from loading the model to
the last step.

    .venv/bin/python bench/memory_plan_check.py                # the tiny model's grid
    .venv/bin/python bench/memory_plan_check.py --smollm2      # plus SmolLM2-135M (4-bit) configs
    .venv/bin/python bench/memory_plan_check.py --kept /tmp/tiny4   # plus the tiny model at 4 bits, kept so
    .venv/bin/python bench/memory_plan_check.py --where grad_checkpoint=true   # only these configs
    .venv/bin/python bench/memory_plan_check.py --one '{"batch_size": 4, ...}'   # one measurement
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASE = {"model": "builtin:tiny-llama", "num_layers": -1, "iters": 3, "val_batches": 0, "save_every": 1000,
        "steps_per_report": 1000, "learning_rate": 1e-4, "lora_parameters": {"rank": 8, "scale": 2.0, "dropout": 0.0}}
TINY_GRID = [dict(batch_size=b, max_seq_length=n, grad_checkpoint=g)
             for b, n, g in itertools.product((1, 4, 8), (128, 512, 2048), (False, True))]
SMOLLM2_GRID = [dict(model="builtin:smollm2-135m", batch_size=b, max_seq_length=n, grad_checkpoint=g, num_layers=8)
                for b, n, g in ((1, 512, False), (2, 512, False), (4, 512, False), (4, 512, True), (1, 1024, False),
                                (1, 1024, True))]
# quantized bases kept quantized (QLoRA, as on a Mac): SmolLM2's 4-bit weights in compute_dtype: model
KEPT_GRID = [dict(keys, compute_dtype="model") for keys in SMOLLM2_GRID if keys["batch_size"] != 2]
# and the tiny model quantized to 4 bits (bfloat16 scales and norms), --kept's folder its model
TINY_KEPT_GRID = [dict(compute_dtype="model", batch_size=b, max_seq_length=n, grad_checkpoint=g)
                  for b, n, g in ((1, 512, False), (4, 512, False), (4, 512, True), (1, 2048, False), (1, 2048, True))]


def write_data(folder: Path) -> Path:
    """Text records far longer than 2,048 tokens: every batch is cut to max_seq_length. Each record
    starts differently: identical records would share their whole length, and the shared-prefix
    lever would compute one row per batch part (the first table measured that, not the batch)."""
    phrases = [f"word{i % 97} and the {i % 13} of it" for i in range(3000)]
    folder.mkdir(parents=True, exist_ok=True)
    records = (" ".join(phrases[7 * r:] + phrases[:7 * r]) for r in range(16))
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in records))
    return folder


def quantize_tiny(folder: Path) -> Path:
    """The tiny model in bfloat16, its linear layers and embedding quantized to 4 bits, as an
    mlx-community model is stored."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_lm.utils import load, quantize_model, save

    from engine.model.demo import ensure_demo_model

    source = ensure_demo_model()
    model, tokenizer, config = load(str(source), return_config=True)
    model.update(tree_map(lambda v: v.astype(mx.bfloat16), model.parameters()))
    model, config = quantize_model(model, config, 64, 4)
    save(folder, str(source), model, tokenizer, config)
    return folder


def measure(keys: dict) -> dict:
    """Train ``keys`` here; the predicted and measured peak in bytes."""
    import yaml

    from engine.levers.process import prepare_process

    prepare_process()
    import mlx.core as mx

    from engine.config import load_stages
    from engine.training.chain import run_chain

    with tempfile.TemporaryDirectory() as tmp:
        config = {**BASE, "data": str(write_data(Path(tmp) / "data")), "runs_dir": f"{tmp}/runs", **keys}
        path = Path(tmp) / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        [stage] = load_stages([path])
        predicted = predict(stage)
        mx.reset_peak_memory()
        [result] = run_chain([stage], lambda event: None)
        assert result.status == "completed", result.status
        return {"predicted": predicted, "measured": mx.get_peak_memory()}


def predict(stage) -> int:
    from engine.levers.memory_plan import plan_memory, predicts_cpu, read_model_facts
    from engine.model.resolve import resolve_model

    config, dtype = read_model_facts(Path(resolve_model(stage).path))
    plan = plan_memory(stage.config, config, config.get("quantization"), 1 << 40, stored_dtype=dtype,
                       on_cpu=predicts_cpu())
    return plan.total


def chosen(keys: dict, where: list[str]) -> bool:
    """Whether ``keys`` (over BASE's) has every ``KEY=VALUE`` of ``where``, values read as YAML."""
    import yaml

    full = {**BASE, **keys}
    return all(full.get(k) == yaml.safe_load(v) for k, _, v in (w.partition("=") for w in where))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help="measure one config (JSON keys) and print JSON")
    parser.add_argument("--smollm2", action="store_true", help="add SmolLM2-135M configs (4-bit base: dequantized, "
                                                              "and kept quantized with compute_dtype: model)")
    parser.add_argument("--kept", metavar="FOLDER", help="add the tiny model quantized to 4 bits in compute_dtype: "
                                                         "model, written to FOLDER (made if missing)")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only the configs with this value, e.g. grad_checkpoint=true (repeatable)")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return
    grid = TINY_GRID + (SMOLLM2_GRID + KEPT_GRID if args.smollm2 else [])
    if args.kept:
        folder = Path(args.kept).resolve()
        if not (folder / "config.json").is_file():
            quantize_tiny(folder)
        grid += [dict(keys, model=str(folder)) for keys in TINY_KEPT_GRID]
    grid = [keys for keys in grid if chosen(keys, args.where)]
    print("| model | batch | length | grad_checkpoint | predicted MB | measured MB | error |")
    print("|---|---|---|---|---|---|---|")
    for keys in grid:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(keys)], capture_output=True, text=True)
        if out.returncode:
            print(f"| {keys} failed: {out.stderr.strip().splitlines()[-1]} |", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        error = (r["predicted"] - r["measured"]) / r["measured"]
        model = keys.get("model", BASE["model"]).removeprefix("builtin:")
        model = "tiny-llama (4-bit)" if model == str(Path(args.kept or ".").resolve()) else model
        model += " kept quantized" if keys.get("compute_dtype") == "model" else ""
        print(f"| {model} | {keys['batch_size']} | {keys['max_seq_length']} | {keys['grad_checkpoint']} | "
              f"{r['predicted'] / 1e6:.0f} | {r['measured'] / 1e6:.0f} | {error:+.0%} |", flush=True)


if __name__ == "__main__":
    main()
