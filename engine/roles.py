"""What each token is for, and the prompt-loss-weight rule that turns roles into loss weights.

Tokenisation tags every token PROMPT or COMPLETION; batching pads with PAD. A target position's
weight is 1 on a completion token, PLW on a prompt token and 0 on padding. This module is that
rule's only home; the loss, the sparse-logits selection, the data inspector and the rank
denominators all call :func:`role_weights`.
"""

from __future__ import annotations

import numpy as np

PAD, PROMPT, COMPLETION = 0, 1, 2
# A completion token that is the assistant's own content (not the template's markup around it).
# Only validation batches carry it (:func:`engine.data.batching.collate` with ``answers=True``), so
# the loss and the sparse selection, which weigh COMPLETION, never see it; the validation sums
# count it as completion and, apart, as answer (:func:`engine.loss.example_sums`).
ANSWER = 3


def role_weights(roles, plw: float, xp=np):
    """Loss weights of ``roles`` (any shape) at prompt-loss-weight ``plw``.

    ``xp`` is the array module: numpy by default, ``mlx.core`` inside a compiled loss (both have
    the same ``where``). The result is float64 in numpy; callers cast as they need.
    """
    return xp.where(roles == COMPLETION, 1.0, xp.where(roles == PROMPT, plw, 0.0))
