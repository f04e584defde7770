"""The one way a lever changes a layer: give it a faster class, keep it only if a probe agrees.

Three levers (the SiLU, the softmax, the sparse last block) speed a layer up by switching the
instance's class to a subclass whose ``__call__`` computes the same thing another way. A switch
is kept only where a probe through the switched layer gives what the layer's own call gave, so a
model family whose layer does something else keeps its own code. Switching the class, rather than
wrapping the module, keeps parameter names, LoRA wrapping, saving and fusing exactly mlx-lm's.
"""

from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tuner.dora import DoRALinear
from mlx_lm.tuner.lora import LoRALinear

_SUBCLASSES: dict[tuple[str, type], type] = {}


def subclass(prefix: str, cls: type, make_call: Callable[[type], Callable]) -> type:
    """``cls`` with ``__call__`` replaced by ``make_call(cls)``, named ``prefix + cls.__name__``;
    made once per (prefix, class), so a second run in the same process reuses it."""
    key = (prefix, cls)
    if key not in _SUBCLASSES:
        _SUBCLASSES[key] = type(f"{prefix}{cls.__name__}", (cls,), {"__call__": make_call(cls)})
    return _SUBCLASSES[key]


def is_switched(module: nn.Module, prefix: str) -> bool:
    """Whether ``module``'s class is one :func:`subclass` made with ``prefix``."""
    return any(made is type(module) for (p, _), made in _SUBCLASSES.items() if p == prefix)


def switch_if(module: nn.Module, fast: type, agrees: Callable[[], bool]) -> bool:
    """Give ``module`` the class ``fast`` and keep it if ``agrees()``, run with the switch in place,
    says the results are the same; otherwise (or if the probe raises) restore its own class."""
    own = type(module)
    module.__class__ = fast
    try:
        kept = bool(agrees())
    except Exception:  # a layer whose call needs other arguments, or of another form
        kept = False
    if not kept:
        module.__class__ = own
    return kept


def switch_if_same(module: nn.Module, fast: type, call: Callable[[nn.Module], mx.array], rtol: float = 1e-5) -> bool:
    """:func:`switch_if` with the usual probe: ``call(module)`` before and after the switch agree
    to ``rtol`` of the largest output (float32 rounding). The probe runs in eval mode, so LoRA
    dropout cannot tell the two calls apart."""
    training = module.training
    module.eval()
    try:
        try:
            own = call(module)
        except Exception:
            return False

        def agrees() -> bool:
            got = call(module)
            scale = mx.abs(own).max().item() if own.size else 0.0
            return own.shape == got.shape and mx.abs(own - got).max().item() <= rtol * scale + 1e-6

        return switch_if(module, fast, agrees)
    finally:
        module.train(training)


def base_linear(layer: nn.Module) -> nn.Linear | None:
    """The plain ``nn.Linear`` under ``layer`` (itself, or the one a LoRA or DoRA layer wraps), or
    None for anything else (a quantized layer, which the float32 levers leave alone)."""
    base = getattr(layer, "linear", layer) if isinstance(layer, (LoRALinear, DoRALinear)) else layer
    return base if type(base) is nn.Linear else None
