"""Requests to a training loop: from a UI thread, a signal handler, or another process.

Any thread may call :class:`Control`'s request methods; the loop reads them between steps, so a
request never interrupts a step half-way and never waits on the UI.

Another process (the TUI attached to a detached run, or ``tuner control``) cannot reach that
object, so every run also has an inbox: ``RUN_DIR/control/``. :func:`send_request` drops one
small file there per request (written under a temporary name and renamed, so the loop never
reads half a request); the loop's :meth:`Control.poll` applies and deletes them in the order
they were sent. A folder of files needs no server, survives either side restarting, and works
the same on macOS and Linux.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from engine.errors import UserError

CONTROL_DIR = "control"
# what another process may ask for, and the Control method that does it
ACTIONS = {"pause": "pause", "resume": "resume", "stop": "stop", "save": "save_now", "eval": "eval_now"}


class Control:
    """``pause_on_memory_pressure``: a UI where a person can free memory and resume sets it;
    headless runs stop instead."""

    def __init__(self, pause_on_memory_pressure: bool = False) -> None:
        self.pause_on_memory_pressure = pause_on_memory_pressure
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()
        self._save = threading.Event()
        self._eval = threading.Event()
        self._inbox: Path | None = None

    # ---- requests (any thread)
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        """Stop after the current step, saving a checkpoint first."""
        self._stop.set()
        self._running.set()  # a paused loop must wake up to stop

    def save_now(self) -> None:
        self._save.set()

    def eval_now(self) -> None:
        self._eval.set()

    # ---- requests from other processes
    def watch(self, run_dir: Path) -> None:
        """Take requests from ``run_dir``'s inbox from now on.

        Requests left there by an earlier process (a run killed before it read them) are
        dropped: a stale "stop" must not end the run that resumes it.
        """
        inbox = _inbox(Path(run_dir))
        for stale in inbox.iterdir():
            stale.unlink(missing_ok=True)
        self._inbox = inbox

    def poll(self) -> None:
        """Apply the requests waiting in the inbox, oldest first (a listdir when there are none)."""
        if self._inbox is None:
            return
        try:
            names = sorted(n for n in os.listdir(self._inbox) if n.endswith(".request"))
        except OSError:
            return
        for name in names:
            (self._inbox / name).unlink(missing_ok=True)
            method = ACTIONS.get(name.rsplit("-", 1)[-1].removesuffix(".request"))
            if method is not None:
                getattr(self, method)()

    # ---- what the loop reads
    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def take_save(self) -> bool:
        """True once per save request."""
        return _take(self._save)

    def take_eval(self) -> bool:
        return _take(self._eval)

    def wait_for_resume(self, timeout: float) -> None:
        self._running.wait(timeout)
        self.poll()


def _take(flag: threading.Event) -> bool:
    if flag.is_set():
        flag.clear()
        return True
    return False


def send_request(run_dir: Path, action: str) -> Path:
    """Ask the process training ``run_dir`` to pause, resume, stop, save or eval.

    The name sorts by time, then sender, so the loop applies requests in the order they were sent.
    """
    from engine.runs.folder import current_stage_dir

    if action not in ACTIONS:
        raise ValueError(f"unknown control action {action!r}; one of {', '.join(ACTIONS)}")
    inbox = _inbox(current_stage_dir(run_dir))  # a chain's later stage reads its own inbox
    name = f"{time.time_ns():020d}-{os.getpid()}-{action}.request"
    tmp = inbox / f".{name}.tmp"
    tmp.write_text(action + "\n")
    os.replace(tmp, inbox / name)
    return inbox / name


def _inbox(run_dir: Path) -> Path:
    """``run_dir``'s inbox, made when missing; a UserError when something else has its name."""
    inbox = run_dir / CONTROL_DIR
    try:
        inbox.mkdir(exist_ok=True)
    except FileExistsError:
        raise UserError(f"{inbox}: not a folder, so requests cannot reach the run; move it away "
                        "(it is where tuner control leaves them)") from None
    return inbox


def steer(run_dir: Path, action: str, wait: bool = False, poll_seconds: float = 0.1) -> str:
    """``tuner control RUN_DIR ACTION [--wait]``: send the request to the live process training
    ``run_dir`` (a chain's stage training now) and say what became of it, in one line.

    With ``wait``, until the process has taken the request from its inbox (a stop: until it has
    ended); a process that ends without taking it is a UserError, not a success.
    """
    from engine.runs.folder import current_stage_dir, live_pid

    stage_dir = current_stage_dir(run_dir)
    pid = live_pid(stage_dir)
    if pid is None:
        raise UserError(f"{stage_dir}: no run is training there now (tuner train --resume {stage_dir} "
                        "continues a stopped one)")
    request = send_request(stage_dir, action)
    done = "it acts after the current step"
    if wait:
        while request.exists() and live_pid(stage_dir) == pid:  # the loop deletes what it has read
            time.sleep(poll_seconds)
        if request.exists():
            request.unlink(missing_ok=True)  # nobody will read it: a later resume would drop it anyway
            raise UserError(f"{stage_dir}: process {pid} ended without taking the {action} request")
        while action == "stop" and live_pid(stage_dir) == pid:
            time.sleep(poll_seconds)
        done = "its process has ended" if action == "stop" else "the run has taken it"
    return f"{action}: sent to process {pid} training {stage_dir}; {done}"


class RemoteControl:
    """:class:`Control`'s request methods for a run trained by another process.

    They never raise: the app calls them from key bindings, and a request that cannot be left
    (the run folder removed, its inbox replaced by a file) has no run to reach; the app's
    follower tells that the process has ended.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    def _send(self, action: str) -> None:
        try:
            send_request(self.run_dir, action)
        except (UserError, OSError):
            pass

    def pause(self) -> None:
        self._send("pause")

    def resume(self) -> None:
        self._send("resume")

    def stop(self) -> None:
        self._send("stop")

    def save_now(self) -> None:
        self._send("save")

    def eval_now(self) -> None:
        self._send("eval")
