"""Sweeps: a grid of runs trained one after another, and runs trained again with a value changed.

A sweep lives in one folder under ``runs_dir`` (``NAME-sweep-TIMESTAMP/``) holding
``sweep.yaml`` (the resolved config with its lists: what the sweep is, so resuming never depends
on the original file), ``sweep.json`` (the manifest: each point's values, run folder and status)
and one run folder per point, named by its values (``plw0.01-seed2``). Each point's run folder
also holds ``sweep_point.json``, so a screen listing runs can group them without the manifest.

Resuming a sweep keeps the finished runs, resumes the interrupted one exactly from its latest
checkpoint (:func:`engine.training.chain.resume_run`) and starts the rest. One process trains a
sweep at a time: it holds the sweep folder's lock (:mod:`engine.runs.lock`) throughout. The sweep
folder's ``next_stage`` names the run training now, as a chain's stage names the next stage, so
``tuner control SWEEP_DIR stop`` reaches it (and a stopped run ends the sweep).

:func:`rerun` trains a run's config again with a few values changed (PLW = 0.1 instead of 0) as a
new run folder whose ``derived_from.json`` names the run it came from and what changed.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from engine import events as ev
from engine.config import Stage, check_chain, load_stages
from engine.config.load import Sweep, SweepPoint
from engine.config.sweep import SWEEP_KEYS
from engine.data.sources import check_local_data
from engine.data.tokenize import tokenised_once
from engine.errors import UserError
from engine.files import atomic_write_json
from engine.runs.control import Control
from engine.runs.lock import RunLock
from engine.runs.more import check_run_folder
from engine.runs.sweep_points import point_run, tie_to_point
from engine.runs.sweeps import (
    DERIVED_FILE,
    check_sweep_resumable,
    create_sweep_folder,
    is_sweep_dir,
    points_left,
    read_manifest,
    write_manifest,
)
from engine.training.chain import resume_run
from engine.training.trainer import Emit, StageResult, Trainer


def run_sweep(sweep: Sweep, emit: Emit, control: Control | None = None) -> list[StageResult]:
    """Check every point, make the sweep folder, then train its runs one after another."""
    for point in sweep.points:
        check_chain([point.stage], 1)
    check_local_data([sweep.points[0].stage])
    return _train_points(create_sweep_folder(sweep), sweep, emit, control or Control())


def resume_sweep(sweep_dir: Path, emit: Emit, control: Control | None = None) -> list[StageResult]:
    """Go on with a stopped or killed sweep: finished runs kept, the interrupted one resumed, the rest started."""
    sweep_dir, sweep = check_sweep_resumable(sweep_dir)
    return _train_points(sweep_dir, sweep, emit, control or Control())


def _train_points(sweep_dir: Path, sweep: Sweep, emit: Emit, control: Control) -> list[StageResult]:
    """Train each point not yet done, in order, holding the sweep folder's lock; stop at a stop."""
    lock = RunLock.take(sweep_dir)
    try:
        with tokenised_once():  # the points differ in PLW, seed or LR, not in data: tokenised once
            return _each_point(sweep_dir, sweep, emit, control)
    finally:
        lock.release()


def _each_point(sweep_dir: Path, sweep: Sweep, emit: Emit, control: Control) -> list[StageResult]:
    """The points not yet done (:func:`~engine.runs.sweeps.points_left`), the manifest kept up to
    date; stops at a stop."""
    manifest = read_manifest(sweep_dir)
    entries = {entry["name"]: entry for entry in manifest["points"]}
    left = points_left(sweep, manifest)
    done = len(sweep.points) - len(left)
    results = []
    for number, point in enumerate(left, done + 1):
        entry = entries[point.name]
        emit(ev.Notice(message=f"sweep {sweep_dir.name}: run {number} of {len(sweep.points)}: {point.name}"))
        try:
            result = _train_point(sweep_dir, point, entry, manifest, emit, control)
        except BaseException as e:
            if entry["status"] == "running":  # what went wrong is in the run's own metrics
                entry["status"] = "failed" if isinstance(e, Exception) else "interrupted"
                write_manifest(sweep_dir, manifest)
            raise
        entry["status"] = result.status
        write_manifest(sweep_dir, manifest)
        results.append(result)
        if result.status == "stopped" or control.stopping:
            break
    return results


def _train_point(sweep_dir: Path, point: SweepPoint, entry: dict, manifest: dict, emit: Emit,
                 control: Control) -> StageResult:
    """One point: resumed from its run folder's latest checkpoint when it has one, else started."""
    noting = _at_start(emit, lambda run_dir: tie_to_point(sweep_dir, point, entry, manifest, run_dir))
    need, run_dir, view = point_run(sweep_dir, entry)
    if need == "done":
        return StageResult(view.status, run_dir, None, view.step)
    if need == "resume":
        return resume_run(run_dir, noting, control)
    config = point.stage.config.model_copy(update={"runs_dir": str(sweep_dir), "name": point.name})
    return Trainer(replace(point.stage, config=config), noting, control).run()


def _at_start(emit: Emit, started: Callable[[Path], None]) -> Emit:
    """``emit``, calling ``started(run_dir)`` at the run's first RunStarted (before passing it on)."""
    seen = []

    def wrapped(event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted) and event.run_dir and not seen:
            seen.append(event.run_dir)
            started(Path(event.run_dir))
        emit(event)

    return wrapped


def rerun(run_dir: Path, overrides: dict[str, Any], emit: Emit, control: Control | None = None) -> StageResult:
    """Train ``run_dir``'s config again with ``overrides`` (dotted key -> value, e.g.
    ``{"prompt_loss_weight": 0.1}``) as a new run beside it, named for what changed, whose
    ``derived_from.json`` names the original run and the overrides."""
    stage, original = rerun_stage(run_dir, overrides)
    check_chain([stage], 1)
    check_local_data([stage])

    def started(new_dir: Path) -> None:
        atomic_write_json(new_dir / DERIVED_FILE, {"run": str(original), "overrides": overrides})

    return Trainer(stage, _at_start(emit, started), control).run()


def rerun_stage(run_dir: Path, overrides: dict[str, Any]) -> tuple[Stage, Path]:
    """The stage :func:`rerun` trains, and the original run's folder (resolved); raises the user's errors."""
    if not overrides:
        raise UserError("train again with which value changed? (e.g. prompt_loss_weight)")
    run_dir = Path(run_dir).resolve()
    check_run_folder(run_dir)
    in_sweep = is_sweep_dir(run_dir.parent)
    runs_dir = run_dir.parent.parent if in_sweep else run_dir.parent  # beside the sweep, not inside it
    short = {".".join(path): name for path, name in SWEEP_KEYS.items()}
    changed = "-".join(f"{short.get(key, key)}{value:g}" if isinstance(value, float) else f"{short.get(key, key)}{value}"
                       for key, value in overrides.items())
    sets = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    sets += [f"name={json.dumps(f'{run_dir.name}-{changed}')}", f"runs_dir={json.dumps(str(runs_dir))}",
             "adapter_path=null", "train=true"]
    return load_stages([run_dir / "config.yaml"], sets)[0], run_dir
