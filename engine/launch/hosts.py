"""``tuner train --hosts HOSTFILE``: the same training, data-parallel, through MLX's own ``mlx.launch``.

The hostfile is mlx.launch's JSON: a list of ``{"ssh": "name", "ips": ["10.0.0.2"]}`` (or an
object whose ``"hosts"`` holds that list, with an optional ``"backend"`` and ``"envs"``). One entry
is one rank; the first is rank 0, the one that writes the run folder.

Why a wrapper rather than telling people to type ``mlx.launch ... -- tuner train``, which works
too: ``mlx.launch`` exits 0 whatever its ranks did, and Ctrl-C kills it before the ranks have
saved. Here the launcher runs in its own session, so Ctrl-C reaches only this process, which asks
the run to stop through its inbox (every rank stops after the same step and rank 0 saves); and
the exit status is the run's own, read back from its metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from engine.config.checks import check_ranks
from engine.errors import EXIT_CODES, EXIT_INTERRUPTED, UserError
from engine.launch.handshake import announced_run, child_env, launch_files


def read_hostfile(path: Path) -> list[dict]:
    """The hosts of an mlx.launch hostfile; a clear error for a file mlx.launch would choke on."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such hostfile") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the hostfile ({e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    hosts = data.get("hosts") if isinstance(data, dict) else data
    if not isinstance(hosts, list) or not hosts:
        raise UserError(f"{path}: hosts: expected a non-empty list of hosts, e.g. "
                        '[{"ssh": "mac1", "ips": ["10.0.0.1"]}, {"ssh": "mac2", "ips": ["10.0.0.2"]}]')
    for i, host in enumerate(hosts):
        if not isinstance(host, dict) or not isinstance(host.get("ssh"), str) or not host["ssh"]:
            raise UserError(f"{path}: hosts[{i}]: each host needs \"ssh\": the name to reach it by")
    return hosts


def ranks_for(stages: list, hostfile: Path) -> int:
    """The number of ranks the hostfile makes, once every stage's batch splits evenly over them."""
    ranks = len(read_hostfile(hostfile))
    check_ranks(stages, ranks, over=f"the {ranks} hosts of {hostfile}")
    return ranks


def launcher() -> str:
    """The ``mlx.launch`` of this Python environment."""
    beside = Path(sys.executable).parent / "mlx.launch"
    found = str(beside) if beside.exists() else shutil.which("mlx.launch")
    if not found:
        raise UserError("mlx.launch was not found next to this Python; reinstall mlx (pip install -U mlx)")
    return found


def launch_command(hostfile: Path, train_args: list[str]) -> list[str]:
    """mlx.launch starting ``tuner train TRAIN_ARGS`` on every host, with this same interpreter
    (so each Mac needs this environment at the same path)."""
    return [launcher(), "--hostfile", str(Path(hostfile).resolve()), "--",
            sys.executable, "-m", "engine.cli", "train", *train_args]


def train_on_hosts(hostfile: Path, train_args: list[str], stages: list, runs_dir: Path, poll_seconds: float = 0.2,
                   on_start: Callable[[Path], None] | None = None) -> int:
    """Run ``tuner train TRAIN_ARGS`` on the hostfile's ranks, in the foreground. Returns the exit
    status. ``on_start`` is called with the run folder once rank 0 has announced it."""
    from engine.runs.control import send_request

    ranks = ranks_for(stages, hostfile)
    announce, _ = launch_files(runs_dir)  # the ranks print to this terminal, not to a log
    command = launch_command(hostfile, [*train_args, "--announce", str(announce)])
    print(f"training on {ranks} ranks with mlx.launch (hostfile {hostfile})", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, start_new_session=True, env=child_env())
    interrupts = 0

    def on_interrupt(signum, frame):
        nonlocal interrupts
        interrupts += 1
        run_dir = announced_run(announce)
        if interrupts == 1 and run_dir is not None:
            print("\nstopping every rank after this step and saving (press Ctrl-C again to quit at once)",
                  file=sys.stderr, flush=True)
            send_request(run_dir, "stop")
        else:  # before the run exists there is nothing to save; a second Ctrl-C means at once
            _kill_group(child, signal.SIGTERM if interrupts == 1 else signal.SIGKILL)

    old_int = signal.signal(signal.SIGINT, on_interrupt)
    old_term = signal.signal(signal.SIGTERM, on_interrupt)
    started = None
    try:
        while child.poll() is None:
            if on_start is not None and started is None and (started := announced_run(announce)) is not None:
                on_start(started)
            time.sleep(poll_seconds)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    run_dir = announced_run(announce)
    announce.unlink(missing_ok=True)
    if on_start is not None and started is None and run_dir is not None:  # announced, then ended at once
        on_start(run_dir)
    if run_dir is None:
        if interrupts:
            return EXIT_INTERRUPTED
        print("tuner: error: the ranks ended before training started (their messages are above)", file=sys.stderr)
        return 1
    status = final_status(run_dir)
    if interrupts and status not in EXIT_CODES:
        return EXIT_INTERRUPTED
    return EXIT_CODES.get(status, 1)


def final_status(run_dir: Path) -> str:
    """How the last stage reached from ``run_dir`` (following a chain's links) ended, or ``failed``."""
    from engine.runs.folder import current_stage_dir
    from engine.runs.listing import summarize_run

    summary = summarize_run(current_stage_dir(run_dir))
    if summary is None or summary.status in ("running", "paused", "interrupted"):
        return "failed"
    return summary.status


def _kill_group(child: subprocess.Popen, how: int) -> None:
    try:
        os.killpg(child.pid, how)
    except OSError:
        pass
