"""One dataset split at a glance: counts and problems, token length histograms, Rg with its figures,
and the validation examples the latest evaluated run gets most wrong.

It draws statistics the engine (``engine.data.stats``) has already computed; it computes nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import Static

from .histogram import Histogram
from .worst_examples import WorstExamples

if TYPE_CHECKING:
    from engine.data.stats import DatasetStats, Distribution, SplitStats

PARSE_ERRORS_SHOWN = 3
PERCENTILES = ("mean", "min", "p10", "p25", "p50", "p75", "p90", "p99", "max")
NO_VALUE = "—"
LENGTHS = ("prompt", "completion", "total")


def number(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else NO_VALUE


def _percent(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else NO_VALUE


def rg_text(value: float) -> str:
    """Rg to three significant digits; an example without prompt tokens has none."""
    return f"{value:.3g}" if math.isfinite(value) else NO_VALUE


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({part / whole:.1%})" if whole else f"{part:,}"


def length_title(name: str, dist: Distribution) -> str:
    return f"{name} p50 {number(dist.p50)} · p90 {number(dist.p90)} · max {number(dist.max)}"


def summary_text(stats: DatasetStats, split: SplitStats) -> str:
    """Counts, formats, parse errors, truncation, duplicates and overlap, then the length percentiles."""
    formats = " · ".join(f"{name} {count:,}" for name, count in split.formats.items() if count) or "nothing readable"
    lines = [f"{split.name}: {split.count:,} examples · {formats}"]
    if len(split.sources) > 1:
        lines.append("sources: " + " · ".join(f"{name} {part.count:,}" for name, part in split.sources.items()))
    errors = split.parse_errors
    if errors:
        more = f" (first {PARSE_ERRORS_SHOWN})" if len(errors) > PARSE_ERRORS_SHOWN else ""
        lines.append(f"{len(errors):,} rows could not be read{more}:")
        lines.extend(f"  {error}" for error in errors[:PARSE_ERRORS_SHOWN])
    lines.append(
        f"at max_seq_length {stats.max_seq_length:,}: {_share(split.truncated, split.count)} cut · "
        f"{_share(split.completion_cut, split.count)} lose completion tokens · "
        f"{_share(split.zero_completion, split.count)} keep no completion"
    )
    overlap = " · ".join(f"{pair} overlap {count:,}" for pair, count in stats.overlap.items())
    lines.append(f"duplicates within {split.name}: {split.duplicates:,}" + (f" · {overlap}" if overlap else ""))
    lines.append("")
    lines.append(f"{'tokens':<10}" + "".join(f"{name:>7}" for name in PERCENTILES))
    for name, dist in (("prompt", split.prompt), ("completion", split.completion), ("total", split.total)):
        values = [number(dist.mean, 1)] + [number(getattr(dist, key)) for key in PERCENTILES[1:]]
        lines.append(f"{name:<10}" + "".join(f"{value:>7}" for value in values))
    return "\n".join(lines)


def rg_notes(stats: DatasetStats, split: SplitStats) -> str:
    """The Rg figures printed beside its histogram, and the engine's PLW reading from this split's Rg."""
    rg = split.rg
    lines = [
        f"over {rg.count:,} examples with a prompt",
        f"arithmetic mean  {rg_text(rg.arithmetic_mean)}",
        f"geometric mean   {rg_text(rg.geometric_mean)}",
        f"median           {rg_text(rg.median)}",
        f"ratio of means   {rg_text(rg.ratio_of_means)}",
        f"share Rg < 1     {_percent(rg.share_below_1)}",
        f"without prompt   {rg.no_prompt:,}",
    ]
    lines += ["", f"PLW reading for {split.name}: {stats.split_guidance(split.name)}"]
    return "\n".join(lines)


class SplitOverview(VerticalScroll):
    """The overview of one split, scrolled as one page; :meth:`show_split` redraws all of it but
    the worst validation examples, which the latest evaluation under ``runs_dir`` decides."""

    def __init__(self, runs_dir: Path | None = None) -> None:
        super().__init__()
        self.runs_dir = runs_dir

    def compose(self) -> ComposeResult:
        yield Static("", id="dataset-summary")
        with Grid(id="dataset-lengths"):
            for name in LENGTHS:
                yield Histogram(id=f"dataset-{name}")
        with Horizontal(id="dataset-rg-row"):
            yield Histogram(id="dataset-rg")
            yield Static("", id="dataset-rg-notes")
        yield WorstExamples(self.runs_dir, id="dataset-worst")

    def show_split(self, stats: DatasetStats, split: SplitStats) -> None:
        self.query_one("#dataset-summary", Static).update(summary_text(stats, split))
        for name in LENGTHS:
            dist = getattr(split, name)
            self.query_one(f"#dataset-{name}", Histogram).show(
                dist.bin_edges, dist.bin_counts, length_title(name, dist), marker=stats.max_seq_length
            )
        self.query_one("#dataset-rg", Histogram).show(
            split.rg.log10_bin_edges, split.rg.bin_counts, "Rg = completion / prompt tokens (log scale)",
            marker=1.0, log_x=True,
        )
        self.query_one("#dataset-rg-notes", Static).update(rg_notes(stats, split))
