"""Who owns a run folder: the one process that may train in it.

Two processes training one folder interleave its checkpoints and its ``metrics.jsonl``, and the
second one's ``process.json`` hides the first from ``tuner control``. So the process that trains
a run holds an exclusive ``flock`` on ``RUN_DIR/.lock`` from the moment it opens the folder until
it lets go. The operating system drops that lock when the process ends, however it ends (SIGKILL
included), so a lock file left behind by a dead process is stale by construction and the next
owner simply takes it over. ``flock`` behaves the same on macOS and Linux, and two opens of the
file in one process conflict too, so the app cannot resume a run it is training itself.

The lock file and ``process.json`` (:mod:`engine.runs.folder`) name the owner (pid and start
time) for messages and listings. Taking the folder also clears what an earlier owner killed
mid-save left there: the temporary files of :func:`engine.files.atomic_write`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from pathlib import Path

import psutil

from engine.errors import UserError
from engine.runs.folder import clear_process_record, live_pid, process_running, write_process_record

LOCK_FILE = ".lock"
# engine.files.atomic_write's temporary names: .<stem>.<pid>.tmp<suffix>
TEMP_FILE = re.compile(r"^\..+\.(\d+)\.tmp(\.\w+)?$")
_TRIES = 10  # a moment's grace: another process may be probing the lock (see owner_pid)
# file systems that have no flock (some network mounts): the process record is all there is
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


class RunBusy(UserError):
    """Another process trains the run folder: one line naming it and that process."""

    def __init__(self, run_dir: Path, pid: int | None, what: str = ""):
        who = f"process {pid}" if pid is not None and pid > 0 else "another process"
        super().__init__(f"{run_dir}: still training in {who}{what}")


class RunLock:
    """The lock on a run folder held by the process training it; :meth:`take`, then :meth:`release`."""

    def __init__(self, run_dir: Path, fd: int, removed: list[Path]):
        self.run_dir = run_dir
        self.messages: tuple[str, ...] = ()  # what a run shows as notices: the debris taking it cleared
        if removed:
            names = ", ".join(str(p.relative_to(run_dir)) for p in removed[:3])
            more = f" and {len(removed) - 3} more" if len(removed) > 3 else ""
            self.messages = (f"removed {len(removed)} temporary file(s) an interrupted save left: {names}{more}",)
        self._fd: int | None = fd

    @classmethod
    def take(cls, run_dir: Path) -> RunLock:
        """Own ``run_dir``, or raise :class:`RunBusy` naming the process that does.

        A live ``process.json`` of another process refuses too: a trainer from before the lock.
        """
        run_dir = Path(run_dir)
        path = run_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"{path}: cannot open the run folder's lock ({e.strerror}); "
                            "check that the folder is writable") from None
        if not _lock(fd, fcntl.LOCK_EX):
            os.close(fd)
            raise RunBusy(run_dir, owner_pid(run_dir))
        try:
            if (pid := live_pid(run_dir)) not in (None, os.getpid()):
                raise RunBusy(run_dir, pid)
            me = psutil.Process()
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": me.pid, "created": me.create_time()}).encode(), 0)
            write_process_record(run_dir)
        except BaseException:
            _unlock(fd)
            raise
        return cls(run_dir, fd, remove_temp_files(run_dir))

    def release(self) -> None:
        """Let go: the record goes first, so nobody reads it as alive once the lock is free."""
        if self._fd is None:
            return
        clear_process_record(self.run_dir)
        _unlock(self._fd)
        self._fd = None


def owner_pid(run_dir: Path) -> int | None:
    """The pid holding ``run_dir``'s lock, when one does; None when the folder is free.

    Probed with a shared lock taken and dropped at once (which a trainer taking the folder at
    that moment waits out, see ``_TRIES``). A holder whose pid cannot be read is reported as -1.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return live_pid(run_dir)
    try:
        if _lock(fd, fcntl.LOCK_SH, tries=1):
            return live_pid(run_dir)
        return _holder(fd) or live_pid(run_dir) or -1
    finally:
        os.close(fd)


def _holder(fd: int) -> int | None:
    try:
        record = json.loads(os.pread(fd, 4096, 0))
        identity = int(record["pid"]), float(record["created"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return identity[0] if identity[0] > 0 and process_running(identity) else None


def _lock(fd: int, how: int, tries: int = _TRIES) -> bool:
    for attempt in range(tries):
        try:
            fcntl.flock(fd, how | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.02)
        except OSError as e:
            if e.errno in _NO_FLOCK:
                return True
            raise
    return False


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files that saves killed half-way left in ``run_dir`` (any depth).

    Only names of :func:`engine.files.atomic_write`'s pattern, and only when the process that
    wrote one is gone (or is this one): a live writer's file may be about to be renamed.
    """
    removed = []
    for folder, _, names in os.walk(run_dir):
        for name in names:
            found = TEMP_FILE.match(name)
            if found is None or _writer_alive(int(found[1])):
                continue
            path = Path(folder) / name
            try:
                if path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue  # not ours to remove after all: leave it
    return removed


def _writer_alive(pid: int) -> bool:
    """Whether the process that named a temporary file still runs (this one does not count)."""
    try:
        return pid != os.getpid() and psutil.pid_exists(pid)
    except (ValueError, OverflowError):  # no process can have that pid
        return False
