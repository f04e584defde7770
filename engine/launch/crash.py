"""What the command line does with a bug: one line for the person, the traceback in a log.

``engine.cli.main`` is the one boundary every command passes through. A user's mistake or a
refusing file system is a :class:`~engine.errors.UserError` (one line, exit 2); anything else is a
bug in tuner, and a traceback on screen would be no use to the person who met it. So the
traceback goes to a ``crash.log`` (the run folder's, where a run was being trained, so it sits
beside the run it concerns; else the cache's; else the temporary folder's), and the screen gets
one line naming the exception and that file; the exit code, ``EXIT_INTERNAL_ERROR``, says "bug".
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from engine.errors import EXIT_INTERNAL_ERROR, UserError, first_line
from engine.files import cache_root

CRASH_LOG = "crash.log"


def report_internal_error(error: BaseException, run_dirs: list) -> int:
    """Print the one line for ``error``, log its traceback, and return the exit code.

    ``run_dirs``: run folders the command was working in (None where unknown), most specific first.
    """
    where = write_crash_log(error, run_dirs)
    details = f"the details are in {where}" if where else "the details could not be written anywhere"
    print(f"tuner: internal error: {type(error).__name__}: {first_line(error)} ({details}; please report it)",
          file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def write_crash_log(error: BaseException, run_dirs: list) -> Path | None:
    """Append the traceback to the first folder that takes it (see the module's docstring).

    A run folder is used only if it exists (it is never made here); the cache is made if missing.
    """
    text = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: tuner {' '.join(sys.argv[1:])}\n"
            + "".join(traceback.format_exception(error)))
    candidates = [(Path(folder), False) for folder in run_dirs if folder]
    try:
        candidates.append((cache_root(), True))
    except UserError:  # no home folder: the temporary folder below still takes it
        pass
    candidates.append((Path(tempfile.gettempdir()), True))
    for folder, make in candidates:
        try:
            if make:
                folder.mkdir(parents=True, exist_ok=True)
            elif not folder.is_dir():
                continue
            with open(folder / CRASH_LOG, "a", encoding="utf-8", errors="replace") as log:
                log.write(text)
            return folder / CRASH_LOG
        except OSError:
            continue
    return None
