"""A config mistake as one line that names the file, line and key where the user can fix it."""

import re

from engine.errors import UserError


def locate(file: str | None, line: int | None, key: str | None) -> str:
    """``file:line: key`` with the missing parts left out (a line without a file means nothing)."""
    place = file if file is None or line is None else f"{file}:{line}"
    return ": ".join(part for part in (place, key) if part)


LONG = 160  # characters of one word (a path, a value) that a message shows in full
KEEP = 60  # characters kept at each end of a longer one


def readable(text: str) -> str:
    """``text`` fit for one line of a terminal: invisible and control characters escaped (a stray
    byte-order mark shows as ``\\ufeff``), each word longer than ``LONG`` characters cut in the
    middle, and a long word said again (a path repeated) replaced by "(the same)"."""
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    seen: set[str] = set()
    words = []
    for word in text.split(" "):
        if len(word) > LONG:
            core = re.sub(r"(:\d+)?[:,'\")]*$", "", word.lstrip("'\"("))  # the path, without quotes or :line
            word = "(the same)" if core in seen else f"{word[:KEEP]}…{word[-KEEP:]}"
            seen.add(core)
        words.append(word)
    return " ".join(words)


class ValueAt(ValueError):
    """A validator's complaint about a key inside the value it checks (``path``, relative to it),
    so the message can name that key and its line rather than the whole mapping's."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = tuple(path)


class ConfigError(UserError):
    """A config mistake, pinned to the file, line and key where the user can fix it.

    ``str()`` is always one line, so the CLI and the TUI status bar can show it as is.
    """

    def __init__(self, message: str, file: str | None = None, line: int | None = None, key: str | None = None):
        self.message = re.sub(r"\s*\n\s*", " ", str(message)).strip()
        self.file, self.line, self.key = file, line, key
        prefix = locate(file, line, key)
        super().__init__(readable(f"{prefix}: {self.message}" if prefix else self.message))
