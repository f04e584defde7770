"""A run's ``metrics.jsonl``: every event as one JSON line, appended and flushed as it happens, so
another process (or the app's Runs screen) can follow a run live and a finished run reads back
as the same events.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterator

from engine.events import Event, event_from_dict
from engine.files import refused

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Appends each event as one JSON line and flushes it, so readers never wait on a buffer."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE
        torn = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
        self._file = open(self.path, "a", encoding="utf-8")
        if torn:  # a killed writer left half a line: end it, so the next event starts clean
            self._file.write("\n")

    def __call__(self, event: Event) -> None:
        try:
            self._file.write(json.dumps(event.to_dict()) + "\n")
            self._file.flush()
        except OSError as e:  # a full disk, say: one line that names this file
            raise refused(e, self.path) from None

    def close(self) -> None:
        self._file.close()


def read_events(run_dir: Path) -> Iterator[Event]:
    """Events of a run, oldest first. A torn last line (a run killed mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            event = _parse_line(line)
            if event is not None:
                yield event


def _parse_line(line: str) -> Event | None:
    """One ``metrics.jsonl`` line as an event, or None when it is torn or not an event at all."""
    try:
        return event_from_dict(json.loads(line))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class EventTail:
    """Follows one run's ``metrics.jsonl`` as another process appends to it.

    It remembers how many bytes it has consumed, so each poll reads only what is new, and it
    holds back a last line that has no newline yet: the writer may be halfway through it.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[Event]:
        """Events appended since the previous call (none while the file does not exist yet)."""
        try:
            with open(self.path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self._offset:  # replaced or truncated: start over
                    self._offset, self._partial = 0, b""
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        events = (_parse_line(line.decode("utf-8", errors="replace")) for line in lines if line.strip())
        return [e for e in events if e is not None]


def fan_out(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    """One emit callback that hands every event to each sink in turn."""

    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return emit
