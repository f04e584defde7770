"""Run folders summarised for lists: status, progress and best validation of every run, read back
from their events, and a live follower of a run another process trains.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

from engine.errors import UserError
from engine.events import EvalReport, Event, RunFailed, RunFinished, RunStarted, StateChanged
from engine.files import atomic_write_bytes
from engine.runs.folder import PROCESS_FILE, live_pid, next_stage_dir, process_record, process_running
from engine.runs.metrics import METRICS_FILE, EventTail, read_events

LIVE_SECONDS = 120  # a run with no process record whose metrics file is older than this has died


@dataclasses.dataclass(frozen=True)


class RunSummary:
    """What a list of runs shows about one run folder, read back from its events."""

    run_dir: Path
    name: str
    status: str  # running | paused | completed | stopped | early_stopped | diverged | failed | interrupted
    stage: int
    stages: int
    step: int
    total_steps: int
    best_completion_loss: float  # lowest validation completion loss, nan before any evaluation
    best_step: int  # the step of that evaluation, -1 before any
    started: float  # Unix time of RunStarted
    model: str
    plw: float
    config_file: str
    loop_state: str = "running"  # the last StateChanged of an unfinished run: running | paused | stopping


class RunTally:
    """Folds a run's events into a :class:`RunSummary` one at a time, so a live view can keep
    its summary current from the few events each poll brings instead of rereading the file."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.started: RunStarted | None = None
        self.final_status = ""  # set once the run has finished or failed
        self.step = 0
        self.total_steps = 0
        self.best_completion_loss = math.nan
        self.best_step = -1
        self.loop_state = "running"

    def add(self, event: Event) -> None:
        if isinstance(event, RunStarted):  # also when a resume reopens a finished run
            self.started, self.total_steps, self.final_status = event, event.total_steps, ""
        self.step = max(self.step, getattr(event, "step", 0))
        if isinstance(event, EvalReport) and event.split == "valid" and math.isfinite(event.completion_loss):
            if math.isnan(self.best_completion_loss) or event.completion_loss < self.best_completion_loss:
                self.best_completion_loss, self.best_step = event.completion_loss, event.step
        elif isinstance(event, StateChanged):
            self.loop_state = event.state
        elif isinstance(event, RunFinished):
            self.final_status = event.status
        elif isinstance(event, RunFailed):
            self.final_status = "failed"

    def summary(self) -> RunSummary | None:
        """The summary so far; None until the run has started."""
        started = self.started
        if started is None:
            return None
        status = self.final_status or unfinished_status(self.run_dir, self.loop_state)
        return RunSummary(
            run_dir=self.run_dir,
            name=self.run_dir.name,
            status=status,
            stage=started.stage,
            stages=started.stages,
            step=self.step,
            total_steps=self.total_steps,
            best_completion_loss=self.best_completion_loss,
            best_step=self.best_step,
            started=started.time,
            model=started.model,
            plw=started.prompt_loss_weight,
            config_file=started.config_file,
            loop_state=self.loop_state,
        )


def summarize_run(run_dir: Path) -> RunSummary | None:
    """Summarize a run folder from its events; None when it holds no run (yet)."""
    tally = RunTally(run_dir)
    for event in read_events(tally.run_dir):
        tally.add(event)
    return tally.summary()


def unfinished_status(run_dir: Path, loop_state: str = "running") -> str:
    """running, paused or interrupted, for a run that has not finished.

    A run with a process record is alive exactly while that process is; older runs (and runs
    whose record could not be written) count as alive while their metrics file keeps changing.
    """
    run_dir = Path(run_dir)
    if (run_dir / PROCESS_FILE).exists():
        if live_pid(run_dir) is None:
            return "interrupted"
        return "paused" if loop_state == "paused" else "running"
    try:
        age = time.time() - (run_dir / METRICS_FILE).stat().st_mtime
    except OSError:
        return "interrupted"
    return "running" if age < LIVE_SECONDS else "interrupted"


