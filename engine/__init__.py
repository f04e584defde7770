"""tuner's engine: configs, data, models and training, on MLX; it never imports Textual.

Two CPU settings take effect only for what MLX does after them, so they are made here, when the
first engine module is imported: MLX reads its evaluation-order setting at its first evaluation
(see :mod:`engine.cpu_streams`), and the threads MLX and OpenBLAS start inherit this thread's
denormal flushing (see :mod:`engine.denormals`).
"""

from .cpu_streams import widen_eval_order
from .denormals import flush_denormals

widen_eval_order()
flush_denormals()
