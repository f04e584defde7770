"""Training throughput and memory: tuner's engine against mlx-lm's LoRA trainer.

    python bench/throughput.py                  # demo model, 200 steps of 8 examples, best of 2
    python bench/throughput.py --model ~/models/SmolLM2-135M-Instruct --iters 100
    python bench/throughput.py --json           # one JSON line only

Both trainers train the same model folder on the same data folder with the same
hyper-parameters, one after the other, each in a fresh subprocess so that neither inherits the
other's MLX allocator peak, compile cache or warmed-up pages.

Fairness rules (also printed with the results):

* Same model, data folder, batch size, steps, learning rate (Adam, constant), LoRA
  rank/scale/dropout/num_layers/keys, max_seq_length and seed; no gradient accumulation.
* Same objective. mlx-lm only knows mask_prompt true/false, so tuner runs PLW 1.0 against
  mask_prompt false (the default), or PLW 0.0 against mask_prompt true with ``--mask-prompt``.
* Same compute dtype. tuner computes in float32 on the CPU backend (bf16 matmuls are far slower
  there); the mlx-lm side gets the same cast, so we time the trainers, not the dtypes. On Metal
  both keep the stored dtype.
* Same quantity measured. The trainers' own tokens/s are not comparable: mlx-lm counts loss
  targets of its padded batches (``mask.sum()``), tuner counts real tokens. So both sides are
  measured here the same way: real (non-pad) tokens of the batches a trainer trained on, divided
  by wall-clock time. Each side's batches are counted at the source (a wrapper around mlx-lm's
  ``iterate_batches``, passed to its ``train()``; a wrapper around tuner's ``BatchStream.next``).
  Orders differ between the trainers, so each uses its own count.
* Same window. The clock runs from the first training report to the last one, as seen by a
  callback (tuner's ``TrainReport`` event, mlx-lm's ``on_train_loss_report``). The first
  ``steps_per_report`` steps, which include compiling the step, are left out and shown apart as
  warm-up. Everything inside the window counts: the step, batching, padding, the trainer's own
  reporting and bookkeeping. No validation or checkpoint falls inside the window: mlx-lm gets no
  validation set, and both save only after the last step. (tuner always evaluates before the
  first and after the last step; it is given one validation batch, and both evals are outside.)
* Memory: ``mx.get_peak_memory()`` at the end of the subprocess, reset after the model, data and
  LoRA layers are set up (tuner: when its RunStarted event arrives), and the process' max RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "sample_configs" / "data" / "demo"
if str(REPO) not in sys.path:  # run as a script from anywhere: the engine lives beside bench/
    sys.path.insert(0, str(REPO))

FAIRNESS = (
    "same model, data, batch size, steps, lr, LoRA settings, max_seq_length, seed and dtype; "
    "tokens/s = real (non-pad) tokens / wall time from the first to the last train report "
    "(first report window = warm-up with compilation, excluded); no eval or save inside the window; "
    "each trainer in its own subprocess"
)


# --------------------------------------------------------------------------- measuring helpers


class Clock:
    """Wall time and real-token count at each training report, plus the batch shapes seen.

    ``batch`` is called as each batch is made, ``report`` at each training report, so
    ``tokens[i]`` is what had been trained when report ``i`` fired.
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.real = 0  # real tokens in the batches handed out so far
        self.padded = 0  # positions computed (rows x width)
        self.examples = 0
        self.longest = 0
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.losses: list[float] = []

    def batch(self, lengths, width: int) -> None:
        self.real += int(sum(lengths))
        self.padded += len(lengths) * width
        self.examples += len(lengths)
        self.longest = max(self.longest, int(max(lengths)))

    def report(self, loss: float) -> None:
        self.times.append(time.perf_counter())
        self.tokens.append(self.real)
        self.losses.append(loss)

    def result(self, name: str) -> dict:
        import mlx.core as mx

        if len(self.times) < 2:
            raise SystemExit("need at least two training reports: make --iters larger than --steps-per-report")
        seconds = self.times[-1] - self.times[0]
        tokens = self.tokens[-1] - self.tokens[0]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # macOS reports bytes, Linux KiB
        return {
            "trainer": name,
            "tokens_per_second": tokens / seconds,
            "measured_tokens": tokens,
            "measured_seconds": seconds,
            "warmup_seconds": self.times[0] - self.start,
            "peak_memory_gb": mx.get_peak_memory() / 1e9,
            "max_rss_gb": rss_bytes / 1e9,
            "examples_seen": self.examples,
            "mean_example_tokens": self.real / max(self.examples, 1),
            "longest_example_tokens": self.longest,
            "padded_per_real_token": self.padded / max(self.real, 1),
            "last_train_loss": self.losses[-1],
        }


# --------------------------------------------------------------------------- the two workers


