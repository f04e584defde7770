"""Chains of config files in, one validated and provenance-tracked ``Stage`` per file out.

A chain of files is a chain of *stages*: each stage inherits what the previous one resolved
unless it sets the key itself, so a second file only has to say what changes. ``--set``
overrides apply to every stage. Every key remembers where its value came from, because "why is
the learning rate 2e-4?" should have a one-glance answer in ``tuner validate``.
"""

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import ValidationError

from engine.config.errors import ConfigError, locate
from engine.config.messages import config_error
from engine.config.schema import TrainConfig
from engine.config.sweep import Axis, Point, apply_point, find_axes, grid, refuse_in_chain
from engine.config.yaml_lines import KeyPath, YamlLoader, dotted, inline, read_yaml, record_lines


@dataclass(frozen=True)
class Source:
    """Where a value came from, so ``tuner validate`` can explain every number it shows.

    ``stage`` means inherited from an earlier file of the chain (``note`` says which stage);
    ``derived`` means computed from another key (``note`` says which, file/line say where that was set).
    """

    kind: Literal["default", "file", "stage", "override", "derived"]
    file: str | None = None
    line: int | None = None
    note: str | None = None

    def __str__(self) -> str:
        if self.kind == "default":
            return f"default ({self.note})" if self.note else "default"
        if self.kind == "override":
            return "--set"
        place = locate(self.file, self.line, None)
        return place if self.kind == "file" else f"{self.note} ({place})"


