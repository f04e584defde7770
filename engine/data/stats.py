"""Dataset statistics: what ``tuner inspect`` prints and the app's dataset screen shows.

Everything is counted on the token ids and roles that training itself uses (``encode_records``:
the model's chat template, every assistant turn completion, everything else prompt), so a number
here is a number the trainer will see. Per split, and per source when a split mixes several:

- counts, record formats, and rows that could not be read (reading is lenient here, so one bad
  line does not hide the statistics of the rest);
- prompt, completion and total token lengths: percentiles and histogram bins;
- the generation ratio Rg = completion tokens / prompt tokens of each example, which the
  published experiments (Huerta-Enochian & Ko, 2024) tie to how much the prompt-loss weight
  (PLW) matters;
- truncation at ``max_seq_length``, exact duplicates, and examples shared between splits.

This module holds the types and the statistics; tokenising is
:mod:`engine.data.stats_measure`'s (cached by :mod:`engine.data.stats_cache`), the printed and
JSON forms are :mod:`engine.data.stats_report`'s, one example's tokens :mod:`engine.data.token_view`'s.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from engine.data.stats_cache import cache_path, read_cache, write_cache
from engine.data.stats_measure import measure, source_of
from engine.errors import first_line
from engine.model.resolve import resolve_model

FORMATS = ("chat", "completion", "alpaca", "text")
BINS = 30


@dataclass(frozen=True)
class Distribution:
    """Percentiles and histogram of one per-example quantity (NaN and no bins when empty)."""

    count: int
    mean: float
    min: float
    p10: float
    p25: float
    p50: float
    p75: float
    p90: float
    p99: float
    max: float
    bin_edges: tuple[float, ...]  # len(bin_counts) + 1 edges
    bin_counts: tuple[int, ...]


@dataclass(frozen=True)
class ExampleRow:
    """One example, without its text: ``load_record(stage, split, index)`` reads that back."""

    index: int  # position in the split's records
    origin: str  # file:line or dataset[split]#row
    fmt: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int  # before truncation
    rg: float  # completion / prompt tokens; NaN without prompt tokens
    truncated: bool  # longer than max_seq_length
    completion_cut: bool  # truncation removed completion tokens
    zero_completion: bool  # no completion token left to learn: training drops it


@dataclass(frozen=True)
class RgStats:
    """The generation ratio over the examples that have prompt tokens."""

    count: int
    no_prompt: int  # plain-text examples: all completion, no Rg
    arithmetic_mean: float  # of per-example ratios, as the article computes it
    geometric_mean: float  # less pulled by a few huge ratios
    median: float
    share_below_1: float
    ratio_of_means: float  # mean completion / mean prompt tokens: the paper's form
    log10_bin_edges: tuple[float, ...]  # histogram of log10 Rg (Rg = 0 is not binned)
    bin_counts: tuple[int, ...]


@dataclass(frozen=True)
class SplitStats:
    name: str
    count: int
    formats: dict[str, int]
    parse_errors: tuple[str, ...]  # one line per row that could not be read or rendered
    prompt: Distribution
    completion: Distribution
    total: Distribution
    rg: RgStats
    truncated: int
    completion_cut: int
    zero_completion: int
    duplicates: int  # examples whose token ids repeat an earlier example of the split
    rows: tuple[ExampleRow, ...]  # empty in per-source stats (the split's rows have the origin)
    sources: dict[str, "SplitStats"]  # only when the split has more than one source


@dataclass(frozen=True)
class DatasetStats:
    splits: dict[str, SplitStats]
    overlap: dict[str, int]  # "train/valid": valid examples whose token ids also occur in train
    max_seq_length: int
    prompt_loss_weight: float
    guidance: str
    tokenizer: str
    cached: bool
    swept_plw: tuple[float, ...] = ()  # a sweep's PLW values; its first point's is prompt_loss_weight

    @property
    def plw_text(self) -> str:
        """The PLW as a header shows it: one value, or the values a sweep tries."""
        return ", ".join(f"{v:g}" for v in self.swept_plw) if self.swept_plw else f"{self.prompt_loss_weight:g}"

    def split_guidance(self, name: str) -> str:
        """The PLW reading from split ``name``'s own Rg (``guidance`` is train's, the split that
        training weighs)."""
        return plw_guidance(self.splits[name].rg, self.prompt_loss_weight, self.swept_plw)

    def for_sweep(self, plw_values: tuple) -> DatasetStats:
        """The same statistics for a sweep whose points try ``plw_values`` (the data is the same
        for every point): the reading names them all, not the first point's alone."""
        if not plw_values:
            return self
        swept = tuple(float(v) for v in plw_values)
        return replace(self, swept_plw=swept, guidance=plw_guidance(self.splits["train"].rg, self.prompt_loss_weight, swept))


