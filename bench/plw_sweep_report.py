"""The PLW experiment's numbers from a sweep folder: answer accuracy with confidence intervals,
convergence speed, and the curves (docs/plw-experiment.md).

    python bench/plw_sweep_report.py runs/plw-evidence-sweep-... [--out docs/plw-experiment]

Reads ``sweep.json`` and every point's ``metrics.jsonl``. Per prompt-loss weight it reports:

- **test answer accuracy** per seed, with a Wilson 95% interval over that seed's test answers, and
  the mean over seeds with their spread. The seeds share the same test questions, so pooling them
  into one proportion would overstate how sure we are; each seed's interval is honest on its own.
- **the difference to PLW 1**, seed by seed (same seed: same LoRA start and batch order), with
  Newcombe's interval for a difference of two proportions.
- **convergence**: the first validation step at which the completion loss is at or below each
  target, and the first reported training step at which the smoothed training completion loss is.
  A run that never gets there counts as not reached.
- **the validation answer accuracy, completion loss and prompt loss at each evaluation**, the mean
  over each PLW's seeds.

It writes SVG curves (one line per PLW, the mean over its seeds) with the plot code of
``bench/plw_report.py``, and prints the markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.plw_report import svg_line_plot  # noqa: E402
from engine.events import EvalReport, TrainReport  # noqa: E402
from engine.runs.metrics import read_events  # noqa: E402

Z95 = 1.959964
TARGETS = (0.5, 0.2, 0.1)  # completion-loss levels for "steps to reach"
EMA = 0.3  # weight of the newest training report in the smoothed curve


@dataclass
class PointRun:
    """One sweep point's run: its PLW and seed, validation and training curves, and test result."""

    plw: float
    seed: int
    valid: list[EvalReport] = field(default_factory=list)
    train: list[TrainReport] = field(default_factory=list)
    test: EvalReport | None = None

    @property
    def test_hits(self) -> tuple[int, int]:
        """(right answers, answers) on the test split: answer tokens, which for a one-token answer
        are the examples."""
        n = self.test.answer_tokens
        return round(self.test.answer_accuracy * n), n


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's 95% score interval for k successes in n trials."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


def newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """p1 - p2 and Newcombe's hybrid score 95% interval (from the two Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1), wilson(k2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def load_sweep(folder: Path) -> list[PointRun]:
    """Every point of the sweep that has a run folder, in the manifest's order."""
    manifest = json.loads((folder / "sweep.json").read_text())
    runs = []
    for point in manifest["points"]:
        if not point.get("run_dir"):
            continue
        values = point["values"]
        run = PointRun(plw=float(values["prompt_loss_weight"]), seed=int(values.get("seed", 0)))
        for event in read_events(folder / point["run_dir"]):
            if isinstance(event, EvalReport):
                if event.split == "test":
                    run.test = event
                elif event.split == "valid":
                    run.valid.append(event)
            elif isinstance(event, TrainReport):
                run.train.append(event)
        runs.append(run)
    return runs


def by_plw(runs: list[PointRun]) -> dict[float, list[PointRun]]:
    groups: dict[float, list[PointRun]] = {}
    for run in sorted(runs, key=lambda r: (r.plw, r.seed)):
        groups.setdefault(run.plw, []).append(run)
    return groups


def smoothed(values: list[float]) -> list[float]:
    out, level = [], math.nan
    for v in values:
        level = v if not math.isfinite(level) else EMA * v + (1 - EMA) * level
        out.append(level)
    return out


def first_step(points: list[tuple[int, float]], target: float) -> int | None:
    return next((step for step, value in points if math.isfinite(value) and value <= target), None)


def valid_curve(run: PointRun, key: str) -> list[tuple[int, float]]:
    return [(e.step, getattr(e, key)) for e in run.valid]


def train_curve(run: PointRun) -> list[tuple[int, float]]:
    return list(zip([t.step for t in run.train], smoothed([t.completion_loss for t in run.train])))


def accuracy_table(groups: dict[float, list[PointRun]]) -> str:
    lines = ["| PLW | seed | test answers right | accuracy | 95% interval |",
             "|---|---|---|---|---|"]
    for plw, runs in groups.items():
        accs = []
        for run in runs:
            if run.test is None:
                lines.append(f"| {plw:g} | {run.seed} | (not finished) | | |")
                continue
            k, n = run.test_hits
            lo, hi = wilson(k, n)
            accs.append(k / n)
            lines.append(f"| {plw:g} | {run.seed} | {k}/{n} | {k / n:.1%} | {lo:.1%} to {hi:.1%} |")
        if len(accs) > 1:
            lines.append(f"| {plw:g} | mean | | **{statistics.mean(accs):.1%}** | seeds spread "
                         f"{min(accs):.1%} to {max(accs):.1%} (sd {statistics.stdev(accs):.1%}) |")
    return "\n".join(lines)


