"""A stage's resolved values as rows: what ``tuner validate`` prints and the config screen lists."""

from engine.config.help import help_for
from engine.config.load import Stage
from engine.config.schema import config_to_dict
from engine.config.yaml_lines import inline


def resolved_rows(stage: Stage) -> list[tuple[str, str, str]]:
    """(key, value as one-line YAML, source) for every key, in schema order."""
    return [
        (key, inline(value), str(stage.sources[key])) for key, value in config_to_dict(stage.config).items()
    ]


def format_resolved(stage: Stage, explain: bool = False) -> str:
    """``tuner validate``'s table: one ``key  value  source`` line per key, values as YAML.

    ``explain`` adds each key's help on an indented line of its own below it.
    """
    rows = resolved_rows(stage)
    key_width = max(len(key) for key, _, _ in rows)
    value_width = min(max(len(value) for _, value, _ in rows), 40)  # a long path may push its source right
    lines = []
    for key, value, source in rows:
        lines.append(f"{key:<{key_width}}  {value:<{value_width}}  {source}")
        if explain:
            lines.append(f"    {help_for(key)}")
    return "\n".join(lines)
