"""A sweep's folder on disk: its manifest, the config it was expanded from, and the files that tie
a run folder to its sweep or to the run it was derived from (see :mod:`engine.training.sweep`).

No MLX here: the command line checks a sweep folder before a detached child, or anything
heavy, starts.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.config.load import Sweep, load_sweep
from engine.errors import UserError
from engine.files import atomic_write_json
from engine.runs.folder import check_folder
from engine.runs.lock import RunBusy, owner_pid

SWEEP_CONFIG = "sweep.yaml"
MANIFEST = "sweep.json"
POINT_FILE = "sweep_point.json"  # in each run folder of a sweep
DERIVED_FILE = "derived_from.json"  # in a run trained again from another with values changed
DONE = ("completed", "early_stopped", "diverged")  # a point that ended so is kept as it is


def is_sweep_dir(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def check_sweep_resumable(sweep_dir: Path) -> tuple[Path, Sweep]:
    """The sweep folder and its sweep, after the checks a resume needs before anything is written:
    a sweep folder, not trained by another process now, with a run left to train."""
    sweep_dir = check_folder(sweep_dir).resolve()
    manifest = read_manifest(sweep_dir)
    if (pid := owner_pid(sweep_dir)) is not None:
        raise RunBusy(sweep_dir, pid)
    if all(isinstance(entry, dict) and entry.get("status") in DONE for entry in manifest["points"]):
        raise UserError(f"{sweep_dir}: every run of the sweep has finished; nothing is left to resume")
    sweep = load_sweep([sweep_dir / SWEEP_CONFIG])
    # the same points; their order may differ (a sweep started by an older tuner varied the seed fastest)
    if sweep is None or sorted(p.name for p in sweep.points) != sorted(e["name"] for e in manifest["points"]):
        raise UserError(f"{sweep_dir / SWEEP_CONFIG}: no longer describes the points of {MANIFEST}; "
                        "restore it to resume the sweep")
    return sweep_dir, sweep


def read_manifest(sweep_dir: Path) -> dict:
    """The sweep's manifest, or a UserError saying the folder is no sweep (or the file is damaged)."""
    path = Path(sweep_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("points"), list):
            raise ValueError("no list of points")
    except FileNotFoundError:
        raise UserError(f"{sweep_dir}: not a sweep folder (it has no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); the sweep cannot be resumed") from None
    return manifest


def write_manifest(sweep_dir: Path, manifest: dict) -> None:
    atomic_write_json(Path(sweep_dir) / MANIFEST, manifest)
