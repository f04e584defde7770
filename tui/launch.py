"""The ``tuner`` console entry point.

``tuner train ...`` and ``tuner validate ...`` run headless in :mod:`engine.cli`; ``tuner`` alone
or ``tuner CONFIG.yaml [MORE.yaml ...]`` (a chain of stages) opens the terminal app, and
``tuner attach RUN_DIR`` opens it following a run another process trains. Textual is imported
only for the app.
"""

from __future__ import annotations

import os
import sys

from engine.cli import COMMANDS
from engine.cli import main as headless_main
from engine.levers.platform_check import maybe_reexec_with_openblas


def main() -> int:
    maybe_reexec_with_openblas()
    argv = sys.argv[1:]
    if argv and (argv[0] in COMMANDS or argv[0].startswith("-")):
        return headless_main(argv)
    from engine.levers.process import prepare_process  # not for the headless commands: MLX loads slowly

    prepare_process()  # the app trains in this process, so before MLX starts its threads
    if argv and argv[0] == "attach":
        from .app import run_app

        return leave(attach(argv[1:], run_app))
    if options := [a for a in argv if a.startswith("-")]:  # e.g. tuner run.yaml --set iters=5
        print(f"tuner: error: {options[0]}: the app takes config files only; options such as --set go with "
              "`tuner train` or `tuner validate` (in the app, edit the YAML)", file=sys.stderr)
        return 2
    from .app import run_app

    return leave(run_app(argv))


def leave(code: int) -> int:
    """End the app's process at once with ``code``, skipping the C++ static destructors.

    MLX 0.32 aborts the interpreter's exit ("terminate called without an active exception",
    status 134) once it has evaluated arrays on a thread other than the main one with
    ``MLX_BFS_MAX_WIDTH`` set, which is how the app trains (a worker thread) with the CPU streams'
    evaluation order. By the time the app returns, everything it wrote is closed (the trainer
    closes ``metrics.jsonl``; checkpoints and configs are renamed into place), so only the
    standard streams need flushing. The headless commands train on the main thread and exit
    normally.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def attach(argv: list[str], run_app) -> int:
    """``tuner attach RUN_DIR``: the app, following a run another process trains."""
    from pathlib import Path

    from engine.errors import UserError
    from engine.runs.folder import check_folder, live_pid

    if len(argv) != 1:
        print("usage: tuner attach RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    try:
        check_folder(run_dir)  # missing, or a file: say so, not "nothing trains there"
    except UserError as e:
        print(f"tuner: error: {e}", file=sys.stderr)
        return 2
    if live_pid(run_dir) is None:
        print(f"tuner: error: {run_dir}: no run is training there now "
              f"(open it in Runs, or: tuner train --resume {run_dir})", file=sys.stderr)
        return 2
    return run_app([str(run_dir / "config.yaml")], attach=run_dir)


if __name__ == "__main__":
    sys.exit(main())