@dataclass(frozen=True)
class TokenCell:
    """One token of the example browser."""

    text: str
    role: str  # "prompt" | "completion"
    weight: float  # PLW for prompt tokens, 1.0 for completion tokens
    truncated: bool  # beyond max_seq_length: training never sees it
    special: bool  # a special token such as <|im_start|>


# --------------------------------------------------------------------------- entry points


def compute_stats(
    stage, progress: Callable[[int, int], None] | None = None, use_cache: bool = True
) -> DatasetStats:
    """Statistics of the stage's dataset as its model's tokenizer sees it.

    Loads the tokenizer only (no weights). ``progress(done, total)`` is called while tokenising,
    after each chunk of records; a cache hit tokenises nothing. ``use_cache=False`` neither
    reads nor writes the cache.
    """
    cfg = stage.config
    tokenizer = load_stage_tokenizer(stage)
    path = cache_path(stage, tokenizer)
    measured = read_cache(path) if use_cache else None
    cached = measured is not None
    if measured is None:
        measured = measure(stage, tokenizer, progress)
        if use_cache:
            write_cache(path, measured)
    splits = {name: _split_stats(name, part["columns"], part["errors"]) for name, part in measured["splits"].items()}
    return DatasetStats(
        splits=splits,
        overlap=_overlap(measured["splits"]),
        max_seq_length=cfg.max_seq_length,
        prompt_loss_weight=cfg.plw,
        guidance=plw_guidance(splits["train"].rg, cfg.plw),  # load_splits insists on train rows
        tokenizer=cfg.model,
        cached=cached,
    )


def load_stage_tokenizer(stage):
    """The stage's tokenizer, from the model training would load (see
    :func:`engine.model.resolve.resolve_model`), without loading its weights."""
    where = resolve_model(stage)
    try:
        return _load_tokenizer(where.path, stage.config.trust_remote_code)
    except Exception as e:  # hub, file and format errors all reach the user as one line
        raise stage.error("model", f"could not load the tokenizer of {where.path!r}: {first_line(e)}") from None


@functools.lru_cache(maxsize=2)
def _load_tokenizer(path: str, trust_remote_code: bool):
    """Kept, because the app asks again for every example it shows.

    mlx-lm is imported here, not at the top, so that the Data screen's types load without MLX.
    """
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(path, tokenizer_config_extra={"trust_remote_code": trust_remote_code})


# --------------------------------------------------------------------------- statistics


