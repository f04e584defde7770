"""Data-parallel scaling: one process against N ranks under mlx.launch, same config, same global batches.

    python bench/distributed_scaling.py                         # demo model, 2 ranks on this machine
    python bench/distributed_scaling.py --scenario short        # SmolLM2-135M on RACE-like data, batch 4
    python bench/distributed_scaling.py --hostfile hosts.json   # the ranks of an mlx.launch hostfile
    python bench/distributed_scaling.py --json

Both sides run ``tuner train`` on the same YAML (model, data, global batch size, steps, seed); the
N-rank side through ``mlx.launch`` (``-n N --backend ring`` on this machine, or ``--hostfile``).

* Steady tokens/s: real tokens trained between the first and the last training report, over the
  time between them (evaluation is kept out of that window: one batch, before and after training).
  The first report's window holds the compile, so it is left out.
* Whole run: wall time of the command, start to exit (imports, model load, tokenising, rank
  start-up and the ring's connection set-up included).
* Scaling: N-rank steady tokens/s over one process'. Ranks on one machine share its cores, so here
  it measures the overhead of splitting and of the collectives, and what running element-wise work
  in N processes instead of one gains; across Macs each rank brings its own cores or GPU.
* ``--threads-per-rank`` (Linux CPU): OpenBLAS threads of each rank (default: the cores divided by
  the ranks on one machine), so N ranks do not run N times the machine's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from throughput import prepare_data, resolve_model  # noqa: E402  (bench/ is this script's folder)

SCENARIOS = {
    "short": {"model": "builtin:smollm2-135m", "data": "race", "batch_size": 4, "iters": 12, "plw": 0.0},
}


def config(spec: dict, runs_dir: Path, path: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "model": spec["model"],
        "data": spec["data"],
        "runs_dir": str(runs_dir),
        "batch_size": spec["batch_size"],
        "iters": spec["iters"],
        "prompt_loss_weight": spec["plw"],
        "steps_per_report": spec["steps_per_report"],
        "steps_per_eval": 10**9,
        "val_batches": 1,
        "save_every": 10**9,
        "learning_rate": 1e-5,
        "num_layers": -1,
        "lora_parameters": {"rank": 8, "scale": 20.0, "dropout": 0.0},
        "max_seq_length": 2048,
        "seed": 0,
    }))
    return path


def train_command(cfg: Path, ranks: int, hostfile: str | None, threads: int | None) -> list[str]:
    train = [sys.executable, "-m", "engine.cli", "train", "--quiet", str(cfg)]
    if ranks == 1 and not hostfile:
        return train
    launch = [str(Path(sys.executable).parent / "mlx.launch")]
    launch += ["--hostfile", hostfile] if hostfile else ["-n", str(ranks), "--backend", "ring"]
    if threads:
        launch += ["--env", f"OPENBLAS_NUM_THREADS={threads}"]
    return launch + ["--", *train]


def measure(cfg: Path, runs_dir: Path, command: list[str]) -> dict:
    """Run one side; its whole-run time and the steady numbers from its metrics."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tic = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    whole = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    (metrics,) = runs_dir.glob("*/metrics.jsonl")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    reports = [r for r in rows if r["event"] == "train"]
    if len(reports) < 2:
        raise SystemExit("need at least two training reports: raise --iters or lower --steps-per-report")
    first, last = reports[0], reports[-1]
    if any(r["event"] == "run_finished" and r["status"] != "completed" for r in rows):
        raise SystemExit(f"{metrics}: the run did not complete")
    return {
        "world_size": next(r for r in rows if r["event"] == "run_started").get("world_size", 1),
        "tokens_per_second": (last["trained_tokens"] - first["trained_tokens"]) / (last["elapsed"] - first["elapsed"]),
        "rank_tokens_per_second": last.get("rank_tokens_per_second") or [],
        "final_loss": last["loss"],
        "whole_run_seconds": whole,
    }


def compare(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as scratch:
        scratch = Path(scratch)
        spec = dict(spec, data=prepare_data(spec["data"], spec["model"], 2048, scratch))
        sides = {}
        for name, ranks in (("one_process", 1), ("ranks", spec["ranks"])):
            runs = scratch / name
            cfg = config(spec, runs, scratch / f"{name}.yaml")
            threads = spec["threads_per_rank"] if ranks > 1 else None
            sides[name] = measure(cfg, runs, train_command(cfg, ranks, spec["hostfile"], threads))
    one, many = sides["one_process"], sides["ranks"]
    return {
        "spec": spec,
        **sides,
        "scaling": many["tokens_per_second"] / one["tokens_per_second"],
        "whole_run_ratio": many["whole_run_seconds"] / one["whole_run_seconds"],
    }


def table(result: dict) -> str:
    one, many, spec = result["one_process"], result["ranks"], result["spec"]
    rows = [
        ("", "1 process", f"{many['world_size']} ranks"),
        ("steady tokens/s", f"{one['tokens_per_second']:.0f}", f"{many['tokens_per_second']:.0f}"),
        ("per rank tokens/s", "", " · ".join(f"{v:.0f}" for v in many["rank_tokens_per_second"])),
        ("whole run (s)", f"{one['whole_run_seconds']:.1f}", f"{many['whole_run_seconds']:.1f}"),
        ("last training loss", f"{one['final_loss']:.4f}", f"{many['final_loss']:.4f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:>12}  {c:>16}" for a, b, c in rows]
    where = spec["hostfile"] or f"this machine ({os.cpu_count()} cores, {spec['threads_per_rank']} BLAS threads a rank)"
    lines.append(f"scaling {result['scaling']:.2f}x tokens/s, whole run {result['whole_run_ratio']:.2f}x "
                 f"({spec['model']}, global batch {spec['batch_size']}, {spec['iters']} steps, on {where})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS)
    parser.add_argument("--model", default="builtin:tiny-llama")
    parser.add_argument("--data", default="demo", help="demo, race, or a data folder")
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch, split over the ranks")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--plw", type=float, default=1.0)
    parser.add_argument("--steps-per-report", type=int, default=4)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--hostfile", help="an mlx.launch hostfile instead of N ranks on this machine")
    parser.add_argument("--threads-per-rank", type=int, help="default: this machine's cores / the ranks")
    parser.add_argument("--json", action="store_true")
    scenario = parser.parse_known_args(argv)[0].scenario
    if scenario:
        parser.set_defaults(**SCENARIOS[scenario])
    args = parser.parse_args(argv)
    from engine.levers.platform_check import maybe_reexec_with_openblas

    maybe_reexec_with_openblas()  # the trainers inherit the preload
    if args.hostfile:
        from engine.launch.hosts import read_hostfile

        args.ranks = len(read_hostfile(Path(args.hostfile)))
    spec = {
        "model": resolve_model(args.model), "data": args.data, "batch_size": args.batch_size, "iters": args.iters,
        "plw": args.plw, "steps_per_report": args.steps_per_report, "ranks": args.ranks,
        "hostfile": str(Path(args.hostfile).resolve()) if args.hostfile else None,
        "threads_per_rank": None if args.hostfile else args.threads_per_rank or max(1, (os.cpu_count() or 1) // args.ranks),
    }
    result = compare(spec)
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
