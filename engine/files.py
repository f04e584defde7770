"""Files written so that a crash never leaves half of one, and where tuner keeps its cache.

Every file tuner writes except the append-only ``metrics.jsonl`` goes through
:func:`atomic_write`: the content lands in a temporary file in the same folder, is flushed to
disk, then renamed over the target in one step, so a reader (or a run killed mid-write) sees
either the old file or the new one. The new file keeps the old one's permissions (a config a
person made group-readable stays so); a file that did not exist gets the umask's, as ``open``
would give it.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write(tmp)`` fill a temporary file beside ``path``, then rename it into place.

    The temporary name keeps ``path``'s suffix (MLX's safetensors writer appends one when a name
    lacks it) and starts with a dot, so folder listings pass over it. Its mode is set before the
    rename: the existing file's, else the umask's (whatever mode ``write`` created it with).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process' umask, read without changing it where Linux tells it (``os.umask`` can only
    be read by setting it, which another thread could see for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def cache_root() -> Path:
    """``$TUNER_CACHE`` if set, else ``~/.cache/tuner``: built models, imports, measurements."""
    env = os.environ.get("TUNER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tuner"


def atomic_save_safetensors(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    """``mx.save_safetensors`` through :func:`atomic_write`.

    MLX is imported here, not at the top, so that the base layer stays free of it: importing
    ``engine.events`` or ``engine.config`` must not load MLX (the config screen validates YAML
    without it).
    """
    import mlx.core as mx

    atomic_write(path, lambda tmp: mx.save_safetensors(str(tmp), arrays, metadata=metadata or {}))
