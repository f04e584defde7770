"""tuner's engine: configs, data, models and training, on MLX; it never imports Textual.

MLX reads its evaluation-order setting once, at its first evaluation, so it is chosen here, when
the first engine module is imported (see :mod:`engine.cpu_streams`).
"""

from .cpu_streams import widen_eval_order

widen_eval_order()
