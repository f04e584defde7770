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

Tokenising is the slow part, so the per-example measurements are cached as JSON under
``$TUNER_CACHE/stats/``, keyed by the data files (path, size, mtime) or the Hugging Face ids, the
tokenizer, its chat template and ``max_seq_length``. PLW is not part of the key: it only changes
the guidance, which is written fresh each time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import textwrap
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from jinja2 import TemplateError

from engine.data.sources import FILE_SUFFIXES, SPLIT_NAMES, Record, Splits, load_splits
from engine.model.demo import resolve_builtin
from engine.errors import first_line
from engine.roles import COMPLETION, PROMPT, role_weights
from engine.files import atomic_write_text
from engine.data.tokenize import encode_records, hf_tokenizer
from engine.files import cache_root

SPLITS = ("train", "valid", "test")
FORMATS = ("chat", "completion", "alpaca", "text")
CHUNK = 2048  # records per batched tokenizer call, and per progress report
BINS = 30
CACHE_VERSION = 1  # bump when the cached measurements change meaning
SCHEMA_VERSION = 1  # of stats_to_json's output; bump on any incompatible change
# the per-example measurements, cached as one list per column
COLUMNS = (
    "index", "origin", "fmt", "prompt", "completion", "total",
    "truncated", "completion_cut", "zero_completion", "content",
)


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
    path = _cache_path(cfg, tokenizer)
    measured = _read_cache(path) if use_cache else None
    cached = measured is not None
    if measured is None:
        measured = _measure(stage, tokenizer, progress)
        if use_cache:
            try:
                atomic_write_text(path, json.dumps(measured, separators=(",", ":")))
            except OSError:
                pass  # a read-only cache costs speed next time, never the result
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
    """The stage's tokenizer, found the way training finds the model, without loading weights."""
    cfg = stage.config
    try:
        path = resolve_builtin(cfg.model)
    except ValueError as e:
        raise stage.error("model", str(e)) from None
    local = Path(path).expanduser()
    if local.exists():
        path = str(local)
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise stage.error("model", f"no such model folder: {path}")
    try:
        return _load_tokenizer(path, cfg.trust_remote_code)
    except Exception as e:  # hub, file and format errors all reach the user as one line
        raise stage.error("model", f"could not load the tokenizer of {path!r}: {first_line(e)}") from None


@functools.lru_cache(maxsize=2)
def _load_tokenizer(path: str, trust_remote_code: bool):
    """Kept, because the app asks again for every example it shows."""
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(path, tokenizer_config_extra={"trust_remote_code": trust_remote_code})


_recent: dict[str, Splits] = {}  # the last dataset read, so browsing examples reads it once


def load_record(stage, split: str, index: int) -> Record:
    """Record ``index`` of ``split``, read leniently as ``compute_stats`` read it (rows' ``index``)."""
    return getattr(_read_splits(stage), split)[index]


def _read_splits(stage, errors: list[str] | None = None) -> Splits:
    """Read the dataset leniently (a fresh read when the unreadable rows are wanted) and keep it."""
    key = json.dumps(_data_fingerprint(stage.config), sort_keys=True)
    if errors is not None or key not in _recent:
        splits = load_splits(stage, errors=[] if errors is None else errors)
        _recent.clear()
        _recent[key] = splits
    return _recent[key]


# --------------------------------------------------------------------------- measuring


def _measure(stage, tokenizer, progress) -> dict:
    """Tokenise every split in chunks; return the per-example columns and the unreadable rows."""
    errors: list[str] = []
    splits = _read_splits(stage, errors)
    records = {name: getattr(splits, name) for name in SPLITS}
    total, done = sum(map(len, records.values())), 0
    contents: dict[bytes, int] = {}  # token ids -> a small id shared by all splits
    max_len = stage.config.max_seq_length
    out = {}
    for name in SPLITS:
        split_errors = [e for e in errors if _error_split(e, stage.config) == name]
        columns: dict[str, list] = {column: [] for column in COLUMNS}
        for start in range(0, len(records[name]), CHUNK):
            if progress:
                progress(done, total)
            chunk = records[name][start : start + CHUNK]
            for i, (ids, roles) in _encode_chunk(tokenizer, chunk, split_errors):
                digest = hashlib.blake2b(ids.tobytes(), digest_size=16).digest()
                row = (
                    start + i,
                    chunk[i].origin,
                    chunk[i].fmt,
                    int(np.count_nonzero(roles == PROMPT)),
                    int(np.count_nonzero(roles == COMPLETION)),
                    len(ids),
                    len(ids) > max_len,
                    bool((roles[max_len:] == COMPLETION).any()),
                    not (roles[1:max_len] == COMPLETION).any(),  # tokenize_split drops these
                    contents.setdefault(digest, len(contents)),
                )
                for column, value in zip(COLUMNS, row):
                    columns[column].append(value)
            done += len(chunk)
        if columns["index"] or split_errors:
            out[name] = {"columns": columns, "errors": split_errors}
    if progress:
        progress(done, total)
    return {"splits": out}


def _encode_chunk(tokenizer, records: list[Record], errors: list[str]) -> list[tuple[int, tuple]]:
    """(position, (ids, roles)) for a chunk, in one batched call.

    A chat template can refuse a record (many reject a system turn, or turns that do not
    alternate); training would stop there, so here that record becomes an error line instead.
    """
    try:
        return list(enumerate(encode_records(tokenizer, records)))
    except (TemplateError, ValueError):
        pass
    encoded = []
    for i, record in enumerate(records):
        try:
            encoded.append((i, encode_records(tokenizer, [record])[0]))
        except (TemplateError, ValueError) as e:
            errors.append(f"{record.origin}: the chat template failed: {first_line(e)}")
    return encoded


