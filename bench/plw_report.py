"""Curves and a table for a prompt-loss-weight sweep: one run folder per PLW.

    python bench/plw_report.py runs/plw-sweep/plw-1 runs/plw-sweep/plw-0.1 ... [--out docs]
    python bench/plw_report.py RUNS... --letters 24     # also score the answer letter itself

Reads each run's ``metrics.jsonl`` (through ``engine.runs.read_events``, so a torn last line of a
run still being written is skipped) and writes three SVG line plots against step, one line per
run: validation completion loss, validation prompt loss and validation completion accuracy. It
prints a markdown table of final and best numbers to stdout.

The SVG is written by hand, not with matplotlib: the plots are simple, the repository has no
plotting dependency, and a hand-written file stays small and diffable in ``docs/``.

Completion accuracy is greedy next-token accuracy over *all* completion tokens. With a chat
template the completion of a one-letter answer is the letter plus the end-of-turn token(s), which
a model learns almost at once, so the table also gives what the latest ``eval_examples.json``
says about the letter alone (see :func:`letter_accuracy`). That file cannot always tell a wrong
letter from a wrong end token, so ``--letters N`` loads each run's final adapters (and the base
model, for reference) and scores the letter position of the first N validation examples
directly (see :func:`letter_scores`); it costs N forward passes per run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.events import EvalReport, RunFinished, RunStarted  # noqa: E402
from engine.runs.metrics import read_events  # noqa: E402

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
DASHES = ["", "7 4", "2 3", "10 3 2 3"]  # runs that score the same still show as separate lines
WIDTH, HEIGHT = 640, 400
MARGIN = {"left": 70, "right": 150, "top": 40, "bottom": 50}

# (file stem, title, y label, EvalReport field)
PLOTS = [
    ("completion-loss", "Validation completion loss", "completion loss (nats/token)", "completion_loss"),
    ("prompt-loss", "Validation prompt loss", "prompt loss (nats/token)", "prompt_loss"),
    ("completion-accuracy", "Validation completion-token accuracy", "accuracy", "completion_accuracy"),
]


@dataclass
class Run:
    """What the report needs from one run folder."""

    path: Path
    plw: float | None = None
    evals: list[EvalReport] = field(default_factory=list)  # validation only, in step order
    elapsed: float | None = None
    status: str = "unfinished"

    @property
    def label(self) -> str:
        return f"PLW {self.plw:g}" if self.plw is not None else self.path.name


def load_run(path: Path) -> Run:
    """The validation evaluations, PLW and run time of one run folder."""
    run = Run(Path(path))
    for event in read_events(run.path):
        if isinstance(event, RunStarted):
            run.plw = event.prompt_loss_weight
        elif isinstance(event, EvalReport) and event.split == "valid":
            run.evals.append(event)
        elif isinstance(event, RunFinished):
            run.elapsed, run.status = event.elapsed, event.status
    return run


def letter_accuracy(run_dir: Path) -> dict | None:
    """Bounds on answer-letter accuracy at the latest validation, from ``eval_examples.json``.

    That file keeps, per example, the share of its completion tokens predicted right. With k
    completion tokens (letter, end-of-turn, ...), an example scoring 1 surely has the letter
    right, and one scoring below (k-1)/k surely has it wrong; one scoring exactly (k-1)/k missed
    one token, which may be the letter or an end token. So ``low`` counts the first kind and
    ``high`` adds the third. They are equal whenever no example misses exactly one token.
    """
    path = Path(run_dir) / "eval_examples.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    rows = [r for r in data["examples"] if r.get("completion_tokens") and r.get("completion_accuracy") is not None]
    if not rows:
        return None
    sure = maybe = 0
    for row in rows:
        k, acc = row["completion_tokens"], row["completion_accuracy"]
        if acc >= 1 - 1e-9:
            sure += 1
        elif abs(acc - (k - 1) / k) < 1e-9:
            maybe += 1
    n = len(rows)
    return {"step": data.get("step"), "examples": n, "low": sure / n, "high": (sure + maybe) / n}


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering ``lo``..``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, value = [], first
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _fmt_tick(value: float) -> str:
    return f"{value:.6g}"


def svg_line_plot(
    series: list[tuple[str, list[tuple[float, float]]]],
    title: str,
    xlabel: str,
    ylabel: str,
    refs: list[tuple[float, str]] = (),
) -> str:
    """An SVG document: one ``<polyline>`` per series (non-finite points left out), axes, legend.

    A series with no finite point still gets its legend entry but no polyline. ``refs`` are
    labelled horizontal reference lines (a chance level, say), drawn grey and dotted.
    """
    points = [(x, y) for _, pts in series for x, y in pts if math.isfinite(x) and math.isfinite(y)]
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] + [y for y, _ in refs] or [0.0, 1.0]
    xticks, yticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1 = min(xticks[0], min(xs)), max(xticks[-1], max(xs))
    y0, y1 = min(yticks[0], min(ys)), max(yticks[-1], max(ys))
    left, top = MARGIN["left"], MARGIN["top"]
    right, bottom = WIDTH - MARGIN["right"], HEIGHT - MARGIN["bottom"]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - y0) / ((y1 - y0) or 1.0) * (bottom - top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{(left + right) / 2:.1f}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
    ]
    for t in xticks:
        out.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{bottom}" stroke="#eee"/>')
        out.append(f'<text x="{sx(t):.1f}" y="{bottom + 16}" text-anchor="middle">{_fmt_tick(t)}</text>')
    for t in yticks:
        out.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{right}" y2="{sy(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt_tick(t)}</text>')
    out.append(f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>')
    out.append(f'<text x="{(left + right) / 2:.1f}" y="{HEIGHT - 12}" text-anchor="middle">{escape(xlabel)}</text>')
    out.append(
        f'<text x="16" y="{(top + bottom) / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + bottom) / 2:.1f})">{escape(ylabel)}</text>'
    )
    for y, label in refs:
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{right}" y2="{sy(y):.1f}" stroke="#888" stroke-dasharray="1 3"/>')
        out.append(f'<text x="{right - 4}" y="{sy(y) - 4:.1f}" text-anchor="end" fill="#666">{escape(label)}</text>')
    for i, (label, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        dash = DASHES[i % len(DASHES)]
        style = f'stroke="{colour}" stroke-width="2"' + (f' stroke-dasharray="{dash}"' if dash else "")
        finite = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        if finite:
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in finite)
            out.append(f'<polyline fill="none" {style} points="{coords}"><title>{escape(label)}</title></polyline>')
            out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in finite)
        ly = top + 10 + i * 20
        out.append(f'<line x1="{right + 15}" y1="{ly}" x2="{right + 40}" y2="{ly}" {style}/>')
        out.append(f'<text x="{right + 46}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def chance_refs(runs: list[Run], choices: int) -> dict[str, list[tuple[float, str]]]:
    """Reference lines for a one-token answer among ``choices`` letters, per plot key.

    When every evaluated example has the same k completion tokens (the letter and k-1 end
    tokens), a model that gets the end tokens right and guesses the letter uniformly scores a
    completion loss of ln(choices)/k and an expected accuracy of (k - 1 + 1/choices)/k; one that
    never gets the letter right scores (k-1)/k. Nothing is drawn when k differs between
    evaluations.
    """
    ks = {e.completion_tokens / e.examples for run in runs for e in run.evals if e.examples}
    if len(ks) != 1 or not float(next(iter(ks))).is_integer():
        return {}
    k = int(next(iter(ks)))
    return {
        "completion_loss": [(math.log(choices) / k, f"uniform guess among {choices} letters")],
        "completion_accuracy": [
            ((k - 1) / k, "letter always wrong"),
            ((k - 1 + 1 / choices) / k, f"letter right 1 in {choices}"),
        ],
    }


def write_plots(runs: list[Run], out_dir: Path, prefix: str = "plw", choices: int = 0) -> list[Path]:
    """One SVG per entry of :data:`PLOTS` in ``out_dir``; returns their paths.

    With ``choices`` (the number of options of a multiple-choice task), the plots also get the
    reference lines of :func:`chance_refs`.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    refs = chance_refs(runs, choices) if choices else {}
    paths = []
    for stem, title, ylabel, key in PLOTS:
        series = [(run.label, [(float(e.step), float(getattr(e, key))) for e in run.evals]) for run in runs]
        path = out_dir / f"{prefix}-{stem}.svg"
        path.write_text(svg_line_plot(series, title, "step", ylabel, refs.get(key, [])), encoding="utf-8")
        paths.append(path)
    return paths


