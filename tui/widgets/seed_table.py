"""The compare screen's second table: for runs that differ only by seed, the mean and spread of
their best values per value of the rest, and their mean test value when they were scored on the
test split (engine/runs/compare.py's seed groups)."""

from __future__ import annotations

from typing import Sequence

from rich.table import Table
from textual.widgets import Static

from engine.runs.compare import SeedGroup

from .compare_table import number


class SeedTable(Static):
    """Mean and spread of the best values per group of runs that differ only by seed; hidden
    when there is no such group."""

    def show(self, groups: Sequence[SeedGroup], series: str) -> None:
        self.display = bool(groups)
        if not groups:
            return
        table = Table(box=None, padding=(0, 1), header_style="bold", title_justify="left",
                      title=f"over seeds: best {series}")
        tested = any(g.tested for g in groups)
        for name in ("group", "runs", "mean", "std", "min–max") + ("test mean",) * tested:
            table.add_column(name, justify="left" if name == "group" else "right", no_wrap=True)
        for g in groups:
            cells = [str(g.runs), number(g.mean, series), number(g.std, series),
                     f"{number(g.low, series)}–{number(g.high, series)}"]
            cells += [f"{number(g.test_mean, series)} ({g.tested})" if g.tested else "—"] * tested
            table.add_row(g.label, *cells)
        self.update(table)
