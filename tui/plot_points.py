"""Series thinned to what a terminal chart can show, before plotext draws them on the event loop.

A braille chart has two dots per column, so a run's thousands of points draw the same picture as
a few hundred; plotting them all cost the event loop time on every redraw of a live run. Each
bucket keeps its lowest and highest point, so spikes (a diverging loss) stay visible.
"""

from __future__ import annotations

from typing import Sequence


def thinned(points: Sequence[tuple[int, float]], columns: int) -> list[tuple[int, float]]:
    """``points`` (in step order) reduced to about ``4 * columns``: the extremes of each bucket."""
    buckets = max(1, 2 * columns)
    if len(points) <= 2 * buckets:
        return list(points)
    size = len(points) / buckets
    kept: list[tuple[int, float]] = []
    for b in range(buckets):
        chunk = points[int(b * size):int((b + 1) * size)]
        if chunk:
            low, high = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
            kept.extend(sorted({low, high}))
    return kept
