"""A sweep point's run folder: whether to start, resume or keep it, and tying a new run to its
point. Shared by the sweep trained in this process (:mod:`engine.training.sweep`) and the one
trained over ``--hosts`` (:mod:`engine.launch.sweep_hosts`), so both leave the same files.

Apart from :mod:`engine.runs.sweeps` because it reads run folders (:mod:`engine.runs.listing`,
which imports that module to list a sweep's runs).
"""

from __future__ import annotations

from pathlib import Path

from engine.config.load import SweepPoint
from engine.errors import UserError
from engine.files import atomic_write_json
from engine.runs.folder import link_next_stage
from engine.runs.listing import read_view
from engine.runs.view import RunView
from engine.runs.lock import RunBusy
from engine.runs.more import check_resumable
from engine.runs.sweeps import DONE, POINT_FILE, write_manifest


def point_run(sweep_dir: Path, entry: dict) -> tuple[str, Path | None, RunView | None]:
    """What a point not marked done needs, with its run folder and view where it has one:
    ``"done"`` when its run had finished (killed before the manifest said so), ``"resume"`` when
    it has a checkpoint, ``"start"`` otherwise (never started, or stopped before its first
    checkpoint). A run some process trains now is refused (RunBusy)."""
    run_dir = sweep_dir / entry["run_dir"] if entry.get("run_dir") else None
    if run_dir is None or not run_dir.is_dir():
        return "start", None, None
    view = read_view(run_dir)
    if view.status in DONE:
        return "done", run_dir, view
    try:
        check_resumable(run_dir)
    except RunBusy:
        raise
    except UserError:  # nothing saved yet: start it again
        return "start", None, None
    return "resume", run_dir, view


def tie_to_point(sweep_dir: Path, point: SweepPoint, entry: dict, manifest: dict, run_dir: Path) -> None:
    """A point's run has its folder: name the sweep in it, the run in the manifest, and link the
    sweep folder to it, so ``tuner control SWEEP_DIR ...`` reaches the run training now."""
    atomic_write_json(run_dir / POINT_FILE, {"sweep": str(sweep_dir), "point": point.name,
                                             "values": point.point.as_dict()})
    entry["run_dir"], entry["status"] = run_dir.name, "running"
    write_manifest(sweep_dir, manifest)
    link_next_stage(sweep_dir, run_dir)