def _split_stats(name: str, columns: dict, errors: list[str], top: bool = True) -> SplitStats:
    prompt = np.asarray(columns["prompt"], dtype=np.int64)
    completion = np.asarray(columns["completion"], dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rg = np.where(prompt > 0, completion / prompt, np.nan)
    rows = ()
    if top:
        names = ("index", "origin", "fmt", "prompt", "completion", "total")
        flags = ("truncated", "completion_cut", "zero_completion")
        rows = tuple(
            ExampleRow(*head, float(ratio), *tail)
            for head, ratio, tail in zip(zip(*(columns[n] for n in names)), rg, zip(*(columns[n] for n in flags)))
        )
    return SplitStats(
        name=name,
        count=len(prompt),
        formats={fmt: columns["fmt"].count(fmt) for fmt in FORMATS},
        parse_errors=tuple(errors),
        prompt=distribution(prompt),
        completion=distribution(completion),
        total=distribution(np.asarray(columns["total"], dtype=np.int64)),
        rg=rg_stats(prompt, completion),
        truncated=sum(columns["truncated"]),
        completion_cut=sum(columns["completion_cut"]),
        zero_completion=sum(columns["zero_completion"]),
        duplicates=len(columns["content"]) - len(set(columns["content"])),
        rows=rows,
        sources=_by_source(columns, errors) if top else {},
    )


def _by_source(columns: dict, errors: list[str]) -> dict[str, SplitStats]:
    """Per-source statistics of a split that mixes several files or dataset entries."""
    sources = [source_of(origin) for origin in columns["origin"]]
    names = list(dict.fromkeys(sources))
    if len(names) < 2:
        return {}
    out = {}
    for name in names:
        keep = [source == name for source in sources]
        part = {column: [v for v, k in zip(values, keep) if k] for column, values in columns.items()}
        own_errors = [e for e in errors if source_of(e) == name]
        out[name] = _split_stats(name, part, own_errors, top=False)
    return out


def distribution(values: np.ndarray, bins: int = BINS) -> Distribution:
    """Percentiles, mean and ``bins`` equal-width histogram bins over the values' range."""
    if len(values) == 0:
        return Distribution(0, *[math.nan] * 9, (), ())
    quantiles = np.percentile(values, [0, 10, 25, 50, 75, 90, 99, 100])
    counts, edges = np.histogram(values, bins=bins)
    mean = float(np.mean(values))
    return Distribution(len(values), mean, *map(float, quantiles), tuple(map(float, edges)), tuple(map(int, counts)))


def rg_stats(prompt: np.ndarray, completion: np.ndarray, bins: int = BINS) -> RgStats:
    """Rg over the examples with prompt tokens; its histogram is on a log10 scale."""
    has_prompt = prompt > 0
    p, c = prompt[has_prompt], completion[has_prompt]
    no_prompt = int(len(prompt) - len(p))
    if len(p) == 0:
        return RgStats(0, no_prompt, *[math.nan] * 5, (), ())
    rg = c / p
    with np.errstate(divide="ignore"):  # an Rg of 0 makes the geometric mean 0, as it should
        geometric = float(np.exp(np.mean(np.log(rg))))
    positive = rg[rg > 0]
    counts, edges = np.histogram(np.log10(positive), bins=bins) if len(positive) else ((), ())
    return RgStats(
        count=len(rg),
        no_prompt=no_prompt,
        arithmetic_mean=float(np.mean(rg)),
        geometric_mean=geometric,
        median=float(np.median(rg)),
        share_below_1=float(np.mean(rg < 1)),
        ratio_of_means=float(np.mean(c) / np.mean(p)),
        log10_bin_edges=tuple(map(float, edges)),
        bin_counts=tuple(map(int, counts)),
    )


def _overlap(splits: dict) -> dict[str, int]:
    train = set(splits.get("train", {}).get("columns", {}).get("content", ()))
    return {
        f"train/{other}": sum(c in train for c in splits.get(other, {}).get("columns", {}).get("content", ()))
        for other in ("valid", "test")
    }


# tuner's own sweep on short answers, cited beside the published results (docs/plw-experiment.md)
OWN_MEASUREMENT = (
    "tuner's own sweep agrees (docs/plw-experiment.md: SmolLM2-135M, LoRA, one epoch, one-letter "
    "answers, Rg 0.02, 3 seeds): test answer accuracy 96% at PLW 0, 93% at 0.01, 83% at 0.1 and 37% "
    "at PLW 1 (chance 25%); the smaller the PLW, the sooner the answers were right."
)


def plw_guidance(rg: RgStats, plw: float, swept: tuple[float, ...] = ()) -> str:
    """What the generation ratio suggests about PLW: a pointer to published results, not a rule.
    ``swept``: the values a sweep tries, named instead of the one ``plw``."""
    current = {0.0: " (the prompt is masked)", 1.0: " (the plain full-sequence loss)"}.get(plw, "")
    setting = f"This config trains with PLW {plw:g}{current}."
    if swept:
        *rest, last = [f"{v:g}" for v in swept]
        setting = f"This sweep tries PLW {', '.join(rest)} and {last}." if rest else f"This sweep trains with PLW {last}."
    if rg.count == 0:
        return f"Every example is plain text: all tokens are completion, so PLW has nothing to weigh. {setting}"
    r = rg.ratio_of_means
    if r < 0.5:
        reading = (
            f"Completions are short next to their prompts (Rg {r:.2f}: mean completion over mean prompt "
            "tokens). On such data the published experiments (Huerta-Enochian & Ko, 2024) found that PLW "
            "mattered: a small non-zero value, around 0.01-0.1, did best on multiple-choice and "
            f"short-generation benchmarks, values near 1 on long-generation ones. {OWN_MEASUREMENT} "
            "A starting point, not a rule."
        )
    elif r <= 1:
        reading = (
            f"Completions are somewhat shorter than their prompts (Rg {r:.2f}). The published experiments "
            "found PLW mattered on short-completion data (Rg well below 1) and showed no effect on medium- "
            "and long-completion data, so expect a small effect here."
        )
    else:
        reading = (
            f"Completions are longer than their prompts (Rg {r:.2f}). In the published experiments "
            "(Huerta-Enochian & Ko, 2024) PLW showed no effect on such data, so its value matters little here."
        )
    return f"{reading} {setting}"
