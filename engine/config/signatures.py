"""The arguments of mlx.optimizers' schedules and optimizers, checked when a config loads.

mlx-lm calls ``schedule(*arguments)`` and ``Optimizer(learning_rate=..., **optimizer_config[name])``
with whatever the YAML holds, so a missing argument, a misspelled one or a word where a number
belongs used to pass validation and end the run with a traceback. The signatures are a table
here, not ``inspect.signature`` of the real functions, because importing MLX takes a second and
the config screen validates as the user types; ``tests/test_hostile_config.py`` checks the table
against the real functions, so a new MLX cannot drift from it unnoticed.

Each parameter is ``(name, kind, required)``; a kind is a type and a range (:data:`KINDS`).
"""

import math
from typing import Any

from engine.config.yaml_lines import show

Param = tuple[str, str, bool]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# kind -> (what the message says is expected, the check)
KINDS = {
    "number": ("a finite number", _number),
    "nonneg": ("a finite number >= 0", lambda v: _number(v) and v >= 0),
    "positive": ("a finite number > 0", lambda v: _number(v) and v > 0),
    "count": ("an integer >= 1", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "pair": ("a list of two finite numbers", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_number, v))),
    "number?": ("a finite number or null", lambda v: v is None or _number(v)),
}

# mlx.optimizers.schedulers functions that YAML can call (join_schedules takes functions)
SCHEDULES: dict[str, tuple[Param, ...]] = {
    "cosine_decay": (("init", "positive", True), ("decay_steps", "count", True), ("end", "nonneg", False)),
    "exponential_decay": (("init", "positive", True), ("decay_rate", "positive", True)),
    "linear_schedule": (("init", "nonneg", True), ("end", "nonneg", True), ("steps", "count", True)),
    "step_decay": (("init", "positive", True), ("decay_rate", "positive", True), ("step_size", "count", True)),
}

# the keyword arguments of each optimizer class but learning_rate, which the config's own keys set
OPTIMIZERS: dict[str, tuple[Param, ...]] = {
    "adam": (("betas", "pair", False), ("eps", "nonneg", False), ("bias_correction", "bool", False)),
    "adamw": (("betas", "pair", False), ("eps", "nonneg", False), ("weight_decay", "nonneg", False),
              ("bias_correction", "bool", False)),
    "muon": (("momentum", "nonneg", False), ("weight_decay", "nonneg", False), ("nesterov", "bool", False),
             ("ns_steps", "count", False)),
    "sgd": (("momentum", "nonneg", False), ("weight_decay", "nonneg", False), ("dampening", "number", False),
            ("nesterov", "bool", False)),
    "adafactor": (("eps", "pair", False), ("clip_threshold", "positive", False), ("decay_rate", "number", False),
                  ("beta_1", "number?", False), ("weight_decay", "nonneg", False), ("scale_parameter", "bool", False),
                  ("relative_step", "bool", False), ("warmup_init", "bool", False)),
}


def check_value(kind: str, value: Any) -> str | None:
    """What is wrong with ``value`` as an argument of ``kind``, or None when it fits."""
    expected, fits = KINDS[kind]
    return None if fits(value) else f"expected {expected}"


def positional_problem(name: str, arguments: list) -> tuple[int | None, str] | None:
    """(index of the bad argument or None for the list, what is wrong) for ``schedule(*arguments)``."""
    params = SCHEDULES[name]
    needed = [p for p, _, required in params if required]
    if not len(needed) <= len(arguments) <= len(params):
        count = f"{len(needed)}" if len(needed) == len(params) else f"{len(needed)} to {len(params)}"
        names = ", ".join(p if required else f"[{p}]" for p, _, required in params)
        return None, f"{name} takes {count} arguments ({names}), got {len(arguments)}"
    for index, ((param, kind, _), value) in enumerate(zip(params, arguments)):
        if (problem := check_value(kind, value)) is not None:
            return index, f"{param}: {problem}, got {show(value)}"
    return None
