"""The validation examples the latest evaluated run gets most wrong, kept up to date.

Training goes on while the data stays the same, so these are read apart from the dataset
statistics: whenever a newer evaluation has been written (its ``eval_examples.json`` is newer than
the one shown), checked when asked (the screen being shown, ``r``) and every few seconds while the
screen is shown. Listing the run folders and reading the file run in a thread worker.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.widgets import Static

from engine.printer import format_worst
from engine.runs.listing import EVAL_EXAMPLES, latest_evaluated_run, worst_validation

from ..messages import WorkerResult

POLL_SECONDS = 5.0  # how often a shown screen looks for a newer evaluation


def newer_evaluation(runs_dir: Path, known: tuple) -> tuple[tuple, str] | None:
    """The newest evaluation under ``runs_dir`` (its file and modification time) and its worst
    validation examples as text ("" when no run has evaluated), or None when it is still ``known``."""
    run = latest_evaluated_run(runs_dir)
    try:
        found = (run / EVAL_EXAMPLES, (run / EVAL_EXAMPLES).stat().st_mtime_ns) if run is not None else ()
    except OSError:  # the run folder went away since it was listed
        found = ()
    if found == known:
        return None
    worst = worst_validation(run) if found else None
    return found, format_worst(run, *worst).strip() if worst else ""


class WorstExamples(Static):
    """The latest evaluation's worst validation examples under ``runs_dir``; hidden while there are none."""

    class Found(WorkerResult):
        """A newer evaluation (its file and mtime) and its worst examples as text."""

        def __init__(self, evaluation: tuple, text: str) -> None:
            super().__init__()
            self.evaluation, self.text = evaluation, text

    def __init__(self, runs_dir: Path | None, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.runs_dir = runs_dir
        self.shown_for: tuple = ()  # the evaluation file and mtime of the examples shown

    def on_mount(self) -> None:
        self.display = False
        self.set_interval(POLL_SECONDS, self._poll)

    def check(self, again: bool = False) -> None:
        """Show a newer evaluation's examples if there is one; ``again`` reads the newest anyway."""
        if self.runs_dir is not None:
            self._read(() if again else self.shown_for)

    def _poll(self) -> None:
        if self.screen.is_current:
            self.check()

    @work(thread=True, exclusive=True, group="worst-examples")
    def _read(self, known: tuple) -> None:
        try:
            found = newer_evaluation(self.runs_dir, known)
        except Exception as error:  # an unreadable runs folder is said where the examples go
            found = ("unreadable",), f"could not read the latest evaluation: {type(error).__name__}: {error}"
        if found is not None:
            self.post_message(self.Found(*found))

    def on_worst_examples_found(self, message: WorstExamples.Found) -> None:
        if not message.superseded:
            self.shown_for = message.evaluation
            self.update(message.text)
            self.display = bool(message.text)
