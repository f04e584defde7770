"""Training a finished run further: which runs count as finished, and how much further as a person
types it, ``200`` (steps) or ``2 epochs``.

Read by the command line (``tuner train --resume RUN --more 200``) and the Runs screen's dialog
alike; it loads nothing heavy, so the app can check what was typed before the dialog closes.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import UserError
from engine.runs.listing import read_view

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