@dataclass(frozen=True)
class Stage:
    """One file of a chain, resolved: its config and where each of its values came from."""

    index: int  # 0-based position in the chain
    path: Path  # the YAML file, as given
    config: TrainConfig
    sources: dict[str, Source]  # top-level key -> Source, for every field (defaults too)
    explicit: frozenset[str]  # top-level keys this stage's own file (or --set) set

    def _origin(self, key: str) -> tuple[str, int | None]:
        source = self.sources.get(re.split(r"[.\[]", key, maxsplit=1)[0])
        if source is None or source.file is None:
            return str(self.path), None
        return source.file, source.line

    def where(self, key: str) -> str:
        """``file:line: key`` for problems found later, e.g. a data folder that does not exist."""
        return locate(*self._origin(key), key)

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError located where ``key`` was set (the stage file when it is a default)."""
        return ConfigError(message, *self._origin(key), key)


_PATH_KEYS = ("model", "data", "resume_adapter_file")
_OTHER_LENGTH = {"iters": "epochs", "epochs": "iters"}


def _resolve_paths(data: dict, folder: Path) -> None:
    """Make relative paths that exist next to the config absolute, so configs work from any cwd.

    Anything else (an HF id, a cwd-relative path, ``builtin:...``) is left as written.
    """
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value and not value.startswith("builtin:") and not Path(value).is_absolute():
            candidate = folder / value
            if candidate.exists():
                data[key] = str(candidate.resolve())


def _parse_override(text: str) -> tuple[KeyPath, Any]:
    """``lora_parameters.rank=16`` -> (("lora_parameters", "rank"), 16); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected key=value, got {text!r}", "--set")
    path = tuple(key.split("."))
    if not all(path):
        raise ConfigError("empty part in a dotted key", "--set", key=key)
    try:
        if (node := yaml.compose(raw, Loader=YamlLoader)) is not None:
            record_lines(node, {}, "--set", path)  # the checks a file's values get
        value = yaml.load(raw, Loader=YamlLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read value {raw!r}: {getattr(e, 'problem', None) or e}", "--set", key=key) from None
    return path, value


class _Chain:
    """The running merge of a chain: values, who set each top-level key, where each key path was written."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.origins: dict[str, Source] = {}
        self.lines: dict[KeyPath, tuple[str, int | None]] = {}

    def inherit(self, stage_number: int) -> None:
        """What the previous file set is from now on inherited from stage ``stage_number`` (1-based)."""
        self.origins = {
            key: Source("stage", s.file, s.line, f"stage {stage_number}") if s.kind == "file" else s
            for key, s in self.origins.items()
        }

    def _replace(self, key: str, value: Any, source: Source) -> None:
        other = _OTHER_LENGTH.get(key)
        if other and value is not None:  # a stage that sets its length in one unit drops the other
            self.values.pop(other, None)
            self.origins.pop(other, None)
        self.values[key] = value
        self.origins[key] = source
        self.lines = {path: where for path, where in self.lines.items() if path[0] != key}

    def set_from_file(self, data: dict, file_lines: dict[KeyPath, int], label: str) -> None:
        for key, value in data.items():
            self._replace(key, value, Source("file", label, file_lines.get((key,))))
        self.lines.update((path, (label, line)) for path, line in file_lines.items())

    def set_override(self, path: KeyPath, value: Any) -> None:
        top, *inner = path
        if not inner:
            self._replace(top, value, Source("override", "--set"))
        else:
            if not isinstance(self.values.get(top), dict):
                if self.values.get(top) is not None:
                    raise ConfigError(f"cannot set a key inside a {type(self.values[top]).__name__}", "--set", key=dotted(path))
                self.values[top] = {}
            target = self.values[top] = copy.deepcopy(self.values[top])
            for part in inner[:-1]:
                if not isinstance(target.get(part), dict):
                    target[part] = {}
                target = target[part]
            target[inner[-1]] = value
            self.origins[top] = Source("override", "--set")
        self.lines = {p: w for p, w in self.lines.items() if p[: len(path)] != path}
        for end in range(1, len(path) + 1):
            self.lines.setdefault(path[:end], ("--set", None))
        self.lines[path] = ("--set", None)


def _sources(config: TrainConfig, origins: dict[str, Source]) -> dict[str, Source]:
    """Provenance of every field; an unset prompt-loss weight points at the mask_prompt it follows."""
    sources = {key: origins.get(key, Source("default")) for key in TrainConfig.model_fields}
    if config.prompt_loss_weight is None:
        mask = sources["mask_prompt"]
        if mask.kind == "default":
            sources["prompt_loss_weight"] = Source("default", note=f"mask_prompt: {inline(config.mask_prompt)}")
        else:
            sources["prompt_loss_weight"] = Source("derived", mask.file, mask.line, "from mask_prompt")
    return sources


def _merged(paths: Sequence[str | Path], overrides: Sequence[str], texts: Mapping[str, str] | None):
    """Each file of a chain merged onto the ones before it, with the overrides on top: yields
    (path, label, the file's own keys, the chain) per stage, before anything is validated."""
    if not paths:
        raise ConfigError("no config file given")
    parsed = [_parse_override(text) for text in overrides]
    set_keys = {path[0] for path, _ in parsed}
    if {"iters", "epochs"} <= set_keys:
        raise ConfigError("set iters or epochs, not both", "--set", key="epochs")
    chain = _Chain()
    for index, given in enumerate(paths):
        path, label = Path(given), str(given)
        data, file_lines = read_yaml(path, label, (texts or {}).get(label))
        if data.get("iters") is not None and data.get("epochs") is not None:
            later = max(("iters", "epochs"), key=lambda key: file_lines[(key,)])
            raise ConfigError("set iters or epochs, not both", label, file_lines[(later,)], later)
        _resolve_paths(data, path.parent)
        chain.inherit(index)
        chain.set_from_file(data, file_lines, label)
        for key_path, value in parsed:
            chain.set_override(key_path, value)
        if "model" not in chain.values:
            raise ConfigError("required key is missing", label, key="model")
        yield path, label, frozenset(key for key in data if isinstance(key, str)) | set_keys, chain


def _stage(index: int, path: Path, label: str, explicit: frozenset[str], chain: _Chain,
           values: dict, lines: dict) -> Stage:
    try:
        config = TrainConfig.model_validate(values)
    except ValidationError as e:
        raise config_error(e, values, lines, label) from None
    return Stage(index, path, config, _sources(config, chain.origins), explicit)


def load_stages(
    paths: Sequence[str | Path], overrides: Sequence[str] = (), texts: Mapping[str, str] | None = None
) -> list[Stage]:
    """Load a chain of config files; each stage inherits the previous stage's keys unless it sets them.

    ``texts`` maps a path (as given) to content to use instead of the file's, so an editor can
    validate what it holds before it is saved.

    Inheritance is per top-level key: a stage that writes ``lora_parameters`` replaces the whole
    mapping. The ``--set`` overrides (``key=value`` or ``a.b=value``, values read as YAML) apply to
    EVERY stage, after that stage's file. Checks across keys or stages are
    :func:`engine.config.checks.check_chain`'s. A config with lists of values is a sweep
    (:func:`load_sweep`), refused here in one line.
    """
    stages = []
    for index, (path, label, explicit, chain) in enumerate(_merged(paths, overrides, texts)):
        if axes := find_axes(chain.values, chain.lines, label):
            if len(paths) > 1:
                raise refuse_in_chain(axes, len(paths))
            file, line = axes[0].places[0]
            raise ConfigError(f"a list of values makes a sweep of {math.prod(len(a.values) for a in axes)} runs, "
                              "which tuner train "
                              "and tuner validate run and list; here one value is expected", file, line, axes[0].key)
        stages.append(_stage(index, path, label, explicit, chain, chain.values, chain.lines))
    return stages


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its values and its own, fully validated, stage."""

    point: Point
    stage: Stage

    @property
    def name(self) -> str:
        return self.point.name


@dataclass(frozen=True)
class Sweep:
    """A config with lists of values, expanded: the swept keys and one stage per point."""

    path: Path
    axes: tuple[Axis, ...]
    points: tuple[SweepPoint, ...]

    def values(self, key: str) -> tuple:
        """The values the sweep tries for the dotted ``key``; empty when it does not vary it."""
        return next((axis.values for axis in self.axes if axis.key == key), ())

    def listing(self) -> list[str]:
        """What ``tuner validate`` shows of it: a heading, then per point its run name and values."""
        keys = " x ".join(f"{len(axis.values)} {axis.key}" for axis in self.axes)
        width = max(len(point.name) for point in self.points)
        return [f"# sweep of {len(self.points)} runs ({keys}), one after another:"] + [
            f"  {point.name:<{width}}  " + "  ".join(f"{key}: {inline(value)}" for key, value in point.point.as_dict().items())
            for point in self.points]


def load_sweep(paths: Sequence[str | Path], overrides: Sequence[str] = (),
               texts: Mapping[str, str] | None = None) -> Sweep | None:
    """The sweep a single config file (with ``--set`` overrides) describes, every point validated as
    an ordinary config; None when no key holds a list (load it with :func:`load_stages`).

    Lists in a chain of several files are refused in one line."""
    for path, label, explicit, chain in _merged(paths, overrides, texts):  # one chain, merged stage by stage
        if (axes := find_axes(chain.values, chain.lines, label)) and len(paths) > 1:
            raise refuse_in_chain(axes, len(paths))
    if not axes:
        return None
    points = []
    for point in grid(axes):
        values, lines = apply_point(chain.values, chain.lines, point)
        points.append(SweepPoint(point, _stage(0, path, label, explicit, chain, values, lines)))
    return Sweep(path, tuple(axes), tuple(points))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Stage:
    """A single config file as a one-stage chain."""
    return load_stages([path], overrides)[0]
