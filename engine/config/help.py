"""Help for config keys, read from the schema's descriptions: the one place a key is explained.

The config screen shows :func:`help_for` beside the editor, ``tuner validate --explain`` prints
it under each value, and the README's table of keys is made from the same descriptions
(:mod:`engine.config.reference`).
"""

from pydantic.fields import FieldInfo

from engine.config.schema import model_at


def schema_field(key: str) -> FieldInfo | None:
    """The schema field of ``key``; a nested key is written ``lora_parameters.rank``."""
    *parents, leaf = key.split(".")
    model = model_at(parents)
    return model.model_fields.get(leaf) if model is not None else None


def help_for(key: str) -> str:
    """One line on what ``key`` means; empty for a key the schema does not have."""
    field = schema_field(key)
    return field.description or "" if field is not None else ""
