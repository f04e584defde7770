"""The one exception type the CLI turns into a one-line message and exit code 2, and the exit codes.

Anything a user can cause with bad input (a config, a data file, a model path) raises a
subclass of :class:`UserError` whose ``str()`` is a single line naming where the problem is.
Everything else is a bug and keeps its traceback.
"""

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
# a finished run's status -> the exit code of the process that trained it
EXIT_CODES = {"completed": 0, "early_stopped": 0, "diverged": EXIT_DIVERGED, "stopped": EXIT_INTERRUPTED}


class UserError(Exception):
    """Bad input from the user: shown as one line, exit code 2, no traceback."""


class DataError(UserError):
    """A dataset that cannot be read or understood; the message names file and line."""


def first_line(error: BaseException) -> str:
    """What a library's exception says, cut to its first line (or its type, if it says nothing)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
