"""The chain of config files the app edits and trains, and which stage of it is open.

One object, made by the app and handed to the screens that need it: the Config screen opens,
saves as and switches stages through it, the Data screen asks which files lead to the open
stage, and starting a run takes every file. No screen keeps its own copy of the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ConfigChain:
    """Config files in stage order (a single config is a chain of one) and the open stage."""

    def __init__(self, paths: Sequence[str | Path], index: int = 0):
        if not paths:
            raise ValueError("a chain holds at least one config file")
        if not -len(paths) <= index < len(paths):
            raise IndexError(f"stage {index} of a chain of {len(paths)}")
        self._paths = [Path(path) for path in paths]
        self._index = index % len(paths)  # negative counts from the end, as in a list

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every stage's file, first stage first."""
        return tuple(self._paths)

    @property
    def index(self) -> int:
        """The open stage, counted from 0."""
        return self._index

    @property
    def current(self) -> Path:
        """The open stage's file."""
        return self._paths[self._index]

    def __len__(self) -> int:
        return len(self._paths)

    def up_to_current(self) -> tuple[Path, ...]:
        """The files that make up the open stage: it inherits the keys of the stages before it."""
        return tuple(self._paths[: self._index + 1])

    def open(self, path: str | Path) -> None:
        """Put another file in the open stage's place (Open, Save as, a sample)."""
        self._paths[self._index] = Path(path)

    def step(self, delta: int) -> bool:
        """Open the stage ``delta`` places on; False (and nothing changes) past either end."""
        target = self._index + delta
        if not 0 <= target < len(self._paths):
            return False
        self._index = target
        return True
