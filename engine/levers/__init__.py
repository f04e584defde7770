"""Compute levers: optional ways to run the same training faster or in less memory.

Each lever changes how a step is computed, never what it computes (the tests hold every lever to
the plain path's loss and gradients). :mod:`engine.levers.plan` decides which ones apply to a run.
"""
