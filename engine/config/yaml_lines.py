"""YAML read the way configs need it: mlx-lm's floats, the line of every key, and no surprises.

PyYAML alone keeps the last of two equal keys, expands aliases without limit and forgets where
each value was written. Here every key's line is recorded, so any later mistake can name it.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from engine.config.errors import ConfigError
from engine.files import not_a_regular_file


class YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-5`` as a float, as mlx-lm does (YAML 1.1 wants ``1.0e-5``).

    A subclass, so the process-wide ``yaml.SafeLoader`` stays as other code expects it.
    """


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    """("hf_dataset", 0, "path") -> "hf_dataset[0].path"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


MAX_NODES = 100_000  # YAML aliases can expand a few lines into billions of values
_STR_TAG, _MERGE_TAG = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_OCTAL = re.compile(r"^[-+]?0[0-7_]+$")


def _base60(text: str) -> float:
    sign = -1 if text.startswith("-") else 1
    value = 0.0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        value = value * 60 + float(part)
    return sign * value


def _yaml11_surprise(node: yaml.ScalarNode) -> str | None:
    """What a plain YAML 1.1 number means that nobody writing it means: ``1:30`` is 90 (base 60),
    ``010`` is 8 (octal). Such a number is refused; a quoted one is text, as written."""
    text = node.value
    if node.style is not None or node.tag not in (_INT_TAG, _FLOAT_TAG):
        return None
    if ":" in text:
        value = _base60(text)
        shown = f"{value:g}" if node.tag == _FLOAT_TAG else f"{value:.0f}"
        return f"{text} is a YAML 1.1 base-60 number ({shown}); write {shown} if that is meant, or quote '{text}'"
    if node.tag == _INT_TAG and _OCTAL.match(text) and text.strip("+-0_"):
        octal = int(text.replace("_", ""), 8)
        return f"{text} is a YAML 1.1 octal number ({octal}); write {octal} or {text.lstrip('+-0_')} without the leading 0"
    return None


def record_lines(root: yaml.Node, lines: dict[KeyPath, int], file: str, at: KeyPath = ()) -> None:
    """Note the 1-based line of every key (and list item) in the document.

    PyYAML silently keeps the last of two equal keys, which hides edits; we refuse them instead.
    Aliases are followed, so we also refuse a value that contains itself and aliases that expand
    to more than ``MAX_NODES`` values (a "billion laughs"), before anything walks the data.
    """
    visits = 0

    def walk(node: yaml.Node, path: KeyPath, parents: tuple[yaml.Node, ...]) -> None:
        nonlocal visits
        visits += 1
        line = node.start_mark.line + 1
        if visits > MAX_NODES:
            raise ConfigError(f"more than {MAX_NODES:,} values (YAML aliases that expand too far?)", file, line)
        if any(node is parent for parent in parents):
            raise ConfigError("a value contains itself (a recursive YAML alias)", file, line, dotted(path) or None)
        parents = (*parents, node)
        if isinstance(node, yaml.ScalarNode) and (surprise := _yaml11_surprise(node)) is not None:
            line = None if file == "--set" else line  # a --set value has no line
            raise ConfigError(surprise, file, line, dotted(path) or None)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key_path = (*path, key_node.value)
                key_line = key_node.start_mark.line + 1
                if key_node.tag not in (_STR_TAG, _MERGE_TAG):  # 1:, true:, null: are keys only to YAML
                    message = f"a key must be a name, got {key_node.value!r}"
                    raise ConfigError(message, file, key_line, dotted(path) or None)
                if key_path in lines:
                    message = f"duplicate key (first set on line {lines[key_path]})"
                    raise ConfigError(message, file, key_line, dotted(key_path))
                lines[key_path] = key_line
                walk(value_node, key_path, parents)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index), parents)

    walk(root, at, ())


def _file_text(path: Path, label: str) -> str:
    if problem := not_a_regular_file(path):  # a FIFO blocks for ever, a device never ends
        raise ConfigError(f"cannot read config file: {problem}", label)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", label) from None
    except UnicodeDecodeError as e:
        line = e.object.count(b"\n", 0, e.start) + 1
        message = f"not UTF-8 text (byte 0x{e.object[e.start]:02x}); save it as UTF-8"
        raise ConfigError(message, label, line) from None
    except OSError as e:
        raise ConfigError(f"cannot read config file ({e})", label) from None


def read_yaml(path: Path, label: str, text: str | None = None) -> tuple[dict, dict[KeyPath, int]]:
    """The file's top-level mapping and the line of each key path in it.

    ``text``, when given, stands in for the file's content (an editor's unsaved buffer).
    """
    if text is None:
        text = _file_text(path, label)
    loader = None
    lines: dict[KeyPath, int] = {}
    try:
        loader = YamlLoader(text)  # refuses control characters such as NUL right away
        node = loader.get_single_node()
        if node is not None:
            record_lines(node, lines, label)  # before constructing: merge keys (<<) rewrite the node tree
        data = {} if node is None else loader.construct_document(node)
    except yaml.reader.ReaderError as e:
        problem = str(e).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", label, text.count("\n", 0, e.position) + 1) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"invalid YAML: {problem}", label, mark.line + 1 if mark else None) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", label) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of keys to values, got a {type(data).__name__}", label, 1)
    return data, lines


def inline(value: Any) -> str:
    """A value the way it would be written in YAML, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9).strip()
    return text.removesuffix("\n...")


def show(value: Any) -> str:
    """A user's value inside an error message: strings quoted so that '' and ' 5' are visible."""
    return repr(value) if isinstance(value, str) else inline(value)