def list_runs(runs_dir: Path, cache: dict | None = None) -> list[RunSummary]:
    """Every run under ``runs_dir``, newest first; unreadable folders are left out, never raised.

    A screen that rescans every few seconds passes the same ``cache`` dict each time, so only
    metrics files that changed since the last scan are parsed again: rereading long runs would
    otherwise take CPU (and the GIL) from a training loop in the same process.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    cache = {} if cache is None else cache
    summaries, seen = [], set()
    for folder in runs_dir.iterdir():
        metrics = folder / METRICS_FILE
        try:
            stat = metrics.stat()
            version = (stat.st_mtime_ns, stat.st_size)
            entry = cache.get(folder)
            if entry is None or entry[0] != version:
                entry = cache[folder] = (version, summarize_run(folder))
        except OSError:  # not a run folder, or it vanished mid-scan
            continue
        seen.add(folder)
        summary = entry[1]
        if summary is None:
            continue
        if summary.status in ("running", "paused", "interrupted"):  # time moved on since the parse
            summary = dataclasses.replace(summary, status=unfinished_status(folder, summary.loop_state))
        summaries.append(summary)
    for gone in cache.keys() - seen:
        del cache[gone]
    return sorted(summaries, key=lambda s: (s.started, s.name), reverse=True)


def follow_run(run_dir: Path, emit: Callable[[Event], None], cancelled: Callable[[], bool],
               poll_seconds: float = 0.5) -> str:
    """Replay a run's events, then keep emitting new ones as another process trains it.

    Follows a chain into its next stage's folder (see :func:`link_next_stage`) and returns why it
    ended: "finished", "process ended" (killed without finishing), or "cancelled".
    """
    run_dir = Path(run_dir)
    dead, identity = False, None
    tail, tally = EventTail(run_dir), RunTally(run_dir)
    while not cancelled():
        for event in tail.read_new():
            tally.add(event)
            emit(event)
        if tally.final_status:
            if not _more_stages(tally):
                return "finished"
            if (next_dir := next_stage_dir(run_dir)) is not None:  # the chain goes on there
                run_dir, tail, tally = next_dir, EventTail(next_dir), RunTally(next_dir)
                continue
        if dead:  # and the read after seeing it dead found nothing more
            return "process ended"
        # the stage's process record, or the last one seen: between a chain's stages neither
        # folder has one, and the same process goes on; its start time tells a reused pid apart
        identity = process_record(run_dir) or identity
        dead = identity is None or not process_running(identity)
        if not dead:
            time.sleep(poll_seconds)
    return "cancelled"


def _more_stages(tally: RunTally) -> bool:
    """Whether a stage that just finished is followed by another one of its chain."""
    started = tally.started
    return tally.final_status == "completed" and started is not None and started.stage < started.stages


def promote_checkpoint(run_dir: Path, step: int, adapter_dir: Path) -> Path:
    """Make a checkpoint's weights the run's final adapter (``adapters.safetensors``).

    The file mlx-lm loads is replaced atomically by the checkpoint's copy; the checkpoint itself
    and the other numbered files stay, so any row can be promoted again later.
    """
    source = Path(run_dir) / "checkpoints" / f"step-{step:07d}" / "adapters.safetensors"
    if not source.exists():
        raise UserError(f"{source}: no such checkpoint")
    target = Path(adapter_dir) / "adapters.safetensors"
    atomic_write_bytes(target, source.read_bytes())
    return target


EVAL_EXAMPLES = "eval_examples.json"  # written by the trainer at every validation


def worst_validation(run_dir: Path, n: int = 10) -> tuple[int, list[dict]] | None:
    """(step, the ``n`` validation examples with the highest completion loss) of a run's latest
    evaluation, each with its Rg (completion / prompt target tokens); None before any eval."""
    path = Path(run_dir) / EVAL_EXAMPLES
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = []
    for row in data.get("examples", [])[:n]:
        prompt, completion = row.get("prompt_tokens") or 0, row.get("completion_tokens") or 0
        rows.append({**row, "rg": completion / prompt if prompt else None})
    return data.get("step", 0), rows


def latest_evaluated_run(runs_dir: Path) -> Path | None:
    """The run folder whose per-example validation was written most recently."""
    found = [(p.stat().st_mtime, p.parent) for p in Path(runs_dir).glob(f"*/{EVAL_EXAMPLES}")]
    return max(found)[1] if found else None