def run_tuner(spec: dict, workdir: Path) -> dict:
    """Train with ``load_stages`` + ``run_chain``, timing through the events it emits."""
    import mlx.core as mx
    import yaml

    from engine import batching
    from engine import events as ev
    from engine.config import load_stages
    from engine.trainer import run_chain

    config = {
        "model": spec["model"],
        "data": spec["data"],
        "fine_tune_type": "lora",
        "num_layers": spec["num_layers"],
        "lora_parameters": spec["lora_parameters"],
        "prompt_loss_weight": 0.0 if spec["mask_prompt"] else 1.0,
        "batch_size": spec["batch_size"],
        "iters": spec["iters"],
        "learning_rate": spec["learning_rate"],
        "max_seq_length": spec["max_seq_length"],
        "seed": spec["seed"],
        "steps_per_report": spec["steps_per_report"],
        "steps_per_eval": spec["iters"] + 1,  # only the evals tuner always does, before and after
        "val_batches": 1,
        "save_every": spec["iters"] + 1,  # only the final save, after the last report
        "runs_dir": str(workdir / "runs"),
        "name": "bench",
    }
    path = workdir / "tuner.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))

    clock = Clock()
    make_batch = batching.BatchStream.next

    def counted_next(stream):
        batch = make_batch(stream)
        clock.batch([int((row != batching.PAD).sum()) for row in batch.roles], batch.ids.shape[1])
        return batch

    batching.BatchStream.next = counted_next  # the trainer holds the class, so it sees this

    def on_event(event) -> None:
        if isinstance(event, ev.RunStarted):
            mx.reset_peak_memory()
        if isinstance(event, ev.TrainReport):
            clock.report(event.loss)
        elif not clock.times:
            clock.start = time.perf_counter()  # last event before training: the step-0 eval

    run_chain(load_stages([path]), on_event)
    return clock.result("tuner")


def run_mlx_lm(spec: dict, workdir: Path) -> dict:
    """Set up as ``mlx_lm lora`` does, then call its ``train()`` with counting hooks."""
    import types

    import mlx.core as mx
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_map
    from mlx_lm.tuner import trainer
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import dequantize_model, load

    np.random.seed(spec["seed"])  # mlx_lm.lora seeds both, in this order
    model, tokenizer = load(spec["model"])
    if not mx.metal.is_available():  # the dtype tuner computes in on CPU, for a like-for-like step
        dequantize_model(model)
        model.update(tree_map(lambda v: v.astype(mx.float32) if mx.issubdtype(v.dtype, mx.floating) else v,
                              model.parameters()))
    data_args = types.SimpleNamespace(data=spec["data"], train=True, test=False, mask_prompt=spec["mask_prompt"])
    train_set, _, _ = load_dataset(data_args, tokenizer)
    mx.random.seed(spec["seed"])
    model.freeze()
    linear_to_lora_layers(model, spec["num_layers"], spec["lora_parameters"])
    args = trainer.TrainingArgs(
        batch_size=spec["batch_size"],
        iters=spec["iters"],
        steps_per_report=spec["steps_per_report"],
        steps_per_eval=spec["iters"] + 1,
        steps_per_save=spec["iters"] + 1,
        max_seq_length=spec["max_seq_length"],
        adapter_file=str(workdir / "adapters.safetensors"),
    )

    clock = Clock()

    def counted_batches(**kwargs):
        for batch, lengths in trainer.iterate_batches(**kwargs):
            clock.batch(np.array(lengths)[:, 1].tolist(), batch.shape[1])  # rows are (offset, length)
            yield batch, lengths

    class Reports(TrainingCallback):
        def on_train_loss_report(self, info):
            clock.report(info["train_loss"])

    mx.reset_peak_memory()
    clock.start = time.perf_counter()
    trainer.train(model, optim.Adam(learning_rate=spec["learning_rate"]), CacheDataset(train_set), None,
                  args, iterate_batches=counted_batches, training_callback=Reports())
    return clock.result("mlx-lm")


WORKERS = {"tuner": run_tuner, "mlx-lm": run_mlx_lm}


def worker_main(name: str, spec_json: str, out: str) -> None:
    spec = json.loads(spec_json)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        result = WORKERS[name](spec, Path(tmp))
    Path(out).write_text(json.dumps(result))


