"""Resuming and training further: which runs may be resumed (a run folder, not finished, not
training elsewhere, with a checkpoint), which count as finished and can only be trained further,
and how much further as a person types it, ``200`` (steps) or ``2 epochs``.

Read by the command line (``tuner train --resume RUN --more 200``) and the Runs screen's dialog
alike; it loads nothing heavy, so the app can check what was typed before the dialog closes.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import UserError
from engine.runs.checkpoints import Checkpoint, Checkpoints
from engine.runs.folder import check_folder
from engine.runs.listing import read_view
from engine.runs.lock import RunBusy, owner_pid
from engine.runs.metrics import METRICS_FILE

FINISHED = ("completed", "early_stopped")  # a run that ended so has nothing left to resume, only more to train
_LENGTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(steps?|iters?|e|epochs?)?\s*$", re.IGNORECASE)


def parse_more(text: str) -> dict[str, int | float]:
    """``{"steps": n}`` or ``{"epochs": x}`` for :func:`engine.training.chain.continue_run`.

    A bare number is steps, a whole one; ``epochs`` (or ``e``) may be a fraction.
    """
    found = _LENGTH.match(text or "")
    if found is None or float(found[1]) <= 0:
        raise UserError(f"{text!r}: give a number of steps (200) or of epochs (2 epochs)")
    number, unit = found[1], (found[2] or "steps").lower()
    if unit.startswith("e"):
        return {"epochs": float(number)}
    if "." in number:
        raise UserError(f"{text!r}: a number of steps is whole (or say epochs: {number} epochs)")
    return {"steps": int(number)}


def refuse_finished(run_dir: Path) -> None:
    """Raise the one-line refusal for resuming a finished run: resuming it would only overwrite its
    adapters (a promoted checkpoint included). Called before anything is written, by
    ``tuner train --resume`` in the foreground and before a detached one starts."""
    view = read_view(run_dir)
    if view.status in FINISHED:
        raise UserError(f"{run_dir}: the run {view.status.replace('_', ' ')} at step {view.step}; resuming "
                        f"would only overwrite its adapters. To train it further as a new linked run: "
                        f"tuner train --resume {run_dir} --more 200 (steps, or --more '2 epochs'), "
                        "or R on it in the app's Runs screen")


def check_run_folder(run_dir: Path) -> None:
    """A UserError unless ``run_dir`` is a run folder (it has the config it was trained with, and
    its ``metrics.jsonl``, if any, is a file that more events can be appended to)."""
    run_dir = check_folder(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run folder (it has no config.yaml)")
    metrics = run_dir / METRICS_FILE
    if metrics.exists() and not metrics.is_file():
        raise UserError(f"{metrics}: not a file, so the run's events cannot be read or added to; "
                        "move it away to resume")


def refuse_live(run_dir: Path, what: str = "") -> None:
    """A UserError while another process trains ``run_dir``: two writers would interleave its
    checkpoints and metrics. The trainer's lock (:mod:`engine.runs.lock`) settles a race between
    two resumes started at once; this check refuses early, before a model is loaded."""
    if (pid := owner_pid(run_dir)) is not None:
        raise RunBusy(run_dir, pid, what)


def check_resumable(run_dir: Path) -> Checkpoint:
    """The checkpoint a resume of ``run_dir`` continues from, after every check a resume needs
    before it writes anything: a run folder, not finished, not training in another process, with
    a checkpoint whose files are whole (an earlier one when the latest is damaged). Used by
    ``tuner train --resume`` in the foreground and before a detached one."""
    check_run_folder(run_dir)
    refuse_finished(run_dir)
    refuse_live(run_dir)
    return Checkpoints(run_dir).resumable()
