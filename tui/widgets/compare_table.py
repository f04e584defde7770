"""The compare screen's table: per run its best value, the step of it, its final value, the
steps it took to reach a completion loss and, when runs were scored on the test split, the test
value; the best run starred. Drawn from the numbers engine/runs/compare.py made."""

from __future__ import annotations

import math
from typing import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.runs.compare import Summary

BEST = "★"


def number(value: float, series: str) -> str:
    """A value as the table shows it: learning rates in e-notation, the rest with 3 decimals."""
    if not math.isfinite(value):
        return "—"
    return f"{value:.2e}" if series == "learning rate" else f"{value:.3f}"


def step_text(step: int) -> str:
    return str(step) if step >= 0 else "—"


class CompareTable(Static):
    """One row per run, in the runs' colours."""

    def show(self, labels: Sequence[str], colours: Sequence[str], summaries: Sequence[Summary],
             best: int | None, series: str, threshold: float) -> None:
        table = Table(box=None, padding=(0, 1), header_style="bold", title=f"best {series}", title_justify="left")
        tested = any(math.isfinite(s.test) for s in summaries)
        columns = [("", "left"), ("run", "left"), ("best", "right"), ("step", "right"), ("final", "right"),
                   (f"steps to compl ≤{number(threshold, 'loss')}", "right")] + [("test", "right")] * tested
        for name, justify in columns:
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")
        for i, (label, colour, s) in enumerate(zip(labels, colours, summaries)):
            mark = Text("━━", style=colour) + Text(BEST if i == best else " ", style="bold")
            cells = [number(s.best, series), step_text(s.best_step), number(s.final, series),
                     step_text(s.steps_to_threshold)] + [number(s.test, series)] * tested
            table.add_row(mark, label, *cells, style="bold" if i == best else "")
        self.update(table)

