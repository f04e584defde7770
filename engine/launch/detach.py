"""``tuner train --detach``: the run as its own process, independent of the terminal.

The child is a fresh ``tuner train`` in a new session (``setsid``): closing the SSH
connection sends SIGHUP to the terminal's session, not to it, and its stdin, stdout and stderr
are files, not the terminal. The parent checks the configs first (so mistakes still print one
line and exit 2 in the foreground), then waits until the child announces its run folder, so it
can print where to follow the run before returning the prompt.

Until the run folder exists the child writes to ``RUNS_DIR/.launch/<id>.log``; once announced,
the parent moves that file into the run folder as ``console.log`` (the child keeps writing to
it: an open file survives a rename).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.config import check_chain, load_stages
from engine.errors import UserError
from engine.launch.handshake import announced_run, child_env, launch_files
from engine.launch.hosts import launch_command, ranks_for

CONSOLE_LOG = "console.log"


@dataclass(frozen=True)
class Detached:
    pid: int
    run_dir: Path
    log: Path


def checked_chain(config_paths: list, overrides: list[str] = (), quiet: bool = False) -> tuple[list[str], list, Path]:
    """Check a chain of configs here; (the ``tuner train`` arguments that run it elsewhere, its
    stages, its runs folder)."""
    stages = load_stages(config_paths, overrides)
    check_chain(stages)
    train_args = [str(Path(path).resolve()) for path in config_paths]
    for override in overrides:
        train_args += ["--set", override]
    return train_args + (["--quiet"] if quiet else []), stages, Path(stages[0].config.runs_dir)


def checked_resume(run_dir: Path, quiet: bool = False) -> tuple[list[str], list, Path]:
    """Check that ``run_dir`` can be resumed (and is not training now); like :func:`checked_chain`."""
    from engine.runs.more import check_resumable

    run_dir = Path(run_dir).resolve()
    check_resumable(run_dir)
    stages = load_stages([run_dir / "config.yaml"])
    return ["--resume", str(run_dir)] + (["--quiet"] if quiet else []), stages, run_dir.parent


def detach_chain(config_paths: list, overrides: list[str] = (), quiet: bool = False, hosts: Path | None = None) -> Detached:
    """Check a chain of configs here, then train it in a detached process (on ``hosts``' ranks when given)."""
    return _detach(*checked_chain(config_paths, overrides, quiet), hosts)


def detach_resume(run_dir: Path, quiet: bool = False, hosts: Path | None = None) -> Detached:
    """Check that ``run_dir`` can be resumed, then resume it detached."""
    return _detach(*checked_resume(run_dir, quiet), hosts, earlier_log=Path(run_dir).resolve() / CONSOLE_LOG)


def checked_sweep(config_paths: list, overrides: list[str] = (), quiet: bool = False,
                  resume: Path | None = None) -> tuple[list[str], Path]:
    """Check a sweep config (every point), or that the sweep folder ``resume`` can go on; (the
    ``tuner train`` arguments that train it elsewhere, the runs folder its sweep folder is in)."""
    from engine.config.load import load_sweep
    from engine.runs.sweeps import check_sweep_resumable

    tail = ["--quiet"] if quiet else []
    if resume is not None:
        sweep_dir, _ = check_sweep_resumable(resume)
        return ["--resume", str(sweep_dir), *tail], sweep_dir.parent
    sweep = load_sweep(config_paths, overrides)
    if sweep is None:
        raise UserError("train: no key of the config holds a list of values, so it is no sweep")
    for point in sweep.points:
        check_chain([point.stage])
    train_args = [str(Path(path).resolve()) for path in config_paths]
    for override in overrides:
        train_args += ["--set", override]
    return train_args + tail, Path(sweep.points[0].stage.config.runs_dir)


def detach_sweep(config_paths: list, overrides: list[str] = (), quiet: bool = False,
                 resume: Path | None = None, hosts: Path | None = None) -> Detached:
    """Check a sweep here (or the sweep folder to resume), then train it in a detached process,
    which announces the sweep folder (its ``console.log`` goes there). With ``hosts`` that process
    trains each run over the hostfile's ranks (:mod:`engine.launch.sweep_hosts`)."""
    train_args, runs_dir = checked_sweep(config_paths, overrides, quiet, resume)
    if hosts is not None:
        train_args += ["--hosts", str(Path(hosts).resolve())]
    earlier = None if resume is None else Path(resume).resolve() / CONSOLE_LOG
    return start_detached(train_args, runs_dir, earlier_log=earlier)


def _detach(train_args: list[str], stages: list, runs_dir: Path, hosts: Path | None,
            earlier_log: Path | None = None) -> Detached:
    if hosts is not None:
        ranks_for(stages, hosts)
    return start_detached(train_args, runs_dir, hosts=hosts, earlier_log=earlier_log)


def start_detached(train_args: list[str], runs_dir: Path, poll_seconds: float = 0.2, hosts: Path | None = None,
                   earlier_log: Path | None = None) -> Detached:
    """Start ``tuner train TRAIN_ARGS`` as a detached process and wait for its run folder.

    With ``hosts`` (an mlx.launch hostfile) the detached process is ``mlx.launch`` starting the
    ranks, and rank 0 announces the run. A resume passes the folder's ``earlier_log``: the new log
    starts with its lines, so the ``console.log`` that replaces it still holds the earlier output.

    Raises :class:`UserError` with the child's own message when it exits before training starts
    (a model that fails to load, a data file that vanished).
    """
    announce, log = launch_files(runs_dir)
    train_args = [*train_args, "--announce", str(announce)]
    if hosts is None:
        command = [sys.executable, "-m", "engine.cli", "train", *train_args]
    else:
        command = launch_command(hosts, train_args)
    with open(log, "wb") as out:
        start = _copy_earlier(earlier_log, out)
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=os.getcwd(), env=child_env(),
        )
    while not announce.exists():
        if child.poll() is not None:
            if announce.exists():  # announced, then ended at once: still a run to show
                break
            message = _last_error(log, start) or f"the detached run exited with status {child.returncode} before training"
            log.unlink(missing_ok=True)
            raise UserError(message)
        time.sleep(poll_seconds)
    run_dir = announced_run(announce)
    announce.unlink(missing_ok=True)
    console = run_dir / CONSOLE_LOG
    try:
        os.replace(log, console)
    except OSError:  # another file system: the log stays where it is
        console = log
    return Detached(child.pid, run_dir, console)


def _copy_earlier(earlier_log: Path | None, out) -> int:
    """Write the earlier log's lines and a line marking the resume to ``out``; where the child's own
    output starts."""
    try:
        earlier = earlier_log.read_bytes() if earlier_log is not None else b""
    except OSError:  # none yet (trained in the foreground), or unreadable: the new log starts empty
        earlier = b""
    if earlier:
        if not earlier.endswith(b"\n"):  # cut off mid-line by a kill
            earlier += b"\n"
        out.write(earlier + f"--- resumed {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        out.flush()  # the child inherits the file's position: it writes after these lines
    return out.tell()


def _last_error(log: Path, start: int = 0) -> str:
    """The child's ``tuner: error: ...`` line (without the prefix), or its last line; its output
    begins at byte ``start``."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("tuner: error: "):
            return line.removeprefix("tuner: error: ")
    return lines[-1] if lines else ""
