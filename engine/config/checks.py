"""Checks that need several values, or several stages, of the configs and nothing else.

A single value's type and range are the schema's business (:mod:`engine.config`); what is here
looks across keys or across the stages of a chain, before any model or data is loaded, so
``tuner validate``, the config screen and ``tuner train`` refuse the same things at once.
"""

from __future__ import annotations

from engine.config import Stage

SHAPE_KEYS = ("fine_tune_type", "num_layers")


def check_chain(stages: list[Stage]) -> None:
    """Refuse, before any training, a stage whose trained layers differ from the previous one's."""
    for prev, cur in zip(stages, stages[1:]):
        if "resume_adapter_file" in cur.explicit:
            continue  # the stage names its own starting point
        for key in SHAPE_KEYS:
            if getattr(prev.config, key) != getattr(cur.config, key):
                raise cur.error(
                    key,
                    f"{getattr(cur.config, key)!r} differs from stage {prev.index + 1}'s "
                    f"{getattr(prev.config, key)!r}; a stage continues the previous stage's weights, "
                    "so the trained layers must match",
                )
        if cur.config.fine_tune_type != "full":
            a, b = prev.config.lora_parameters, cur.config.lora_parameters
            for key in ("rank", "keys"):
                if getattr(a, key) != getattr(b, key):
                    raise cur.error(
                        "lora_parameters",
                        f"{key} {getattr(b, key)!r} differs from stage {prev.index + 1}'s "
                        f"{getattr(a, key)!r}; the LoRA shape must match to continue its adapters",
                    )
