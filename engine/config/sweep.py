"""Sweeps: a config that lists several values for a key describes a grid of runs.

Only the keys whose best value is found by trying several (``SWEEP_KEYS``) may hold a list; any
other list where one value is expected stays the ordinary type error. The grid is expanded
before the schema validates anything, so each point is checked as the ordinary config it is, and
a bad value inside a list is reported at the line of that item.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

from engine.config.errors import ConfigError
from engine.config.yaml_lines import KeyPath, dotted, show

# the keys a sweep may vary -> the short name a run folder of the grid is named with
SWEEP_KEYS: dict[KeyPath, str] = {
    ("prompt_loss_weight",): "plw",
    ("seed",): "seed",
    ("learning_rate",): "lr",
    ("lora_parameters", "rank"): "rank",
}
MAX_POINTS = 64  # more runs than anyone waits for on one machine; a typo like [0, 0.01, ...] x 5 keys

Where = tuple[str, "int | None"]


@dataclass(frozen=True)
class Axis:
    """One swept key: its values in the order written, and where each was written."""

    path: KeyPath
    values: tuple
    places: tuple[Where, ...]

    @property
    def key(self) -> str:
        return dotted(self.path)


@dataclass(frozen=True)
class Point:
    """One run of the grid: a value per axis (in axis order)."""

    values: tuple[tuple[KeyPath, Any, Where], ...]

    @property
    def name(self) -> str:
        """The run folder's name: the short key and value of each axis, e.g. ``plw0.01-seed2``."""
        return "-".join(f"{SWEEP_KEYS[path]}{_number(value)}" for path, value, _ in self.values)

    def as_dict(self) -> dict[str, Any]:
        """Dotted key -> value, as the manifest and ``tuner validate`` show them."""
        return {dotted(path): value for path, value, _ in self.values}


def _number(value: Any) -> str:
    """A value as a run name shows it: ``0.01``, ``1e-05``; short, but never two values as one."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def _get(values: dict, path: KeyPath) -> Any:
    node: Any = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def find_axes(values: dict, lines: dict[KeyPath, Where], label: str) -> list[Axis]:
    """The swept keys of a merged config, in ``SWEEP_KEYS`` order; an empty list or a value
    listed twice is refused at its line."""
    axes = []
    for path in SWEEP_KEYS:
        given = _get(values, path)
        if not isinstance(given, list):
            continue
        file, line = lines.get(path, (label, None))
        if not given:
            raise ConfigError("an empty list: give one value, or several to sweep over", file, line, dotted(path))
        places = tuple(lines.get((*path, i), (file, line)) for i in range(len(given)))
        names = [_number(value) for value in given]
        for i, value in enumerate(given):
            if names[i] in names[:i]:  # 1 and 1.0 too: one run folder name for two runs
                raise ConfigError(f"{show(value)} is listed twice in the sweep", *places[i], dotted(path))
        axes.append(Axis(path, tuple(given), places))
    return axes


def grid(axes: list[Axis]) -> list[Point]:
    """Every combination of the axes' values, capped at MAX_POINTS. The last axis varies fastest,
    except the seed, which varies slowest: every value is tried once before any is repeated with
    another seed, so a sweep cut short (or watched while it trains) already compares them all."""
    total = 1
    for axis in axes:
        total *= len(axis.values)
    if total > MAX_POINTS:
        sizes = " x ".join(f"{len(a.values)} {a.key}" for a in axes)
        file, line = axes[-1].places[0]
        raise ConfigError(f"the sweep has {total} runs ({sizes}); at most {MAX_POINTS} fit one sweep: "
                          "list fewer values", file, line, axes[-1].key)
    order = sorted(axes, key=lambda a: a.path != ("seed",))  # the seed outermost; stable for the rest
    points = []
    for combo in itertools.product(*(zip(a.values, a.places) for a in order)):
        picked = dict(zip(order, combo))  # axis -> (value, where)
        points.append(Point(tuple((axis.path, *picked[axis]) for axis in axes)))
    return points


def apply_point(values: dict, lines: dict[KeyPath, Where], point: Point) -> tuple[dict, dict[KeyPath, Where]]:
    """The merged config with each swept list replaced by the point's value, and the lines with
    that key pointing at the list item the value came from (so a bad item names its own line)."""
    values = copy.deepcopy(values)
    lines = dict(lines)
    for path, value, where in point.values:
        node = values
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        lines = {p: w for p, w in lines.items() if p[: len(path)] != path or len(p) == len(path)}
        lines[path] = where
    return values, lines


def refuse_in_chain(axes: list[Axis], stages: int) -> ConfigError:
    """The one line for lists of values in a chain of several files."""
    axis = axes[0]
    file, line = axis.places[0]
    return ConfigError(f"a list of values (a sweep) works in a single config file, not in a chain of {stages}; "
                       "sweep the stage's config on its own", file, line, axis.key)
