"""Dataset statistics as ``tuner inspect`` prints them: a text report, or the documented JSON."""

from __future__ import annotations

import math
import textwrap
from dataclasses import fields, is_dataclass

import numpy as np

from engine.data.stats import DatasetStats, RgStats, SplitStats

SCHEMA_VERSION = 1  # of stats_to_json's output; bump on any incompatible change
BLOCKS = " ▁▂▃▄▅▆▇█"


# --------------------------------------------------------------------------- JSON


def stats_to_json(stats: DatasetStats, rows: bool = False) -> dict:
    """The documented JSON form (README, "Inspecting a dataset"); NaN becomes null."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tokenizer": stats.tokenizer,
        "max_seq_length": stats.max_seq_length,
        "prompt_loss_weight": stats.prompt_loss_weight,
        "cached": stats.cached,
        "guidance": stats.guidance,
        "overlap": dict(stats.overlap),
        "splits": {name: _plain(split, rows) for name, split in stats.splits.items()},
    }


def _plain(value, rows: bool):
    """JSON-ready copy of a dataclass tree; per-example rows only when asked for."""
    if is_dataclass(value):
        return {
            f.name: _plain(getattr(value, f.name), rows)
            for f in fields(value)
            if rows or f.name != "rows"
        }
    if isinstance(value, dict):
        return {key: _plain(item, rows) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(item, rows) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------- text


def format_stats(stats: DatasetStats) -> str:
    """The report ``tuner inspect`` prints: one block per split, then overlap and PLW guidance."""
    head = f"tokenizer {stats.tokenizer}  ·  max_seq_length {stats.max_seq_length}  ·  PLW {stats.plw_text}"
    lines = [head + ("  ·  from cache" if stats.cached else ""), ""]
    for split in stats.splits.values():
        lines += _format_split(split, stats.max_seq_length) + [""]
    overlap = "  ·  ".join(f"{pair} {count:,}" for pair, count in stats.overlap.items())
    lines += [f"shared with train (same token ids): {overlap}", "", textwrap.fill(stats.guidance, 96)]
    return "\n".join(lines)


def _format_split(s: SplitStats, max_len: int) -> list[str]:
    kinds = ", ".join(f"{fmt} {n:,}" for fmt, n in s.formats.items() if n) or "no readable rows"
    lines = [f"{s.name}: {s.count:,} examples ({kinds})"]
    if s.count:
        lines += _length_table(s)
        lines += ["  total tokens:"] + _histogram(s.total.bin_counts, s.total.bin_edges, marker=max_len)
        lines += _format_rg(s.rg)
        lines.append(
            f"  truncated at {max_len:,}: {s.truncated:,} examples; {s.completion_cut:,} lose completion "
            f"tokens; {s.zero_completion:,} keep none (training drops them)"
        )
        lines.append(f"  exact duplicates: {s.duplicates:,}")
    if s.parse_errors:
        lines.append(f"  rows that could not be read: {len(s.parse_errors):,}")
        lines += [f"    {error}" for error in s.parse_errors[:5]]
        if len(s.parse_errors) > 5:
            lines.append(f"    ... and {len(s.parse_errors) - 5:,} more (--json lists them all)")
    if s.sources:
        width = max(len(name) for name in s.sources)
        lines.append(f"  {'source':<{width}}  examples  prompt p50  completion p50  Rg median  truncated")
        for name, part in s.sources.items():
            lines.append(
                f"  {name:<{width}}  {part.count:>8,}  {_num(part.prompt.p50):>10}  {_num(part.completion.p50):>14}"
                f"  {_num(part.rg.median, 3):>9}  {part.truncated:>9,}"
            )
    return lines


def _length_table(s: SplitStats) -> list[str]:
    names = ("min", "p10", "p25", "p50", "p75", "p90", "p99", "max", "mean")
    lines = ["  tokens      " + "".join(f"{name:>8}" for name in names)]
    for label, d in (("prompt", s.prompt), ("completion", s.completion), ("total", s.total)):
        lines.append(f"  {label:<12}" + "".join(f"{_num(getattr(d, name)):>8}" for name in names))
    return lines


def _format_rg(rg: RgStats) -> list[str]:
    if rg.count == 0:
        return [f"  Rg: no example has prompt tokens ({rg.no_prompt:,} plain text)"]
    without = f"; {rg.no_prompt:,} plain-text examples have no prompt, so no Rg" if rg.no_prompt else ""
    lines = [
        f"  Rg = completion / prompt tokens, over {rg.count:,} examples{without}:",
        f"    mean {_num(rg.arithmetic_mean, 3)}  ·  geometric mean {_num(rg.geometric_mean, 3)}  ·  median "
        f"{_num(rg.median, 3)}  ·  below 1: {rg.share_below_1:.1%}  ·  ratio of means {_num(rg.ratio_of_means, 3)}",
    ]
    if rg.bin_counts:
        edges = tuple(10**e for e in rg.log10_bin_edges)
        lines += ["  Rg (log scale):"] + _histogram(rg.bin_counts, edges)
    return lines


def _histogram(counts, edges, height: int = 3, marker: float | None = None) -> list[str]:
    """Bars ``height`` lines tall in eighth blocks, an axis with the range, and the marker's place."""
    top = max(counts) or 1
    levels = [max(1, round(c / top * height * 8)) if c else 0 for c in counts]
    bars = [
        "    " + "".join(BLOCKS[min(8, max(0, level - row * 8))] for level in levels)
        for row in reversed(range(height))
    ]
    low, high = _num(edges[0], 3), _num(edges[-1], 3)
    axis = f"    {low}{' ' * max(1, len(counts) - len(low) - len(high))}{high}"
    if marker is None:
        return bars + [axis]
    if marker >= edges[-1]:
        return bars + [axis + f"   (max_seq_length {marker:,}: longer than all)"]
    if marker < edges[0]:
        return bars + [axis + f"   (max_seq_length {marker:,}: shorter than all)"]
    column = int(np.searchsorted(edges, marker, side="right")) - 1
    return bars + [axis, "    " + " " * column + f"^ max_seq_length {marker:,}"]


def _num(value: float, digits: int = 1) -> str:
    """Whole numbers as integers, others with ``digits`` decimals (significant digits below 1)."""
    if math.isnan(value):
        return "-"
    if abs(value) < 1:
        return f"{value:.{digits}g}"
    rounded = round(value, digits)
    return f"{int(rounded):,}" if rounded.is_integer() else f"{rounded:,.{digits}f}"
