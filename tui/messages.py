"""How work done off the event loop comes back to it: typed messages.

Reading files, tokenising, validating and training run in thread workers, so the event loop only
ever draws. Every worker hands its result back the same way: it posts a :class:`WorkerResult`
subclass to the node that started it (``post_message`` is safe from any thread), and a handler
named for the message applies it on the event loop. Training events are the one stream that goes
through a queue instead, drained ten times a second, so a fast run cannot flood the loop; the
end of that stream is a message like any other (:class:`TrainingEnded`).
"""

from __future__ import annotations

from pathlib import Path

from textual.message import Message
from textual.worker import NoActiveWorker, Worker, get_current_worker


class WorkerResult(Message):
    """A thread worker's result, made on the worker's thread.

    ``superseded`` tells whether a newer worker of the same exclusive group has replaced the one
    that made it: a handler drops such a result. It is read on the event loop, where workers are
    started and cancelled, so it cannot race with the start of the newer one.
    """

    bubble = False  # for the node that started the worker, nobody else

    def __init__(self) -> None:
        super().__init__()
        try:
            self.worker: Worker | None = get_current_worker()
        except NoActiveWorker:  # posted on the event loop, e.g. by a test
            self.worker = None

    @property
    def superseded(self) -> bool:
        return self.worker is not None and self.worker.is_cancelled


class TrainingEnded(WorkerResult):
    """The thread training a run here, or following one trained elsewhere, has returned; every
    event it queued is already in the queue."""


class DetachStarted(WorkerResult):
    """A run now trains in its own process (``tuner train --detach``)."""

    def __init__(self, run_dir: Path, pid: int) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.pid = pid


class DetachFailed(WorkerResult):
    """Starting a detached run failed; ``error`` is one line for the user."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class PlaygroundLoaded(WorkerResult):
    """The Playground's model is loaded: ``title`` names it, ``steps`` are the run's checkpoints
    (empty for a bare model, which has only its base), ``has_final`` whether it has a final adapter."""

    def __init__(self, source: str, title: str, steps: list[int], has_final: bool) -> None:
        super().__init__()
        self.source, self.title, self.steps, self.has_final = source, title, steps, has_final


class PlaygroundFailed(WorkerResult):
    """Loading or generating failed; ``error`` is one line for the user."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class AnswerStreamed(WorkerResult):
    """Text an answer gained since the last message (a few tokens, throttled), for ``pane``."""

    def __init__(self, pane: str, text: str, tokens: int) -> None:
        super().__init__()
        self.pane, self.text, self.tokens = pane, text, tokens


class AnswerStarted(WorkerResult):
    """An answer begins in ``pane`` from the weights ``label`` names."""

    def __init__(self, pane: str, label: str) -> None:
        super().__init__()
        self.pane, self.label = pane, label


class AnswerFinished(WorkerResult):
    """An answer ended (``finished``: an :class:`engine.playground.stream.Finished`)."""

    def __init__(self, pane: str, finished) -> None:
        super().__init__()
        self.pane, self.finished = pane, finished


class GenerationEnded(WorkerResult):
    """The generation worker returned: every answer it was asked for has ended."""


class ValidPromptsRead(WorkerResult):
    """A run's validation prompts (:class:`engine.playground.stream.ValidPrompt`), or why not."""

    def __init__(self, prompts: list, error: str | None = None) -> None:
        super().__init__()
        self.prompts, self.error = prompts, error


class ExportProgress(WorkerResult):
    """The export worker's progress: what it does now and the share done (0 to 1)."""

    def __init__(self, stage: str, fraction: float) -> None:
        super().__init__()
        self.stage, self.fraction = stage, fraction


class ExportEnded(WorkerResult):
    """The export is done (``path``: what it wrote) or failed (``error``, one line)."""

    def __init__(self, path: Path | None, error: str | None = None) -> None:
        super().__init__()
        self.path, self.error = path, error
