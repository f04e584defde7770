"""tuner's engine: configs, data, models and training, on MLX; it never imports Textual.

Importing it changes nothing in the process: settings that concern the whole process (denormal
flushing, MLX's evaluation order) are made by :func:`engine.levers.process.prepare_process`,
which the command line, the app and every training run call before MLX computes anything.
The layers and what may import what: ``docs/architecture.md`` and ``tests/test_layering.py``.
"""
