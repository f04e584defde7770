"""Events to plain text for the headless CLI and the app's log: one line per event, nothing fancy,
and the compute plan as one block when a run starts.

It only formats; it never decides anything, so the CLI, the app and the run's metrics.jsonl always
tell the same story. What the events add up to (a run's status, its best validation) is
:mod:`engine.runs.view`'s business.
"""

from __future__ import annotations

import math
from typing import Callable, TextIO

from engine import events as ev


def fmt(value: float, spec: str = ".3f") -> str:
    """Numbers as text, with NaN and inf spelled out rather than hidden."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def loss_parts_text(report: ev.TrainReport) -> str:
    """``prompt 1.234, completion 0.567``. At PLW 0 the sparse loss computes no prompt logits, so
    the window's prompt loss is NaN while the loss itself is finite: then the prompt part is left
    out rather than shown as a NaN that would read as a diverged run."""
    completion = f"completion {fmt(report.completion_loss)}"
    if math.isnan(report.prompt_loss) and math.isfinite(report.loss):
        return completion
    return f"prompt {fmt(report.prompt_loss)}, {completion}"


def mfu_text(report: ev.TrainReport) -> str:
    """`` (MFU 23%)``, or nothing when the run could not tell (an older run's events)."""
    return f" (MFU {report.mfu:.0%})" if math.isfinite(report.mfu) else ""


def ranks_text(report: ev.TrainReport) -> str:
    """`` on 2 ranks (412 · 398)``, after the tokens/s: each rank's own speed, so a slow Mac or
    link stands out; nothing for a single process."""
    speeds = report.rank_tokens_per_second
    if not speeds:
        return ""
    return f" on {len(speeds)} ranks ({' · '.join(fmt(v, '.0f') for v in speeds)})"


def started_line(event: ev.RunStarted) -> str:
    return (
        f"run {event.run_dir} (stage {event.stage}/{event.stages}): {event.model}, "
        f"{event.fine_tune_type}, PLW {fmt(event.prompt_loss_weight, 'g')}, "
        f"{event.total_steps} steps ({event.steps_per_epoch}/epoch), "
        f"{event.train_examples} train / {event.valid_examples} valid examples, "
        f"{event.trainable_params:,} of {event.total_params:,} parameters trained, "
        f"{event.device} {event.compute_dtype}"
        + (f", data-parallel on {event.world_size} ranks" if event.world_size > 1 else "")
    )


def notice_line(event: ev.Notice) -> str:
    return f"{'warning' if event.level == 'warning' else 'note'}: {event.message}"


def train_line(event: ev.TrainReport) -> str:
    return (
        f"step {event.step:>5}/{event.total_steps} ep {fmt(event.epoch, '.2f')} "
        f"loss {fmt(event.loss)} ({loss_parts_text(event)}) "
        f"lr {fmt(event.learning_rate, '.2e')} |g| {fmt(event.grad_norm, '.3g')} "
        f"|dW| {fmt(event.update_norm, '.3g')} {fmt(event.tokens_per_second, '.0f')} tok/s{ranks_text(event)}{mfu_text(event)} "
        f"peak {fmt(event.peak_memory_gb, '.2f')} GB"
    )


def eval_line(event: ev.EvalReport) -> str:
    """``acc`` counts every completion token (end-of-turn markup too); the answer measures follow,
    each only when it was measured."""
    answers = "".join(
        f" | {text}" for known, text in (
            (math.isfinite(event.answer_accuracy), f"answer acc {fmt(100 * event.answer_accuracy, '.1f')}%"),
            (math.isfinite(event.choice_accuracy), f"choice acc {fmt(100 * event.choice_accuracy, '.1f')}%"),
            (event.generations > 0, f"exact {event.exact_matches}/{event.generations}"),
        ) if known
    )
    return (
        f"{event.split:>5} @ {event.step:>5}: completion loss {fmt(event.completion_loss)} "
        f"acc {fmt(100 * event.completion_accuracy, '.1f')}% ppl {fmt(event.completion_perplexity, '.2f')}{answers} | "
        f"prompt loss {fmt(event.prompt_loss)} | full {fmt(event.full_loss)} "
        f"({event.examples} examples, {fmt(event.seconds, '.1f')}s)"
    )


def sample_line(event: ev.SampleGenerated) -> str:
    return f"sample @ {event.step}: {event.prompt[:60]!r} -> {event.completion[:80]!r} (want {event.reference[:40]!r})"


def checkpoint_line(event: ev.CheckpointSaved) -> str:
    return f"saved {event.reason} checkpoint at step {event.step}: {event.path}"


def state_line(event: ev.StateChanged) -> str:
    return f"{event.state} at step {event.step}"


def finished_line(event: ev.RunFinished) -> str:
    line = f"{event.status} at step {event.step} in {fmt(event.elapsed, '.1f')}s"
    if event.adapter_dir:  # an evaluation of the base model has none
        line += f"; adapters: {event.adapter_dir}"
    if event.message:
        line += f" ({event.message})"
    return line + (f"; fused model: {event.fused_dir}" if event.fused_dir else "")


def failed_line(event: ev.RunFailed) -> str:
    """One line whatever the error said (a library's message can run to many)."""
    lines = [line for line in str(event.error).splitlines() if line.strip()]
    return f"failed at step {event.step}: {lines[0] if lines else 'an error'}"


LINES: dict[type[ev.Event], Callable] = {
    ev.RunStarted: started_line,
    ev.Notice: notice_line,
    ev.TrainReport: train_line,
    ev.EvalReport: eval_line,
    ev.SampleGenerated: sample_line,
    ev.CheckpointSaved: checkpoint_line,
    ev.StateChanged: state_line,
    ev.RunFinished: finished_line,
    ev.RunFailed: failed_line,
}


def format_event(event: ev.Event) -> str | None:
    """The event as one line of text; None for a kind nobody reads as text."""
    line = LINES.get(type(event))
    return line(event) if line is not None else None


def lever_line(choice: ev.LeverChoice) -> str:
    """``on   sparse logits — the loss computes logits only ...``: one lever of the compute plan."""
    return f"{'on' if choice.on else 'off':<4} {choice.name} — {choice.reason}"


def format_plan(plan: tuple[ev.LeverChoice, ...]) -> str | None:
    """The compute plan as one block, a line per lever; None when the run carries no plan (a run
    from before plans were recorded)."""
    if not plan:
        return None
    return "\n".join(["compute plan:", *(f"  {lever_line(choice)}" for choice in plan)])


def plan_summary(plan: tuple[ev.LeverChoice, ...]) -> str:
    """The plan in one short line: the levers on by name, the ones off counted."""
    on = [choice.name for choice in plan if choice.on]
    off = len(plan) - len(on)
    return f"compute plan: {', '.join(on) or 'no lever'} on" + (f" · {off} off" if off else "")


def format_worst(run_dir, step: int, rows: list[dict]) -> str:
    """The validation examples a run gets most wrong, with their length and Rg."""
    lines = [f"\nworst validation examples of {run_dir} at step {step} (by completion loss):"]
    for row in rows:
        rg = f"{row['rg']:.3g}" if row["rg"] is not None else "—"
        loss = f"{row['completion_loss']:.3f}" if row["completion_loss"] is not None else "—"
        lines.append(
            f"  {loss:>7}  acc {100 * (row['completion_accuracy'] or 0):5.1f}%  prompt {row['prompt_tokens']:>5}  "
            f"completion {row['completion_tokens']:>5}  Rg {rg:>6}  {row['origin']}"
        )
    return "\n".join(lines)


class Printer:
    """An emit callback that writes :func:`format_event` lines to a stream, and a run's compute
    plan as one block after its start line."""

    QUIET_KINDS = (ev.EvalReport, ev.RunFinished, ev.RunFailed, ev.Notice)

    def __init__(self, stream: TextIO, quiet: bool = False):
        self.stream = stream
        self.quiet = quiet

    def __call__(self, event: ev.Event) -> None:
        if self.quiet and not isinstance(event, self.QUIET_KINDS):
            return
        line = format_event(event)
        if line is not None:
            print(line, file=self.stream, flush=True)
        if isinstance(event, ev.RunStarted) and (plan := format_plan(event.compute_plan)):
            print(plan, file=self.stream, flush=True)