def difference_table(groups: dict[float, list[PointRun]], reference: float = 1.0) -> str:
    """Each PLW's test accuracy minus the reference PLW's, for the same seed."""
    ref = {r.seed: r for r in groups.get(reference, []) if r.test is not None}
    lines = [f"| PLW | seed | accuracy minus PLW {reference:g}'s | 95% interval |", "|---|---|---|---|"]
    for plw, runs in groups.items():
        if plw == reference:
            continue
        for run in runs:
            other = ref.get(run.seed)
            if run.test is None or other is None:
                continue
            d, lo, hi = newcombe(*run.test_hits, *other.test_hits)
            lines.append(f"| {plw:g} | {run.seed} | {d:+.1%} | {lo:+.1%} to {hi:+.1%} |")
    return "\n".join(lines)


def convergence_table(groups: dict[float, list[PointRun]], targets=TARGETS) -> str:
    """Steps to each completion-loss target: validation (at its evaluations) and smoothed train."""
    head = " | ".join(f"valid ≤ {t:g}" for t in targets) + " | " + " | ".join(f"train ≤ {t:g}" for t in targets)
    lines = [f"| PLW | seed | {head} |", "|---|---|" + "---|" * (2 * len(targets))]
    for plw, runs in groups.items():
        for run in runs:
            cells = [first_step(valid_curve(run, "completion_loss"), t) for t in targets]
            cells += [first_step(train_curve(run), t) for t in targets]
            missing = "not reached" if run.test is not None else "not yet"  # a run still training may get there
            shown = " | ".join(missing if c is None else str(c) for c in cells)
            lines.append(f"| {plw:g} | {run.seed} | {shown} |")
    return "\n".join(lines)


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[float, float]]:
    """The mean over runs at each step all of them reached."""
    steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
    tables = [dict(c) for c in curves]
    return [(float(s), statistics.mean(t[s] for t in tables)) for s in steps]


def by_step_table(groups: dict[float, list[PointRun]], key: str, percent: bool = False) -> str:
    """A validation measure at each evaluation step (rows) for each PLW (columns): the mean over
    its seeds, at the steps every one of them reached."""
    curves = {plw: dict(mean_curve([valid_curve(r, key) for r in runs])) for plw, runs in groups.items()}
    steps = sorted(set().union(*curves.values()))
    lines = ["| step | " + " | ".join(f"PLW {plw:g}" for plw in curves) + " |", "|---|" + "---|" * len(curves)]
    for step in steps:
        cells = [curve.get(step) for curve in curves.values()]
        shown = ["" if c is None else f"{c:.1%}" if percent else f"{c:.3f}" for c in cells]
        lines.append(f"| {step:g} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


PLOTS = [
    ("valid-completion-loss", "Validation completion loss (mean over seeds)", "nats per completion token",
     lambda run: valid_curve(run, "completion_loss")),
    ("valid-answer-accuracy", "Validation answer accuracy (mean over seeds)", "answer accuracy",
     lambda run: valid_curve(run, "answer_accuracy")),
    ("valid-prompt-loss", "Validation prompt loss (mean over seeds)", "nats per prompt token",
     lambda run: valid_curve(run, "prompt_loss")),
    ("train-completion-loss", "Training completion loss, smoothed (mean over seeds)", "nats per completion token",
     train_curve),
]


def write_plots(groups: dict[float, list[PointRun]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, title, ylabel, curve in PLOTS:
        series = [(f"PLW {plw:g}", mean_curve([curve(r) for r in runs])) for plw, runs in groups.items()]
        path = out / f"{stem}.svg"
        path.write_text(svg_line_plot(series, title, "step", ylabel))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--out", type=Path, help="folder for the SVG curves")
    args = parser.parse_args(argv)
    groups = by_plw(load_sweep(args.sweep))
    print("## Test answer accuracy\n\n" + accuracy_table(groups))
    print("\n## Against PLW 1, seed by seed\n\n" + difference_table(groups))
    print("\n## Steps to a completion loss\n\n" + convergence_table(groups))
    print("\n## Validation answer accuracy by step (mean over seeds)\n\n" + by_step_table(groups, "answer_accuracy", True))
    print("\n## Validation completion loss by step (mean over seeds)\n\n" + by_step_table(groups, "completion_loss"))
    print("\n## Validation prompt loss by step (mean over seeds)\n\n" + by_step_table(groups, "prompt_loss"))
    if args.out:
        for path in write_plots(groups, args.out):
            print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
