"""Reusable widgets for the terminal app; each knows nothing about training or MLX."""

from tui.widgets.memory_gauge import MemoryGauge
from tui.widgets.metric_sparkline import MetricSparkline

__all__ = ["MemoryGauge", "MetricSparkline"]
