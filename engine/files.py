"""Files written so that a crash never leaves half of one, and where tuner keeps its cache.

Every file tuner writes except the append-only ``metrics.jsonl`` goes through
:func:`atomic_write`: the content lands in a temporary file in the same folder, is flushed to
disk, then renamed over the target in one step, so a reader (or a run killed mid-write) sees
either the old file or the new one. The new file keeps the old one's permissions (a config a
person made group-readable stays so); a file that did not exist gets the umask's, as ``open``
would give it.

The file system's refusals (disk full, read-only, a name too long, a file where a folder should
be) leave these helpers as a :class:`~engine.errors.StorageError` naming the target: one line
and exit code 2 for the person, never a traceback; the temporary file is removed and the old
file, if any, is left as it was.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

from engine.errors import StorageError, storage_error


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Let ``write(tmp)`` fill a temporary file beside ``path``, then rename it into place.

    The temporary name keeps ``path``'s suffix (MLX's safetensors writer appends one when a name
    lacks it) and starts with a dot, so folder listings pass over it. Its mode is set before the
    rename: the existing file's, else the umask's (whatever mode ``write`` created it with).
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a name too long, a file in the path: there is no temporary file to remove
        if isinstance(e, OSError):
            raise refused(e, path) from None
        raise


def make_folder(folder: Path) -> Path:
    """``folder`` and its parents, made where missing; an OS refusal is a :class:`StorageError`."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise refused(e, folder, "cannot make this folder") from None
    return Path(folder)


def staging_folder(target: Path) -> Path:
    """An empty hidden folder beside ``target`` (same file system), to build ``target`` in and
    rename into place, so a crash never leaves half of it where a reader would find it."""
    import tempfile

    make_folder(target.parent)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as e:
        raise refused(e, target.parent) from None


def refused(error: OSError, path: Path, doing: str = "cannot write") -> StorageError:
    """:func:`engine.errors.storage_error`, plus how to move tuner's cache where ``path`` is in it."""
    problem = storage_error(error, path, doing)
    try:
        in_cache = Path(path).absolute().is_relative_to(cache_root().absolute())
    except (StorageError, OSError):  # no home folder to find the cache in: say so below
        in_cache = True
    if in_cache:
        return StorageError(f"{problem} (tuner's cache: set TUNER_CACHE to use another folder)")
    return problem


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (a dangling or looping link, a folder, a FIFO, a
    device), or None when it is a regular file or does not exist at all.

    Asked before opening: a FIFO blocks ``open`` forever and ``/dev/zero`` never ends.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if not os.path.islink(path):
            return None if e.errno == errno.ENOENT else e.strerror
        if e.errno == errno.ELOOP:
            return "a symbolic link that goes round a loop of links"
        return f"a symbolic link to {os.readlink(path)}, which does not exist"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    kinds = {stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    kind = next((name for test, name in kinds.items() if test(mode)), "not a regular file")
    return f"{kind}, not a regular file; tuner reads regular files only"


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
    if env:
        return Path(env)
    try:
        return Path.home() / ".cache" / "tuner"
    except RuntimeError:  # no HOME and no password entry
        raise StorageError("no home folder to keep tuner's cache in: set HOME, or TUNER_CACHE to a writable folder") from None


def atomic_save_safetensors(path: Path, arrays: dict, metadata: dict | None = None) -> None:
    """``mx.save_safetensors`` through :func:`atomic_write`.

    MLX is imported here, not at the top, so that the base layer stays free of it: importing
    ``engine.events`` or ``engine.config`` must not load MLX (the config screen validates YAML
    without it).
    """
    import mlx.core as mx

    def write(tmp: Path) -> None:
        try:
            mx.save_safetensors(str(tmp), arrays, metadata=metadata or {})
        except RuntimeError as e:  # MLX's I/O errors carry no errno: find it by writing ourselves
            if not any(word in str(e) for word in ("[write]", "open file", "Unable to write")):
                raise
            _probe_write(tmp)
            raise StorageError(f"{path}: cannot write ({e}); check the free space and permissions there") from None

    atomic_write(path, write)


def _probe_write(tmp: Path) -> None:
    """Write a few bytes to ``tmp`` and sync them, so that the OS error MLX hid is raised as one."""
    with open(tmp, "wb") as f:
        f.write(b"\0" * 4096)
        f.flush()
        os.fsync(f.fileno())
