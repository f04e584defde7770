"""What the Data screen computes on its workers: a stage's statistics and one example's tokens.

No Textual here: the screen calls these from thread workers and shows what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.config import Stage, load_stages
from engine.config.load import load_sweep
from engine.data.stats import DatasetStats, TokenCell, compute_stats, load_stage_tokenizer
from engine.data.stats_measure import load_record
from engine.data.token_view import token_view


@dataclass(frozen=True)
class Loaded:
    """A finished computation: the stage it was for and its statistics."""

    stage: Stage
    stats: DatasetStats


@dataclass(frozen=True)
class ExampleTokens:
    """One example tokenised for the token view, or the one-line reason it could not be."""

    split: str
    index: int
    cells: tuple[TokenCell, ...] = ()
    error: str = ""


class Superseded(Exception):
    """Raised from the progress callback to stop a computation nobody waits for any more.

    Its worker is already cancelled, so whatever it posts is dropped.
    """


def load_dataset(chain: list[Path], progress, use_cache: bool) -> Loaded:
    """Compute the statistics of the chain's last stage (on a worker thread).

    The stages before it are loaded too, because a later stage inherits their keys. A sweep's
    points share their data (only PLW, seed, learning rate and rank vary): its first is shown.
    """
    sweep = load_sweep(chain)
    if sweep is None:
        stage = load_stages(chain)[-1]
        return Loaded(stage, compute_stats(stage, progress=progress, use_cache=use_cache))
    stage = sweep.points[0].stage
    stats = compute_stats(stage, progress=progress, use_cache=use_cache)
    return Loaded(stage, stats.for_sweep(sweep.values("prompt_loss_weight")))


def example_tokens(loaded: Loaded, split: str, index: int) -> list[TokenCell]:
    """One example's tokens as the loss sees them (on a worker thread).

    The engine keeps the tokenizer and the records it read last, so stepping through examples
    loads neither again.
    """
    stats = loaded.stats
    record = load_record(loaded.stage, split, index)
    return token_view(load_stage_tokenizer(loaded.stage), record, stats.max_seq_length, stats.prompt_loss_weight)
