"""``tuner train --hosts HOSTFILE sweep.yaml``: a sweep whose runs each train data-parallel over
the hostfile's ranks, one after another.

This process imports no MLX. It makes the sweep folder (or checks the one to resume), holds its
lock, and for each point left runs the same launch as ``tuner train --hosts``
(:func:`engine.launch.hosts.train_on_hosts`): a new point from the config files the user gave,
with the point's values, the sweep folder and the point's name as ``--set`` overrides (so every
Mac needs only what a plain ``--hosts`` run needs), or an interrupted point with ``--resume``.
The manifest, ``sweep_point.json`` and the ``next_stage`` link are written here, as the in-process
sweep (:mod:`engine.training.sweep`) writes them, so resuming, ``tuner control SWEEP_DIR`` and
the Runs and Compare screens work the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.config import check_chain
from engine.config.load import Sweep, SweepPoint, load_sweep
from engine.errors import EXIT_CODES, EXIT_INTERRUPTED
from engine.launch.handshake import announce_run
from engine.launch.hosts import final_status, ranks_for, train_on_hosts
from engine.runs.lock import RunLock
from engine.runs.sweep_points import point_run, tie_to_point
from engine.runs.sweeps import (
    DONE,
    SWEEP_CONFIG,
    check_sweep_resumable,
    create_sweep_folder,
    points_left,
    read_manifest,
    write_manifest,
)


def sweep_on_hosts(hostfile: Path, args, announce: Path | None = None) -> int:
    """Train a new sweep (``args.configs``) or resume one (``args.resume``) over ``hostfile``'s
    ranks; the exit status is as for a sweep trained here. ``announce`` (a detached parent's
    handshake file) is told the sweep folder."""
    if args.resume:
        sweep_dir, sweep = check_sweep_resumable(Path(args.resume))
        # a new point starts from the sweep's own config: every Mac needs the sweep folder, as a
        # resumed run needs its run folder
        base = [str(sweep_dir / SWEEP_CONFIG)]
    else:
        sweep = load_sweep(args.configs, args.overrides)
        for point in sweep.points:  # every point checked before the first starts
            check_chain([point.stage])
            ranks_for([point.stage], Path(hostfile))
        sweep_dir = create_sweep_folder(sweep)
        base = [str(Path(path).resolve()) for path in args.configs]
        base += [part for override in args.overrides for part in ("--set", override)]
    lock = RunLock.take(sweep_dir)
    if announce is not None:  # held: a resume typed as soon as the parent returns is refused, not raced
        announce_run(announce, sweep_dir)
    try:
        return _each_point(Path(hostfile), sweep_dir, sweep, base + (["--quiet"] if args.quiet else []))
    except KeyboardInterrupt:  # between two runs: nothing is training, nothing to save
        print(f"tuner: interrupted; resume with: tuner train --hosts {hostfile} --resume {sweep_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        lock.release()


def _each_point(hostfile: Path, sweep_dir: Path, sweep: Sweep, base: list[str]) -> int:
    """The points left, one launch each; a stop or a failure ends the sweep, a divergence does not."""
    manifest = read_manifest(sweep_dir)
    entries = {entry["name"]: entry for entry in manifest["points"]}
    left = points_left(sweep, manifest)
    statuses = []
    for number, point in enumerate(left, len(sweep.points) - len(left) + 1):
        entry = entries[point.name]
        print(f"sweep {sweep_dir.name}: run {number} of {len(sweep.points)}: {point.name}", file=sys.stderr, flush=True)
        need, run_dir, view = point_run(sweep_dir, entry)
        if need == "done":  # finished, then killed before the manifest said so
            entry["status"] = view.status
        else:
            train_args = (["--resume", str(run_dir), *[a for a in base if a == "--quiet"]] if need == "resume"
                          else _new_point_args(sweep_dir, point, base))
            started: list[Path] = []

            def on_start(run_dir: Path) -> None:
                started.append(run_dir)
                tie_to_point(sweep_dir, point, entry, manifest, run_dir)

            code = train_on_hosts(hostfile, train_args, [point.stage], sweep_dir.parent, on_start=on_start)
            if not started:  # the ranks ended before training: their messages are above
                return code
            entry["status"] = final_status(started[0])
        write_manifest(sweep_dir, manifest)
        statuses.append(entry["status"])
        if entry["status"] not in DONE:  # stopped, failed or interrupted: the sweep ends here
            return EXIT_CODES.get(entry["status"], 1)
    return EXIT_CODES["diverged"] if "diverged" in statuses else 0


def _new_point_args(sweep_dir: Path, point: SweepPoint, base: list[str]) -> list[str]:
    """The base configs with the point's values, its sweep folder as the runs folder and its name."""
    values = {**point.point.as_dict(), "runs_dir": str(sweep_dir), "name": point.name}
    return [*base, *[part for key, value in values.items() for part in ("--set", f"{key}={json.dumps(value)}")]]
