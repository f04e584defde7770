"""Gradient checkpointing: each transformer block recomputes its activations in the backward pass.

A memory lever, not a speed one: the backward pass runs each block's forward again instead of
keeping its activations (bench/README.md measures what it saves and costs).
"""

from __future__ import annotations

import mlx.nn as nn
from mlx_lm.tuner.trainer import grad_checkpoint


def checkpoint_layers(model: nn.Module) -> None:
    """Recompute each transformer block's activations in the backward pass.

    mlx-lm's ``grad_checkpoint`` replaces ``__call__`` on the block's *class*, so a second run in
    the same process (the app trains many) would wrap it again; the class is marked once done.
    """
    block = type(model.layers[0])
    if not getattr(block, "_tuner_checkpointed", False):
        grad_checkpoint(model.layers[0])
        block._tuner_checkpointed = True