def _best(evals: list[EvalReport], key: str, highest: bool) -> EvalReport | None:
    finite = [e for e in evals if math.isfinite(getattr(e, key))]
    if not finite:
        return None
    return (max if highest else min)(finite, key=lambda e: getattr(e, key))


def markdown_table(runs: list[Run]) -> str:
    """Final and best validation numbers per run, and the letter-accuracy bounds at the end."""
    head = (
        "| run | steps | time (s) | final completion loss | best completion loss (step) | final prompt loss "
        "| final completion acc | best completion acc (step) | answer letter acc, final |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for run in runs:
        if not run.evals:
            lines.append(f"| {run.label} | no evaluation | | | | | | | |")
            continue
        last = run.evals[-1]
        best_loss = _best(run.evals, "completion_loss", highest=False)
        best_acc = _best(run.evals, "completion_accuracy", highest=True)
        letters = letter_accuracy(run.path)
        if letters is None:
            letter_text = "—"
        elif letters["low"] == letters["high"]:
            letter_text = f"{letters['low']:.1%} of {letters['examples']}"
        else:
            letter_text = f"{letters['low']:.1%}–{letters['high']:.1%} of {letters['examples']}"
        elapsed = f"{run.elapsed:.0f}" if run.elapsed is not None else "—"
        lines.append(
            f"| {run.label} | {last.step} | {elapsed} | {last.completion_loss:.3f} "
            f"| {best_loss.completion_loss:.3f} ({best_loss.step}) | {last.prompt_loss:.3f} "
            f"| {last.completion_accuracy:.1%} | {best_acc.completion_accuracy:.1%} ({best_acc.step}) "
            f"| {letter_text} |"
        )
    return head + "\n".join(lines) + "\n"


def letter_scores(run_dirs: list[Path], n: int) -> str:
    """A markdown table scoring the answer letter alone, for the base model and each run's adapters.

    For each of the first ``n`` validation examples, one forward pass over the prompt (up to the
    first completion token) gives the next-token distribution at the letter. Reported: greedy
    accuracy over the whole vocabulary (what completion accuracy counts for this token),
    accuracy of the best of the four letter tokens (how multiple-choice benchmarks are usually
    scored), the mean cross entropy of the right letter (ln 4 = 1.386 is a uniform guess between
    four letters), and the share of the most often chosen letter (1.0: always the same letter).
    """
    import mlx.core as mx

    from engine.config import load_config
    from engine.data.sources import load_splits
    from engine.roles import COMPLETION
    from engine.model.load import load_base, load_trained_weights, setup_trainable
    from engine.data.tokenize import encode_records, hf_tokenizer

    lines = [
        "| model | letter acc (greedy, whole vocabulary) | letter acc (best of A-D) "
        "| letter cross entropy | most chosen letter (share) |",
        "|---|---|---|---|---|",
    ]
    first = load_config(Path(run_dirs[0]) / "config.yaml")
    targets = [("base model (no adapters)", first, None)]
    for run_dir in run_dirs:
        run = load_run(run_dir)
        targets.append((f"{run.label}, step {run.evals[-1].step if run.evals else '?'}",
                        load_config(Path(run_dir) / "config.yaml"), Path(run_dir) / "adapters" / "adapters.safetensors"))
    for label, stage, adapters in targets:
        loaded = load_base(stage)
        model = loaded.model
        if adapters is not None:
            setup_trainable(model, stage.config)
            load_trained_weights(model, adapters)
        model.eval()
        tok = hf_tokenizer(loaded.tokenizer)
        letter_ids = [tok.encode(letter, add_special_tokens=False) for letter in "ABCD"]
        assert all(len(ids) == 1 for ids in letter_ids), letter_ids
        letter_ids = [ids[0] for ids in letter_ids]
        records = load_splits(stage).valid[:n]
        greedy = best4 = 0
        ce_total = 0.0
        chosen = {}
        for ids, roles in encode_records(loaded.tokenizer, records):
            at = int(next(i for i, r in enumerate(roles) if r == COMPLETION))
            logits = model(mx.array(ids[None, :at]))[0, -1].astype(mx.float32)
            logp = logits - mx.logsumexp(logits)
            answer = int(ids[at])
            greedy += int(mx.argmax(logits).item() == answer)
            pick = letter_ids[int(mx.argmax(logits[mx.array(letter_ids)]).item())]
            best4 += int(pick == answer)
            chosen[pick] = chosen.get(pick, 0) + 1
            ce_total += -logp[answer].item()
        count = len(records)
        top_id, top_n = max(chosen.items(), key=lambda kv: kv[1])
        lines.append(
            f"| {label} | {greedy / count:.1%} ({greedy}/{count}) | {best4 / count:.1%} ({best4}/{count}) "
            f"| {ce_total / count:.3f} | {'ABCD'[letter_ids.index(top_id)]} ({top_n / count:.0%}) |"
        )
        print(f"scored {label}", file=sys.stderr)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the SVGs go (default docs/)")
    parser.add_argument("--prefix", default="plw", help="file name prefix of the SVGs (default plw)")
    parser.add_argument("--choices", type=int, default=0, metavar="N",
                        help="the data is N-option multiple choice with a one-token answer: draw chance levels")
    parser.add_argument("--letters", type=int, default=0, metavar="N",
                        help="also score the answer letter of the first N validation examples (loads the models)")
    args = parser.parse_args(argv)
    if args.letters > 0:
        from engine.levers.platform_check import maybe_reexec_with_openblas

        maybe_reexec_with_openblas()  # before MLX loads (the reference BLAS is ~30x slower); nothing printed yet
    missing = [str(p) for p in args.runs if not (p / "metrics.jsonl").exists()]
    if missing:
        print(f"no metrics.jsonl in: {', '.join(missing)}", file=sys.stderr)
        return 2
    # Highest PLW first, so the legend reads from "no masking" down to "masked".
    runs = sorted((load_run(p) for p in args.runs), key=lambda r: -(r.plw if r.plw is not None else -1))
    for path in write_plots(runs, args.out, args.prefix, args.choices):
        print(f"wrote {path}", file=sys.stderr)
    print(markdown_table(runs), end="")
    if args.letters > 0:
        print()
        print(letter_scores([run.path for run in runs], args.letters), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
