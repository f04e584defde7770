"""A sweep's folder on disk: its manifest, the config it was expanded from, and the files that tie
a run folder to its sweep or to the run it was derived from (see :mod:`engine.training.sweep`).

No MLX here: the command line checks a sweep folder before a detached child, or anything
heavy, starts.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import yaml

from engine.config import config_to_dict
from engine.config.load import Sweep, SweepPoint, load_sweep
from engine.errors import UserError
from engine.files import atomic_write_json, atomic_write_text
from engine.runs.folder import check_folder, new_run_dir
from engine.runs.lock import RunBusy, owner_pid

SWEEP_CONFIG = "sweep.yaml"
MANIFEST = "sweep.json"
POINT_FILE = "sweep_point.json"  # in each run folder of a sweep
DERIVED_FILE = "derived_from.json"  # in a run trained again from another with values changed
DONE = ("completed", "early_stopped", "diverged")  # a point that ended so is kept as it is


def parse_plw(text: str) -> float:
    """A prompt-loss weight typed as an answer (to "train this again with PLW = ?"): 0 to 1."""
    try:
        plw = float(text)
    except ValueError:
        plw = math.nan
    if not 0 <= plw <= 1:
        raise UserError(f"prompt_loss_weight must be a number from 0 to 1, not {text!r}")
    return plw


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


def create_sweep_folder(sweep: Sweep) -> Path:
    """A new sweep folder under the runs folder, holding ``sweep.yaml`` and a manifest with every
    point pending."""
    first = sweep.points[0].stage
    stem = first.config.name or first.path.stem
    stem = stem if stem.endswith("sweep") else f"{stem}-sweep"  # sweep.yaml: not "sweep-sweep-…"
    sweep_dir = new_run_dir(first.config.runs_dir, None, stem).resolve()
    resolved = config_to_dict(first.config)
    for axis in sweep.axes:  # the lists again, around the first point's resolved values
        node = resolved
        for part in axis.path[:-1]:
            node = node[part]
        node[axis.path[-1]] = list(axis.values)
    atomic_write_text(sweep_dir / SWEEP_CONFIG, yaml.safe_dump(resolved, sort_keys=False))
    write_manifest(sweep_dir, {
        "config": str(sweep.path), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "axes": {axis.key: list(axis.values) for axis in sweep.axes},
        "points": [{"name": p.name, "values": p.point.as_dict(), "run_dir": None, "status": "pending"}
                   for p in sweep.points],
    })
    return sweep_dir


def points_left(sweep: Sweep, manifest: dict) -> list[SweepPoint]:
    """The points not yet done, in the order to train them: a point cut short (it has a run
    folder) first, then the rest in the grid's order."""
    entries = {entry["name"]: entry for entry in manifest["points"]}
    left = [point for point in sweep.points if entries[point.name]["status"] not in DONE]
    return sorted(left, key=lambda point: entries[point.name].get("run_dir") is None)  # stable


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
