"""Several runs side by side: their series, what differs between them, and the numbers that
rank them (best value, its step, final value, steps to a threshold, the spread over seeds).

The app's compare screen only draws what this module computes, so every number it shows is
tested here without Textual. A run is read from its ``metrics.jsonl`` like any other (a run that
still trains is followed by reading its file again); a sweep is a folder whose ``sweep.json``
lists its points' run folders and the values that set each point apart.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import yaml

from engine.errors import UserError
from engine.events import EvalReport, Event, RunFailed, RunFinished, RunStarted, TrainReport
from engine.runs.metrics import EventTail

SWEEP_FILE = "sweep.json"
POINTS_KEPT = 10_000  # per series of a run: a chart shows a few hundred, the table needs the rest
# series a run can show, and whether higher is better for each
SERIES = ("valid completion", "answer accuracy", "valid prompt", "train loss", "learning rate")
HIGHER_IS_BETTER = {"answer accuracy"}
# the test split's counterpart of a validation series: scored once, at the end, on held-out data
TEST_OF = {"valid completion": "completion_loss", "answer accuracy": "answer_accuracy", "valid prompt": "prompt_loss"}
X_AXES = ("step", "epoch", "tokens")
# config keys that differ between any two runs without saying anything about them
IGNORED_KEYS = {"name", "runs_dir", "adapter_path", "resume_adapter_file", "config", "mask_prompt"}
SHORT_NAMES = {"prompt_loss_weight": "PLW", "learning_rate": "LR", "lora_parameters.rank": "rank"}
EMA_WEIGHT = 0.6  # the weight of the past: evaluations are few, so heavier smoothing hides trends

Point = tuple[int, float]


@dataclass
class CompareRun:
    """One run's series as its events tell them, each bounded; NaN and inf are left out."""

    run_dir: Path
    values: dict = field(default_factory=dict)  # what its sweep point sets, when it has one
    config: dict = field(default_factory=dict)  # its config.yaml (the started event's, when there)
    steps_per_epoch: int = 0
    finished: bool = False
    series: dict[str, deque[Point]] = field(
        default_factory=lambda: {name: deque(maxlen=POINTS_KEPT) for name in SERIES})
    tokens: deque[Point] = field(default_factory=lambda: deque(maxlen=POINTS_KEPT))  # step -> trained tokens
    test: dict[str, float] = field(default_factory=dict)  # series -> its value on the test split, when scored

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.tail = EventTail(self.run_dir)

    @property
    def name(self) -> str:
        return self.run_dir.name

    def add(self, events: Iterable[Event]) -> bool:
        """Fold ``events`` in; whether any point was added."""
        added = False
        for event in events:
            if isinstance(event, RunStarted):
                self.steps_per_epoch, self.finished = event.steps_per_epoch, False
                self.config = event.config or self.config
            elif isinstance(event, TrainReport):
                added |= self._point("train loss", event.step, event.loss)
                added |= self._point("learning rate", event.step, event.learning_rate)
                self.tokens.append((event.step, event.trained_tokens))
            elif isinstance(event, EvalReport) and event.split == "valid":
                added |= self._point("valid completion", event.step, event.completion_loss)
                added |= self._point("valid prompt", event.step, event.prompt_loss)
                accuracy = getattr(event, "answer_accuracy", math.nan)  # newer runs only
                added |= self._point("answer accuracy", event.step, accuracy)
            elif isinstance(event, EvalReport) and event.split == "test":
                self.test = {series: float(getattr(event, key, math.nan)) for series, key in TEST_OF.items()}
                added = True
            elif isinstance(event, (RunFinished, RunFailed)):
                self.finished = True
        return added

    def _point(self, series: str, step: int, value: float) -> bool:
        if not math.isfinite(value):
            return False
        self.series[series].append((step, float(value)))
        return True

    def x_values(self, steps: Sequence[int], axis: str) -> np.ndarray:
        """``steps`` on the x axis ``axis``: as they are, in epochs, or in trained tokens (a step
        between two training reports is interpolated; before any report, none)."""
        steps = np.asarray(steps, dtype=float)
        if axis == "epoch":
            return steps / self.steps_per_epoch if self.steps_per_epoch else steps
        if axis == "tokens":
            if not self.tokens:
                return np.full(len(steps), np.nan)
            known_steps, known_tokens = zip(*((0, 0), *self.tokens))
            return np.interp(steps, known_steps, known_tokens)
        return steps


