"""Run folders on disk: their layout, metrics, process records, control inbox and listings."""
