"""A config mistake as one line that names the file, line and key where the user can fix it."""

import re

from engine.errors import UserError


def locate(file: str | None, line: int | None, key: str | None) -> str:
    """``file:line: key`` with the missing parts left out (a line without a file means nothing)."""
    place = file if file is None or line is None else f"{file}:{line}"
    return ": ".join(part for part in (place, key) if part)


class ConfigError(UserError):
    """A config mistake, pinned to the file, line and key where the user can fix it.

    ``str()`` is always one line, so the CLI and the TUI status bar can show it as is.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None, key: str | None = None):
        self.message = re.sub(r"\s*\n\s*", " ", str(message)).strip()
        self.file, self.line, self.key = file, line, key
        prefix = locate(file, line, key)
        super().__init__(f"{prefix}: {self.message}" if prefix else self.message)
