"""Training configs: YAML stages in, one validated and provenance-tracked ``TrainConfig`` per stage out.

Real mlx-lm ``lora`` YAML files load unchanged; on top of them we add a few keys of our own
(prompt-loss weight, run name, gradient clipping, ...). Every mistake is reported as one line
naming file, line and key. The parts, each in its own module:

- :mod:`~engine.config.schema`: every key, its type, range, default and description;
- :mod:`~engine.config.signatures`: the arguments of MLX's schedules and optimizers, as a table;
- :mod:`~engine.config.yaml_lines`: YAML read with the line of every key;
- :mod:`~engine.config.load`: chains of stages, ``--set`` overrides, where each value came from;
- :mod:`~engine.config.messages`: pydantic's errors as one line at the right place;
- :mod:`~engine.config.checks`: checks across keys, stages and ranks;
- :mod:`~engine.config.help`, :mod:`~engine.config.reference`: each key's help, the README's table;
- :mod:`~engine.config.resolved`: a stage's resolved values, as ``tuner validate`` prints them.

Importing this package loads no MLX: the config screen validates as the user types.
"""

from engine.config.checks import check_chain
from engine.config.errors import ConfigError
from engine.config.load import Source, Stage, load_config, load_stages
from engine.config.resolved import format_resolved, resolved_rows
from engine.config.schema import TrainConfig, config_to_dict

__all__ = [
    "ConfigError",
    "Source",
    "Stage",
    "TrainConfig",
    "check_chain",
    "config_to_dict",
    "format_resolved",
    "load_config",
    "load_stages",
    "resolved_rows",
]
