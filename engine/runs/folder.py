"""A run folder's identity on disk: its creation, the record of the process training it, and the
links that chain a stage's folder to the next one's.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (:mod:`engine.runs.metrics`), its adapters
and ``checkpoints/`` (:mod:`engine.runs.checkpoints`), and while it trains, ``process.json``.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from pathlib import Path

import psutil

from engine.errors import UserError
from engine.files import atomic_write_json, atomic_write_text

PROCESS_FILE = "process.json"  # which process trains the run; removed when it ends

NEXT_STAGE_FILE = "next_stage"  # in a chain: the folder of the stage that continues this one


def write_process_record(run_dir: Path) -> None:
    """Record which process trains ``run_dir``, so other processes can tell it is alive."""
    me = psutil.Process()
    atomic_write_json(Path(run_dir) / PROCESS_FILE, {
        "pid": me.pid, "host": _host(), "created": me.create_time(), "argv": sys.argv,
    })


def clear_process_record(run_dir: Path) -> None:
    (Path(run_dir) / PROCESS_FILE).unlink(missing_ok=True)


def live_pid(run_dir: Path) -> int | None:
    """The pid training ``run_dir`` when that process is alive on this machine, else None.

    The process start time is compared too, so a pid reused by an unrelated process after the
    trainer was killed does not count as the run being alive.
    """
    identity = process_record(run_dir)
    return identity[0] if identity is not None and process_running(identity) else None


def process_record(run_dir: Path) -> tuple[int, float] | None:
    """(pid, start time) of the process recorded as training ``run_dir`` on this machine."""
    try:
        record = json.loads((Path(run_dir) / PROCESS_FILE).read_text(encoding="utf-8"))
        if record.get("host") != _host():
            return None
        pid = int(record["pid"])
        return (pid, float(record["created"])) if pid > 0 else None  # -1 or 0 name no process
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None


def process_running(identity: tuple[int, float]) -> bool:
    """Whether the process (pid, start time) still runs: the same pid started at another time
    is another process, and one that has exited but not been reaped (a zombie) runs no more."""
    pid, created = identity
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - created) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError, OverflowError):  # gone, or a pid no process can have
        return False


def _host() -> str:
    return socket.gethostname()


def new_run_dir(runs_dir: str | Path, name: str | None, stem: str) -> Path:
    """Create a fresh, unique run folder: ``runs/<name>`` or ``runs/<stem>-<timestamp>``."""
    base = Path(runs_dir)
    base.mkdir(parents=True, exist_ok=True)
    label = name or f"{_slug(stem)}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base / label, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, n = base / f"{label}-{n}", n + 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def link_next_stage(run_dir: Path, next_dir: Path) -> None:
    """Point a chain's stage folder at the folder of the stage after it."""
    atomic_write_text(Path(run_dir) / NEXT_STAGE_FILE, str(Path(next_dir).resolve()) + "\n")


def current_stage_dir(run_dir: Path) -> Path:
    """The folder of the latest stage reached from ``run_dir`` by a chain's ``next_stage`` links
    (``run_dir`` itself for a single stage): where a chain's live process reads its inbox.

    A UserError when ``run_dir`` is no folder, or a link is unreadable or leads back to a stage
    already passed (following it would never end).
    """
    run_dir = check_folder(run_dir)
    seen = {run_dir.resolve()}
    while (following := next_stage_dir(run_dir, strict=True)) is not None and following.is_dir():
        if following.resolve() in seen:
            raise UserError(f"{run_dir / NEXT_STAGE_FILE}: links back to {following}, an earlier stage of "
                            "the same chain; remove the file to end the chain there")
        seen.add(following.resolve())
        run_dir = following
    return run_dir


def check_folder(run_dir: Path) -> Path:
    """``run_dir`` as a Path, or a UserError saying it is missing or a file (not a run folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "not a run folder (it is a file)" if run_dir.exists() else "no such run folder"
        raise UserError(f"{run_dir}: {what}")
    return run_dir


def next_stage_dir(run_dir: Path, strict: bool = False) -> Path | None:
    """The folder ``run_dir``'s ``next_stage`` names, None when there is none. An unreadable link
    (not UTF-8, empty, a folder) counts as none, or with ``strict`` is a UserError naming it."""
    link = Path(run_dir) / NEXT_STAGE_FILE
    try:
        text = link.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        text, why = "", "unreadable" if isinstance(e, OSError) else "not UTF-8 text"
    else:
        why = "empty" if not text else "not one folder name" if "\0" in text or "\n" in text else ""
    if not why:
        return Path(text)
    if strict:
        raise UserError(f"{link}: {why}, so the chain's next stage is unknown; remove the file if "
                        "no stage follows this one")
    return None
