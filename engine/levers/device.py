"""Whether MLX computes on the CPU: the question every CPU lever asks first.

Asked of the default device's type, not of Metal, so MLX's CUDA backend takes the GPU path too.
"""

from __future__ import annotations

import mlx.core as mx


def on_cpu() -> bool:
    return mx.default_device().type == mx.cpu
