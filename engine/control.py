"""Requests from a UI or a signal handler to a training loop running elsewhere.

Any thread may call the request methods; the loop reads them between steps, so a request never
interrupts a step half-way and never waits on the UI.
"""

from __future__ import annotations

import threading


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


def _take(flag: threading.Event) -> bool:
    if flag.is_set():
        flag.clear()
        return True
    return False
