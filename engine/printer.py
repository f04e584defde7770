"""Events to plain text lines for the headless CLI: one line per report, nothing fancy.

It only formats; it never decides anything, so the CLI and the run's metrics.jsonl always tell
the same story.
"""

from __future__ import annotations

import math
from typing import TextIO

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


def format_event(event: ev.Event) -> str | None:
    if isinstance(event, ev.RunStarted):
        return (
            f"run {event.run_dir} (stage {event.stage}/{event.stages}): {event.model}, "
            f"{event.fine_tune_type}, PLW {fmt(event.prompt_loss_weight, 'g')}, "
            f"{event.total_steps} steps ({event.steps_per_epoch}/epoch), "
            f"{event.train_examples} train / {event.valid_examples} valid examples, "
            f"{event.trainable_params:,} of {event.total_params:,} parameters trained, "
            f"{event.device} {event.compute_dtype}"
            + (f", data-parallel on {event.world_size} ranks" if event.world_size > 1 else "")
        )
    if isinstance(event, ev.Notice):
        return f"{'warning' if event.level == 'warning' else 'note'}: {event.message}"
    if isinstance(event, ev.TrainReport):
        return (
            f"step {event.step:>5}/{event.total_steps} ep {fmt(event.epoch, '.2f')} "
            f"loss {fmt(event.loss)} ({loss_parts_text(event)}) "
            f"lr {fmt(event.learning_rate, '.2e')} |g| {fmt(event.grad_norm, '.3g')} "
            f"|dW| {fmt(event.update_norm, '.3g')} {fmt(event.tokens_per_second, '.0f')} tok/s{ranks_text(event)}{mfu_text(event)} "
            f"peak {fmt(event.peak_memory_gb, '.2f')} GB"
        )
    if isinstance(event, ev.EvalReport):
        return (
            f"{event.split:>5} @ {event.step:>5}: completion loss {fmt(event.completion_loss)} "
            f"acc {fmt(100 * event.completion_accuracy, '.1f')}% ppl {fmt(event.completion_perplexity, '.2f')} | "
            f"prompt loss {fmt(event.prompt_loss)} | full {fmt(event.full_loss)} "
            f"({event.examples} examples, {fmt(event.seconds, '.1f')}s)"
        )
    if isinstance(event, ev.SampleGenerated):
        return f"sample @ {event.step}: {event.prompt[:60]!r} -> {event.completion[:80]!r} (want {event.reference[:40]!r})"
    if isinstance(event, ev.CheckpointSaved):
        return f"saved {event.reason} checkpoint at step {event.step}: {event.path}"
    if isinstance(event, ev.StateChanged):
        return f"{event.state} at step {event.step}"
    if isinstance(event, ev.RunFinished):
        line = f"{event.status} at step {event.step} in {fmt(event.elapsed, '.1f')}s; adapters: {event.adapter_dir}"
        if event.message:
            line += f" ({event.message})"
        return line + (f"; fused model: {event.fused_dir}" if event.fused_dir else "")
    if isinstance(event, ev.RunFailed):
        return f"failed at step {event.step}: {event.error}"
    return None


class Printer:
    """An emit callback that writes :func:`format_event` lines to a stream."""

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
