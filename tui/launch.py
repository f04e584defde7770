"""The ``tuner`` console entry point.

``tuner train ...`` and ``tuner validate ...`` run headless in :mod:`engine.cli`; ``tuner`` alone
or ``tuner CONFIG.yaml [MORE.yaml ...]`` (a chain of stages) opens the terminal app. Textual is imported only for the app.
"""

from __future__ import annotations

import sys

from engine.cli import COMMANDS
from engine.cli import main as headless_main
from engine.platform_check import maybe_reexec_with_openblas


def main() -> int:
    maybe_reexec_with_openblas()
    argv = sys.argv[1:]
    if argv and (argv[0] in COMMANDS or argv[0].startswith("-")):
        return headless_main(argv)
    from .app import run_app

    return run_app(argv)


if __name__ == "__main__":
    sys.exit(main())