def read_run(run_dir: Path, values: dict | None = None) -> CompareRun:
    """A run read from its folder so far (file work: call it off the event loop)."""
    run = CompareRun(Path(run_dir), dict(values or {}))
    run.config = _config_file(run.run_dir)
    run.add(run.tail.read_new())
    return run


def _config_file(run_dir: Path) -> dict:
    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------- sweeps


def read_sweep(folder: Path) -> list[tuple[Path, dict]]:
    """The points of the sweep in ``folder``: (run folder, the values that set it apart).

    ``sweep.json`` holds ``{"points": [{"run_dir": ..., "values": {...}}, ...]}``; a relative
    ``run_dir`` is relative to the sweep folder, and a point whose ``run_dir`` is null has not
    started yet (left out). Anything else is a :class:`UserError` naming the file and the key.
    """
    path = Path(folder) / SWEEP_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not JSON ({e})") from None
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list):
        raise UserError(f"{path}: 'points' must be a list of {{run_dir, values}}")
    out = []
    for i, point in enumerate(points):
        bad = UserError(f"{path}: points[{i}] needs 'run_dir' (a path) and 'values' (a mapping)")
        if not isinstance(point, dict):
            raise bad
        run_dir, values = point.get("run_dir", ""), point.get("values", {})
        if run_dir is None:  # a point that has not started
            continue
        if not isinstance(run_dir, str) or not run_dir or not isinstance(values, dict):
            raise bad
        out.append((Path(folder) / run_dir, values))  # an absolute run_dir stays as it is
    return out


def sweep_of(run_dir: Path) -> Path | None:
    """The sweep folder a run belongs to: its own folder's parent when that holds ``sweep.json``,
    or the folder its ``sweep_point.json`` names under ``sweep``; None for a lone run."""
    run_dir = Path(run_dir)
    if (run_dir.parent / SWEEP_FILE).is_file():
        return run_dir.parent
    try:
        named = json.loads((run_dir / "sweep_point.json").read_text(encoding="utf-8")).get("sweep")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None
    if isinstance(named, str) and (run_dir / named / SWEEP_FILE).is_file():
        return run_dir / named
    return None


def newest_sweep(runs_dir: Path) -> Path | None:
    """The sweep folder under ``runs_dir`` whose ``sweep.json`` changed last; None when none has one."""
    found = []
    for manifest in Path(runs_dir).glob(f"*/{SWEEP_FILE}"):
        try:
            found.append((manifest.stat().st_mtime, manifest.parent))
        except OSError:  # removed mid-scan
            continue
    return max(found)[1] if found else None


# ---------------------------------------------------------------------- what differs


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """Nested mappings as dotted keys: ``{"lora_parameters": {"rank": 8}}`` -> ``lora_parameters.rank``."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def run_settings(run: CompareRun) -> dict[str, object]:
    """A run's config flattened, with its sweep point's values over it."""
    return {**flatten(run.config), **flatten(run.values)}


def differing_keys(settings: Sequence[dict[str, object]]) -> list[str]:
    """The keys whose values are not the same in every run, in the first run's order."""
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return [k for k in keys if k not in IGNORED_KEYS and len({_text(s.get(k)) for s in settings}) > 1]


def legend_labels(settings: Sequence[dict[str, object]], names: Sequence[str]) -> list[str]:
    """Each run named by what sets it apart (``PLW 0.01, seed 2``); by its folder name where
    nothing in the configs differs."""
    keys = differing_keys(settings)
    if not keys:
        return list(names)
    return [", ".join(f"{short_name(k)} {_text(s.get(k))}" for k in keys) for s in settings]


