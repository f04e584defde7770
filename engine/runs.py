"""Run folders on disk: where a run's config, metrics and adapters live, written so nothing is lost.

Every file but ``metrics.jsonl`` is written to a temporary file and renamed into place, so a
crash mid-write leaves the previous version intact. ``metrics.jsonl`` is append-only and flushed
after every event, so another process (or the TUI's Runs screen) can follow a run live.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from .events import Event, event_from_dict

METRICS_FILE = "metrics.jsonl"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def atomic_save_safetensors(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    """``mx.save_safetensors`` through a temporary file and a rename."""
    import mlx.core as mx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mlx appends ".safetensors" when the name lacks it, so the temp name keeps the suffix.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.safetensors")
    try:
        mx.save_safetensors(str(tmp), arrays, metadata=metadata or {})
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_run_dir(runs_dir: str | Path, name: str | None, stem: str) -> Path:
    """Create a fresh, unique run folder: ``runs/<name>`` or ``runs/<stem>-<timestamp>``."""
    base = Path(runs_dir)
    base.mkdir(parents=True, exist_ok=True)
    label = name or f"{_slug(stem)}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base / label, 2
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            candidate, n = base / f"{label}-{n}", n + 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


class MetricsWriter:
    """Appends each event as one JSON line and flushes it, so readers never wait on a buffer."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE
        self._file = open(self.path, "a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        self._file.write(json.dumps(event.to_dict()) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_events(run_dir: Path) -> Iterator[Event]:
    """Events of a run, oldest first. A torn last line (a run killed mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                yield event_from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue


def fan_out(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    """One emit callback that hands every event to each sink in turn."""

    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return emit
