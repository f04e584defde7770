"""How a parent process learns which run folder the training process it started is in.

The child (a detached ``tuner train``, or rank 0 under ``mlx.launch``) writes its run folder to
an announce file in ``RUNS_DIR/.launch/`` once it has one; the parent polls that file. Used by
:mod:`engine.launch.detach` and :mod:`engine.launch.hosts`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from engine.files import atomic_write_json

LAUNCH_DIR = ".launch"


def launch_files(runs_dir: Path) -> tuple[Path, Path]:
    """(announce file, console log) for a run about to start, in ``RUNS_DIR/.launch/``."""
    launch = Path(runs_dir) / LAUNCH_DIR
    launch.mkdir(parents=True, exist_ok=True)
    token = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    return launch / f"{token}.json", launch / f"{token}.log"


def announced_run(path: Path) -> Path | None:
    """The run folder a child has announced in ``path``, or None before it has."""
    try:
        return Path(json.loads(path.read_text(encoding="utf-8"))["run_dir"])
    except (OSError, ValueError, KeyError):
        return None


def announce_run(path: Path, run_dir: Path) -> None:
    """The child's half of the handshake: say which folder it trains in."""
    atomic_write_json(path, {"run_dir": str(run_dir), "pid": os.getpid()})


def child_env() -> dict:
    """The parent's environment, with the repository importable when run from a checkout."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env