def short_name(key: str) -> str:
    return SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "—" if value is None else str(value)


# ---------------------------------------------------------------------- the numbers


def ema(values: Sequence[float], weight: float = EMA_WEIGHT) -> np.ndarray:
    """Exponential moving average, starting at the first value: s = weight·s + (1 - weight)·v."""
    out = np.empty(len(values))
    smooth = None
    for i, value in enumerate(values):
        smooth = value if smooth is None else weight * smooth + (1 - weight) * value
        out[i] = smooth
    return out


@dataclass(frozen=True)
class Summary:
    """One run's numbers for one series; nan / -1 where it has no points yet."""

    best: float = math.nan
    best_step: int = -1
    final: float = math.nan
    steps_to_threshold: int = -1  # the first step whose completion loss is at or below the threshold
    test: float = math.nan  # the series' value on the test split, scored once at the end


def summarize(points: Sequence[Point], higher_is_better: bool = False,
              completion: Sequence[Point] = (), threshold: float = math.nan, test: float = math.nan) -> Summary:
    """Best (the first step that reached it), final value, the first step at which the
    completion loss ``completion`` reached ``threshold``, and the test split's value."""
    reached = next((step for step, loss in completion if loss <= threshold), -1)
    if not points:
        return Summary(steps_to_threshold=reached, test=test)
    values = np.array([v for _, v in points])
    i = int(np.argmax(values) if higher_is_better else np.argmin(values))
    return Summary(float(values[i]), points[i][0], float(values[-1]), reached, test)


def default_threshold(completion: Sequence[Sequence[Point]]) -> float:
    """The completion loss every run reached: the worst run's best (nan before any validation)."""
    bests = [min(v for _, v in points) for points in completion if points]
    return max(bests) if bests else math.nan


def best_run(summaries: Sequence[Summary], higher_is_better: bool = False) -> int | None:
    """The index of the run with the best best value; None when no run has one."""
    scored = [(s.best, i) for i, s in enumerate(summaries) if math.isfinite(s.best)]
    if not scored:
        return None
    return (max if higher_is_better else min)(scored, key=lambda pair: pair[0])[1]


@dataclass(frozen=True)
class SeedGroup:
    """Runs that differ only by seed: the spread of their best values."""

    label: str  # what the group's runs share (``PLW 0.1``)
    runs: int
    mean: float
    std: float  # population standard deviation (numpy's default)
    low: float
    high: float
    test_mean: float = math.nan  # the mean test value of the group's runs that have one
    tested: int = 0  # how many do


def seed_groups(settings: Sequence[dict[str, object]], summaries: Sequence[Summary],
                seed_key: str = "seed") -> list[SeedGroup]:
    """Runs grouped by every differing value but the seed, with the mean and spread of their
    best values; empty unless the seed differs and some group holds two runs or more."""
    keys = differing_keys(settings)
    if seed_key not in keys:
        return []
    others = [k for k in keys if k != seed_key]
    groups: dict[str, list[float]] = {}
    tests: dict[str, list[float]] = {}
    for s, summary in zip(settings, summaries):
        label = ", ".join(f"{short_name(k)} {_text(s.get(k))}" for k in others) or "all runs"
        values, tested = groups.setdefault(label, []), tests.setdefault(label, [])
        if math.isfinite(summary.best):
            values.append(summary.best)
        if math.isfinite(summary.test):
            tested.append(summary.test)
    if not any(len(v) > 1 for v in groups.values()):
        return []
    return [_seed_group(label, v, tests[label]) for label, v in groups.items()]


def _seed_group(label: str, bests: list[float], tests: list[float]) -> SeedGroup:
    test_mean = float(np.mean(tests)) if tests else math.nan
    if not bests:
        return SeedGroup(label, 0, math.nan, math.nan, math.nan, math.nan, test_mean, len(tests))
    return SeedGroup(label, len(bests), float(np.mean(bests)), float(np.std(bests)), min(bests), max(bests),
                     test_mean, len(tests))
