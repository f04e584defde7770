"""Immutable events: the only thing the engine tells the outside world.

The trainer emits these through one callback. The same objects feed the headless CLI printer,
the TUI (through a queue drained by a timer) and the run's ``metrics.jsonl``; reading that file
back with :func:`event_from_dict` gives the same objects, so a finished run looks exactly like a
live one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar


def _now() -> float:
    return time.time()


@dataclass(frozen=True)
class Event:
    """Base class. ``kind`` names the event in JSON; ``time`` is a Unix timestamp."""

    kind: ClassVar[str] = "event"
    time: float = field(default_factory=_now, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; NaN and inf become strings so the file stays valid JSON."""
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            out[f.name] = _json_safe(getattr(self, f.name))
        return out


def _json_safe(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class LeverChoice:
    """One line of a run's compute plan (:mod:`engine.levers.plan`): a lever, on or off, and why."""

    name: str
    on: bool
    reason: str


@dataclass(frozen=True)
class RunStarted(Event):
    """Everything a view needs to know about a run before its first step.

    Larger than the ~15 fields the project aims for, on purpose: an event is one line of
    ``metrics.jsonl``, read back alone (a run followed from its file has nothing else), so what
    the CLI, the Train and Runs screens show about a run's set-up all travels here.
    """

    kind: ClassVar[str] = "run_started"
    run_dir: str
    adapter_dir: str
    stage: int  # 1-based position in a chain of configs
    stages: int
    config_file: str
    model: str
    fine_tune_type: str
    prompt_loss_weight: float
    total_steps: int
    steps_per_epoch: int
    train_examples: int
    valid_examples: int
    trainable_params: int
    total_params: int
    device: str
    compute_dtype: str
    config: dict = field(default_factory=dict)
    resumed_from: int = 0  # the step a resumed run continues after (0: a fresh run)
    flops_per_token: float = 0.0  # model matmul FLOPs per trained token (engine/training/flops.py)
    matmul_peak_flops: float = 0.0  # this machine's measured float32 matmul FLOP/s
    pid: int = 0  # the training process, so a follower can tell when it is gone
    world_size: int = 1  # processes training data-parallel (mlx.launch); rank 0 reports
    compute_plan: tuple[LeverChoice, ...] = ()  # every compute lever, on or off, with its reason


@dataclass(frozen=True)
class Notice(Event):
    """Something a person should read: dtype changes, truncation, slow BLAS, dropped examples."""

    kind: ClassVar[str] = "notice"
    message: str
    level: str = "info"  # info | warning


@dataclass(frozen=True)
class StateChanged(Event):
    """The loop moved between running and paused (and why)."""

    kind: ClassVar[str] = "state"
    state: str  # running | paused | stopping
    step: int


@dataclass(frozen=True)
class TrainReport(Event):
    """One report window's training figures; one record for the same reason as :class:`RunStarted`."""

    kind: ClassVar[str] = "train"
    step: int
    total_steps: int
    epoch: float
    loss: float  # the PLW-weighted training loss, mean over the report window
    prompt_loss: float  # unweighted mean over prompt tokens in the window (nan if none)
    completion_loss: float
    learning_rate: float
    grad_norm: float
    update_norm: float  # ||theta - theta_0|| over the trained parameters
    tokens_per_second: float
    trained_tokens: int
    peak_memory_gb: float
    active_memory_gb: float
    cache_memory_gb: float
    elapsed: float
    padding_efficiency: float = math.nan  # real tokens / padded positions of the window's batches
    mfu: float = math.nan  # model FLOP/s achieved / the matmul peak of the machine (times the ranks)
    rank_tokens_per_second: tuple[float, ...] = ()  # each rank's own share, when data-parallel


@dataclass(frozen=True)
class EvalReport(Event):
    kind: ClassVar[str] = "eval"
    step: int
    split: str  # valid | test
    prompt_loss: float
    completion_loss: float
    full_loss: float  # plain mean over every target token (PLW = 1)
    weighted_loss: float  # the training objective at this run's PLW
    completion_accuracy: float  # greedy next-token accuracy on every completion token, template markup included
    completion_perplexity: float
    prompt_tokens: int
    completion_tokens: int
    examples: int
    seconds: float
    # Answer-level measures (defaults: files from before them still load; NaN: not measured).
    answer_accuracy: float = math.nan  # greedy accuracy on the assistant's content tokens only, no markup
    answer_tokens: int = 0  # the content tokens answer_accuracy counted
    choice_accuracy: float = math.nan  # the likeliest of answer_choices is the reference's share
    exact_match: float = math.nan  # share of eval_generations greedy answers equal to the reference (normalised)
    exact_matches: int = 0  # of the generations, how many matched
    generations: int = 0  # greedy answers compared for exact_match


@dataclass(frozen=True)
class SampleGenerated(Event):
    kind: ClassVar[str] = "sample"
    step: int
    prompt: str  # the last user message
    completion: str
    reference: str
    rendered_prompt: str = ""  # the whole prompt as the model read it: chat template, system message and all


@dataclass(frozen=True)
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int
    path: str
    reason: str  # periodic | requested | best | memory | final | stopped | diverged


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    step: int
    status: str  # completed | stopped | early_stopped | diverged
    adapter_dir: str
    elapsed: float
    fused_dir: str = ""
    message: str = ""  # why it ended, when not simply completed


@dataclass(frozen=True)
class RunFailed(Event):
    kind: ClassVar[str] = "run_failed"
    step: int
    error: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        Notice,
        StateChanged,
        TrainReport,
        EvalReport,
        SampleGenerated,
        CheckpointSaved,
        RunFinished,
        RunFailed,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from one ``metrics.jsonl`` line (unknown fields are ignored)."""
    return _from_fields(EVENT_TYPES[data["event"]], data)


def _from_fields(cls: type, data: dict[str, Any]) -> Any:
    """``cls`` (an event or a record inside one) from the keys of ``data`` it has fields for, so
    a file written by an older or newer tuner still reads; NaN and inf come back from strings."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            if f.type == "float" and isinstance(value, str):
                value = float(value)
            elif f.type.startswith("tuple[float") and isinstance(value, list):
                value = tuple(float(v) for v in value)
            elif f.type.startswith("tuple[LeverChoice") and isinstance(value, list):
                value = tuple(_from_fields(LeverChoice, v) for v in value)
            kwargs[f.name] = value
    return cls(**kwargs)
