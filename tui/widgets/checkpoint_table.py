"""An opened run's checkpoints: why each was saved, its validation, and which the final adapter holds.

Kept apart from the Runs screen because it refills often (every tail read of a live run): it
redraws only when its rows change, and keeps the cursor on the step it was on.
"""

from __future__ import annotations

import math

from textual.widgets import DataTable

from engine.runs.view import RunView

COLUMNS = ("step", "saved because", "valid completion loss", "accuracy", "final adapter")


def _dash(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "—"


class CheckpointTable(DataTable):
    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: list[tuple[str, ...]] = []

    def on_mount(self) -> None:
        self.add_columns(*COLUMNS)

    def show(self, view: RunView, final_step: int | None) -> None:
        """The run's checkpoints; the one the final adapter holds is marked (promoted, when it is
        not the last). Nothing happens when the rows are as shown."""
        reasons, evals = view.checkpoint_reasons(), view.evals_by_step()
        last = max(reasons, default=None)
        rows = []
        for step in sorted(reasons):
            found = evals.get(step)
            loss = _dash(found.completion_loss, ".3f") if found else "—"
            accuracy = _dash(found.completion_accuracy, ".1%") if found else "—"
            marker = ("● promoted" if step != last else "●") if step == final_step else ""
            rows.append((str(step), reasons[step], loss, accuracy, marker))
        if rows == self._rows:
            return
        self._rows = rows
        cursor = self.selected_step
        self.clear()
        for row in rows:
            self.add_row(*row, key=row[0])
        if cursor is not None and str(cursor) in self.rows:
            self.move_cursor(row=self.get_row_index(str(cursor)))

    @property
    def selected_step(self) -> int | None:
        if self.row_count == 0:
            return None
        return int(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