def _source(origin: str) -> str:
    """The file or dataset split an origin (or an error line) names: its row marker cut off."""
    match = re.match(r"(.*?)(?::\d+|#\d+)(?=:|$)", origin)
    return match.group(1) if match else origin


def _error_split(message: str, cfg) -> str:
    """The split an unreadable row belongs to, from the file or dataset split its message names."""
    if cfg.hf_dataset:
        for entry in cfg.hf_dataset:
            for split in SPLITS:
                hf_split = getattr(entry, f"{split}_split")
                if hf_split and message.startswith(f"{entry.path}[{hf_split}]"):
                    return split
        return "train"
    if Path(cfg.data).expanduser().is_file():
        return "train"  # a single file: the validation split is held out of it
    source = _source(message)
    name = source[source.rfind("[") + 1 : -1] if source.endswith("]") else Path(source).stem
    return next((split for split, names in SPLIT_NAMES.items() if name in names), "train")


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
    sources = [_source(origin) for origin in columns["origin"]]
    names = list(dict.fromkeys(sources))
    if len(names) < 2:
        return {}
    out = {}
    for name in names:
        keep = [source == name for source in sources]
        part = {column: [v for v, k in zip(values, keep) if k] for column, values in columns.items()}
        own_errors = [e for e in errors if _source(e) == name]
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


def plw_guidance(rg: RgStats, plw: float) -> str:
    """What the generation ratio suggests about PLW: a pointer to published results, not a rule."""
    current = {0.0: " (the prompt is masked)", 1.0: " (the plain full-sequence loss)"}.get(plw, "")
    setting = f"This config trains with PLW {plw:g}{current}."
    if rg.count == 0:
        return f"Every example is plain text: all tokens are completion, so PLW has nothing to weigh. {setting}"
    r = rg.ratio_of_means
    if r < 0.5:
        reading = (
            f"Completions are short next to their prompts (Rg {r:.2f}: mean completion over mean prompt "
            "tokens). On such data the published experiments (Huerta-Enochian & Ko, 2024) found that PLW "
            "mattered: a small non-zero value, around 0.01-0.1, did best on multiple-choice and "
            "short-generation benchmarks, values near 1 on long-generation ones. A starting point, not a rule."
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


# --------------------------------------------------------------------------- the cache


def _data_fingerprint(cfg) -> dict:
    """What identifies the records read: the files' path, size and mtime, or the dataset ids."""
    reading = {
        key: getattr(cfg, key)
        for key in ("prompt_feature", "completion_feature", "text_feature", "chat_feature", "valid_fraction", "seed")
    }
    if cfg.hf_dataset:
        return {"hf_dataset": [entry.model_dump() for entry in cfg.hf_dataset], **reading}
    path = Path(cfg.data).expanduser() if cfg.data else None
    if path is None or not path.exists():
        return {"data": cfg.data, **reading}  # a Hugging Face id (or an error load_splits reports)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES) if path.is_dir() else [path]
    return {"files": [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files], **reading}


def _tokenizer_fingerprint(tokenizer) -> dict:
    tok = hf_tokenizer(tokenizer)
    backend = getattr(tok, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
    return {
        "class": type(tok).__name__,
        "tokenizer": hashlib.sha256(vocab.encode()).hexdigest(),
        "eos_token_id": tok.eos_token_id,
        "chat_template": hashlib.sha256(json.dumps(tok.chat_template).encode()).hexdigest(),
    }


def _cache_path(cfg, tokenizer) -> Path:
    key = {
        "version": CACHE_VERSION,
        "data": _data_fingerprint(cfg),
        **_tokenizer_fingerprint(tokenizer),
        "max_seq_length": cfg.max_seq_length,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root() / "stats" / f"{digest[:32]}.json"


def _read_cache(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or half-readable: measure again


# --------------------------------------------------------------------------- the example browser


def token_view(tokenizer, record: Record, max_seq_length: int, plw: float) -> list[TokenCell]:
    """``record``'s tokens as training sees them: role, loss weight, truncation, special or not.

    ``tokenizer`` is mlx-lm's wrapper, as ``load_stage_tokenizer`` returns it.
    """
    tok = hf_tokenizer(tokenizer)
    ids, roles = encode_records(tokenizer, [record])[0]
    ids = [int(i) for i in ids]
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    return [
        TokenCell(
            text=text,
            role="completion" if role == COMPLETION else "prompt",
            weight=float(role_weights(role, plw)),
            truncated=position >= max_seq_length,
            special=token in special,
        )
        for position, (token, role, text) in enumerate(zip(ids, roles, _token_texts(tok, ids)))
    ]


def _token_texts(tok, ids: list[int]) -> list[str]:
    """Each token's text as it reads in context.

    Decoding a token alone loses SentencePiece's leading space and splits multi-byte characters
    into replacement marks, so each token is decoded after the one before it and the new text
    kept; the first tokens of an unfinished character show empty and the last carries it whole.
    """
    texts: list[str] = []
    before: list[int] = []
    pending: list[int] = []
    for token in ids:
        pending.append(token)
        head = tok.decode(before) if before else ""
        both = tok.decode(before + pending)
        text = both[len(head) :] if both.startswith(head) else tok.decode(pending)
        if text.endswith("\ufffd") and len(pending) < 4:  # a UTF-8 character needs up to 4 bytes
            texts.append("")
            continue
        texts.append(text)
        before, pending = pending[-1:], []
    return texts


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
    head = f"tokenizer {stats.tokenizer}  ·  max_seq_length {stats.max_seq_length}  ·  PLW {stats.prompt_loss_weight:g}"
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


BLOCKS = " ▁▂▃▄▅▆▇█"


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
