"""Run folders summarised for lists: status, progress and best validation of every run, read back
from their events (folded by :class:`engine.runs.view.RunView`), and a live follower of a run
another process trains.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from engine.events import Event
from engine.runs.folder import PROCESS_FILE, live_pid, next_stage_dir, process_record, process_running
from engine.runs.metrics import METRICS_FILE, EventTail, read_events
from engine.runs.sweeps import MANIFEST as SWEEP_MANIFEST
from engine.runs.view import RunView

LIVE_SECONDS = 120  # a run with no process record whose metrics file is older than this has died


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a list of runs shows about one run folder: its :class:`RunView` and whether it lives."""

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


def _name(run_dir: Path) -> str:
    """The folder's name; a sweep's run is named with its sweep (``demo-sweep-…/plw0-seed1``)."""
    return f"{run_dir.parent.name}/{run_dir.name}" if (run_dir.parent / SWEEP_MANIFEST).is_file() else run_dir.name


def _run_folders(runs_dir: Path) -> list[Path]:
    """The folders directly under ``runs_dir``, and the run folders inside sweep folders."""
    folders = []
    for folder in runs_dir.iterdir():
        if (folder / SWEEP_MANIFEST).is_file():
            folders += [f for f in folder.iterdir() if f.is_dir()]
        else:
            folders.append(folder)
    return folders


def summary_of(run_dir: Path, view: RunView) -> RunSummary | None:
    """The summary of a run folder whose events so far fold into ``view``; None until the run
    has started. An unfinished run's status comes from the folder (is its process alive?)."""
    started = view.started
    if started is None:
        return None
    run_dir = Path(run_dir)
    return RunSummary(
        run_dir=run_dir,
        name=_name(run_dir),
        status=view.status or unfinished_status(run_dir, view.loop_state),
        stage=started.stage,
        stages=started.stages,
        step=view.step,
        total_steps=view.total_steps,
        best_completion_loss=view.best_completion_loss,
        best_step=view.best_step,
        started=started.time,
        model=started.model,
        plw=started.prompt_loss_weight,
        config_file=started.config_file,
        loop_state=view.loop_state,
    )


def read_view(run_dir: Path) -> RunView:
    """A run folder's events so far, folded."""
    view = RunView()
    for event in read_events(run_dir):
        view = view.apply(event)
    return view


def summarize_run(run_dir: Path) -> RunSummary | None:
    """Summarize a run folder from its events; None when it holds no run (yet)."""
    return summary_of(run_dir, read_view(run_dir))


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
    for folder in _run_folders(runs_dir):
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
    dead, identity, seen = False, None, {run_dir.resolve()}
    tail, view = EventTail(run_dir), RunView()
    while not cancelled():
        for event in tail.read_new():
            view = view.apply(event)
            emit(event)
        if view.finished:
            if not view.more_stages:
                return "finished"
            # the chain goes on there; a link back to a stage seen would replay it forever
            next_dir = next_stage_dir(run_dir)
            if next_dir is not None and next_dir.resolve() not in seen:
                seen.add(next_dir.resolve())
                run_dir, tail, view = next_dir, EventTail(next_dir), RunView()
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
