"""The one exception type the CLI turns into a one-line message and exit code 2, and the exit codes.

Anything a user can cause with bad input (a config, a data file, a model path) raises a
subclass of :class:`UserError` whose ``str()`` is a single line naming where the problem is.
Everything else is a bug: the command line's boundary prints one line for it, keeps its
traceback in a log and exits with :data:`EXIT_INTERNAL_ERROR`.
"""

import errno

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERNAL_ERROR = 70  # a bug in tuner (BSD's EX_SOFTWARE): one line, the traceback in a log
EXIT_INTERRUPTED = 130
# a finished run's status -> the exit code of the process that trained it
EXIT_CODES = {"completed": 0, "early_stopped": 0, "diverged": EXIT_DIVERGED, "stopped": EXIT_INTERRUPTED}


class UserError(Exception):
    """Bad input from the user: shown as one line, exit code 2, no traceback."""


class DataError(UserError):
    """A dataset that cannot be read or understood; the message names file and line."""


class StorageError(UserError):
    """A file or folder tuner reads or writes that the file system refuses (disk full, read-only,
    a name too long, a file where a folder should be): names the path and what to do."""


# errno -> what it means for the person, and what to do about it
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space and try again",
    errno.EDQUOT: "the disk quota is used up; free some space and try again",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write, or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write, or fix its permissions",
    errno.ENAMETOOLONG: "the name is too long for the file system; choose a shorter name or path",
    errno.ENOTDIR: "part of the path is a file, not a folder; move that file or choose another path",
    errno.EEXIST: "something already exists there; move it away or choose another path",
    errno.EISDIR: "a folder is where a file should be; move it away or choose another path",
    errno.ELOOP: "the path goes round a loop of symbolic links; fix the links",
    errno.ENOENT: "no such file or folder",
    errno.EMLINK: "the folder holds too many entries; choose another folder",
    errno.EIO: "the device reported an input/output error; check the disk",
}


def storage_error(error: OSError, path=None, doing: str = "cannot write") -> StorageError:
    """One line for an OS error on ``path`` (else the error's own file name): where, and what to do."""
    where = path if path is not None else (error.filename if error.filename is not None else "")
    advice = _OS_ADVICE.get(error.errno, error.strerror or first_line(error))
    return StorageError(f"{where}: {doing}: {advice}" if where != "" else f"{doing}: {advice}")


def is_storage_error(error: BaseException) -> bool:
    """An OS error the person can act on (space, permissions, names), not a bug in tuner."""
    return isinstance(error, OSError) and error.errno in _OS_ADVICE


def first_line(error: BaseException) -> str:
    """What a library's exception says, cut to its first line (or its type, if it says nothing).

    A first line that ends in a colon introduces what follows ("... from one of:" and a list), so
    then the lines are joined into one, cut at 300 characters.
    """
    text = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not text:
        return type(error).__name__
    if text[0].endswith(":") and len(text) > 1:
        joined = " ".join(text)
        return joined if len(joined) <= 300 else joined[:299] + "…"
    return text[0]