def run_worker(name: str, spec: dict, verbose: bool) -> dict:
    """One trainer in a fresh Python process; its stdout (mlx-lm's progress UI) is dropped."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--spec", json.dumps(spec),
               "--out", str(out)]
        done = subprocess.run(cmd, stdout=None if verbose else subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        if done.returncode != 0 or not out.exists():
            sys.stderr.write(done.stderr)
            raise SystemExit(f"the {name} run failed (exit status {done.returncode})")
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- the comparison


def compare(spec: dict, repeats: int = 1, verbose: bool = False) -> dict:
    """Alternate the trainers ``repeats`` times and keep each one's fastest run.

    Best-of-N because the usual disturbance on a shared machine (another process taking a
    core) only ever slows a run down; alternating spreads any slow period over both sides.
    """
    runs: dict[str, list[dict]] = {"tuner": [], "mlx-lm": []}
    for _ in range(repeats):
        for name in runs:
            runs[name].append(run_worker(name, spec, verbose))
    tuner, mlx_lm = (max(runs[name], key=lambda r: r["tokens_per_second"]) for name in runs)
    for name, best in (("tuner", tuner), ("mlx-lm", mlx_lm)):
        best["all_tokens_per_second"] = [r["tokens_per_second"] for r in runs[name]]
    keys = ("tokens_per_second", "peak_memory_gb", "max_rss_gb")
    return {
        "spec": spec,
        "repeats": repeats,
        "fairness": FAIRNESS,
        "tuner": tuner,
        "mlx_lm": mlx_lm,
        "ratios": {key: tuner[key] / mlx_lm[key] for key in keys},  # ours / mlx-lm
    }


def table(result: dict) -> str:
    spec, ours, theirs, ratios = result["spec"], result["tuner"], result["mlx_lm"], result["ratios"]
    lora = spec["lora_parameters"]
    weighting = "PLW 0.0 vs mask_prompt true" if spec["mask_prompt"] else "PLW 1.0 vs mask_prompt false"
    lines = [
        f"model  {spec['model']}",
        f"data   {spec['data']}",
        f"iters {spec['iters']}, batch {spec['batch_size']}, lr {spec['learning_rate']:g}, "
        f"LoRA rank {lora['rank']} scale {lora['scale']:g} layers {spec['num_layers']} keys {lora.get('keys') or 'default'}, "
        f"max_seq_length {spec['max_seq_length']}, seed {spec['seed']}, {weighting}",
        f"fair:  {FAIRNESS}",
        f"runs:  {result['repeats']} per trainer, alternating; the fastest of each is shown",
        "",
        f"{'':28}{'tuner':>12}{'mlx-lm':>12}{'tuner/mlx-lm':>15}",
    ]

    def row(label, key, fmt, ratio=True):
        cells = f"{label:28}{format(ours[key], fmt):>12}{format(theirs[key], fmt):>12}"
        return cells + (f"{ratios[key]:>15.2f}" if ratio else "")

    lines += [
        row("tokens/s (real, steady)", "tokens_per_second", ",.0f"),
        row("peak MLX memory (GB)", "peak_memory_gb", ".3f"),
        row("max RSS (GB)", "max_rss_gb", ".3f"),
        row("warm-up window (s)", "warmup_seconds", ".2f", False),
        row("measured window (s)", "measured_seconds", ".2f", False),
        row("measured tokens", "measured_tokens", ",d", False),
        row("examples trained", "examples_seen", ",d", False),
        row("mean example (tokens)", "mean_example_tokens", ".1f", False),
        row("longest example (tokens)", "longest_example_tokens", "d", False),
        row("padded positions / token", "padded_per_real_token", ".2f", False),
        row("last train loss", "last_train_loss", ".3f", False),
    ]
    if result["repeats"] > 1:
        spread = [" ".join(f"{v:,.0f}" for v in side["all_tokens_per_second"]) for side in (ours, theirs)]
        lines.append(f"tokens/s is the best of {result['repeats']} alternating runs: tuner {spread[0]}; mlx-lm {spread[1]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Training throughput of tuner's engine vs mlx-lm's LoRA trainer.")
    p.add_argument("--model", help="local MLX model folder (default: the built-in demo model)")
    p.add_argument("--data", default=str(DEMO_DATA), help="data folder with train.jsonl (default: the demo data)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps-per-report", type=int, default=10, help="also the warm-up window left out")
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--num-layers", type=int, default=-1, help="-1: every block")
    p.add_argument("--keys", nargs="+", help="LoRA module keys (default: mlx-lm's choice)")
    p.add_argument("--max-seq-length", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-prompt", action="store_true", help="PLW 0.0 vs mask_prompt true")
    p.add_argument("--repeats", type=int, default=2, help="alternate the trainers N times, keep each one's best")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--verbose", action="store_true", help="show the trainers' own output")
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.spec, args.out)
        return 0
    from engine.platform_check import maybe_reexec_with_openblas

    maybe_reexec_with_openblas()  # before MLX loads; the workers inherit the preload
    if args.model is None:
        from engine.demo_model import ensure_demo_model

        args.model = str(ensure_demo_model())
    lora = {"rank": args.rank, "scale": args.scale, "dropout": 0.0}
    if args.keys:
        lora["keys"] = args.keys
    spec = {
        "model": str(Path(args.model).expanduser().resolve()),
        "data": str(Path(args.data).expanduser().resolve()),
        "iters": args.iters,
        "batch_size": args.batch_size,
        "steps_per_report": args.steps_per_report,
        "learning_rate": args.learning_rate,
        "num_layers": args.num_layers,
        "lora_parameters": lora,
        "max_seq_length": args.max_seq_length,
        "seed": args.seed,
        "mask_prompt": args.mask_prompt,
    }
    result = compare(spec, args.repeats, args.verbose)
    if not args.json:
        print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
