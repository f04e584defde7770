"""Help for config keys, read from the schema's descriptions: the one place a key is explained.

The config screen shows :func:`help_for` beside the editor, ``tuner validate --explain`` prints
it under each value, and the README's table of keys is made from the same descriptions
(:mod:`engine.config.reference`).
"""

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from engine.config.schema import TrainConfig, submodel


def schema_field(key: str) -> FieldInfo | None:
    """The schema field of ``key``; a nested key is written ``lora_parameters.rank``."""
    model: type[BaseModel] | None = TrainConfig
    *parents, leaf = key.split(".")
    for part in parents:
        field = model.model_fields.get(part)
        model = submodel(field.annotation) if field is not None else None
        if model is None:
            return None
    return model.model_fields.get(leaf)


def help_for(key: str) -> str:
    """One line on what ``key`` means; empty for a key the schema does not have."""
    field = schema_field(key)
    return field.description or "" if field is not None else ""
