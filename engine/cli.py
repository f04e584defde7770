"""The headless ``tuner`` commands: ``train``, ``validate``, ``inspect``, ``generate``, ``export`` and the rest.

``tui.launch`` is the console entry point: it opens the app when no command is given and hands
everything else here, so the engine never imports the UI.

User mistakes (configs, data, model paths) and the file system's refusals (a full disk, a
read-only folder) print one line and exit with code 2. Anything else is a bug: :func:`main` is the
one boundary that turns it into one line too, keeps the traceback in a log (the run folder's
``crash.log``, else the cache's) and exits with ``EXIT_INTERNAL_ERROR``. Ctrl-C or SIGTERM during
training stops after the current step and saves; a second Ctrl-C exits at once.

Started by ``mlx.launch`` (directly, or through ``tuner train --hosts``), ``train`` is one rank of a
data-parallel run: rank 0 prints and writes, the other ranks stay quiet.

Each command imports the engine parts it needs when it runs, not at the top: the app's entry
point imports this module, and ``tuner control`` or ``tuner validate`` should not wait for MLX,
numpy or the Hugging Face libraries to load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from engine.errors import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    DataError,
    StorageError,
    UserError,
    is_storage_error,
    storage_error,
)
from engine.runs.control import ACTIONS
from engine.levers.platform_check import maybe_reexec_with_openblas
from engine.printer import format_worst



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuner",
        description="Instruction fine-tuning for MLX with prompt-loss-weight. "
        "Run without a command (or with just a config file) to open the terminal app.",
    )
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="train one config, or a chain of configs as stages")
    train.add_argument("configs", nargs="*", metavar="CONFIG", help="YAML files, run in order")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its latest checkpoint")
    train.add_argument("--more", metavar="N", help="with --resume on a finished run: train it N more steps "
                       "(or '2 epochs') as a new run folder linked from it, starting from its final adapter")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key in every stage (repeatable), e.g. --set iters=50")
    train.add_argument("--quiet", action="store_true", help="print only evaluations and the result")
    train.add_argument("--detach", action="store_true",
                       help="train in a background process that outlives this terminal and SSH session; "
                       "prints the run folder and returns")
    train.add_argument("--hosts", metavar="HOSTFILE",
                       help="train data-parallel on the hosts of an mlx.launch JSON hostfile (one rank per entry; "
                       "rank 0 writes the run folder)")
    train.add_argument("--announce", help=argparse.SUPPRESS)  # the detached child's handshake file
    control = sub.add_parser("control", help="pause, resume, stop, save or evaluate a run training in another process")
    control.add_argument("run_dir", metavar="RUN_DIR")
    control.add_argument("action", choices=tuple(ACTIONS))
    control.add_argument("--wait", action="store_true",
                         help="return once the run has acted on it (for stop: once its process has ended)")
    validate = sub.add_parser("validate", help="check configs and show every resolved value and its source")
    validate.add_argument("configs", nargs="+", metavar="CONFIG")
    validate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    validate.add_argument("--explain", action="store_true", help="print what each key means under its value")
    gguf = sub.add_parser("import-gguf", help="convert a Llama GGUF (F32/F16/Q4_0/Q4_1/Q8_0) into an mlx-lm folder")
    gguf.add_argument("gguf", metavar="FILE.gguf")
    gguf.add_argument("out_dir", metavar="OUT_DIR")
    gguf.add_argument("--dequantize", action="store_true", help="write float16 weights instead of keeping quantized ones")
    inspect = sub.add_parser("inspect", help="dataset statistics: token lengths, Rg, truncation, duplicates")
    inspect.add_argument("target", metavar="CONFIG_OR_DATA",
                         help="a config YAML, or a data folder, file or Hugging Face dataset id (needs --model)")
    inspect.add_argument("--model", help="model whose tokenizer and chat template to count with")
    inspect.add_argument("--max-seq-length", type=int, help="override the config's max_seq_length")
    inspect.add_argument("--prompt-loss-weight", type=float, help="override the config's PLW (for the guidance)")
    inspect.add_argument("--json", action="store_true", help="print JSON (schema in the README)")
    inspect.add_argument("--rows", action="store_true", help="with --json: add one row per example")
    inspect.add_argument("--no-cache", action="store_true", help="tokenise again; neither read nor write the cache")
    inspect.add_argument("--run", metavar="RUN_DIR", help="also list the validation examples that run gets most wrong")
    from engine.launch.export_command import add_export_parser
    from engine.launch.generate_command import add_generate_parser

    add_generate_parser(sub)
    add_export_parser(sub)
    return parser


COMMANDS = ("train", "validate", "inspect", "import-gguf", "control", "generate", "export")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        maybe_reexec_with_openblas()
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    args.run_dir_seen = None  # set by cmd_train at each RunStarted: where a crash's details go
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "validate":
            return cmd_validate(args)
        if args.command == "inspect":
            return cmd_inspect(args)
        if args.command == "import-gguf":
            return cmd_import_gguf(args)
        if args.command == "control":
            return cmd_control(args)
        if args.command == "generate":
            from engine.launch.generate_command import cmd_generate

            return cmd_generate(args)
        if args.command == "export":
            from engine.launch.export_command import cmd_export

            return cmd_export(args)
        build_parser().print_help()
        return EXIT_USER_ERROR
    except UserError as e:
        resume = ""
        if isinstance(e, StorageError) and args.run_dir_seen:  # a run had started: its checkpoints are safe
            resume = f" (the checkpoints saved so far are kept; then: tuner train --resume {args.run_dir_seen})"
        print(f"tuner: error: {e}{resume}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C while loading or tokenising, before training began
        print("\ntuner: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tuner validate x | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if not is_storage_error(e):
            return _internal_error(e, args)
        from engine.files import refused

        problem = refused(e, e.filename, "cannot use it") if e.filename else storage_error(e, doing="cannot use it")
        print(f"tuner: error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:  # noqa: BLE001 - the one boundary: a bug, never a traceback on screen
        return _internal_error(e, args)


def _internal_error(error: Exception, args) -> int:
    """A bug: one line, the traceback in the run folder's (else the cache's) ``crash.log``, exit 70."""
    from engine.launch.crash import report_internal_error

    return report_internal_error(error, [args.run_dir_seen, getattr(args, "resume", None)])


def cmd_import_gguf(args) -> int:
    from engine.model.gguf import import_gguf

    out = import_gguf(args.gguf, args.out_dir, dequantize=args.dequantize)
    print(f"imported {args.gguf} -> {out} (load it with model: {out})")
    return 0


def cmd_validate(args) -> int:
    from engine.config import check_chain, format_resolved, load_stages
    from engine.config.load import load_sweep
    from engine.data.sources import check_local_data

    if (sweep := load_sweep(args.configs, args.overrides)) is not None:
        return _validate_sweep(sweep, args.explain)
    stages = load_stages(args.configs, args.overrides)
    check_chain(stages)
    check_local_data(stages)
    from engine.levers.memory_plan import plan_for_stage, plan_lines

    for stage in stages:
        if len(stages) > 1:
            print(f"# stage {stage.index + 1}: {stage.path}")
        print(format_resolved(stage, explain=args.explain))
        print("\n".join(plan_lines(*plan_for_stage(stage))))
    return 0


def _validate_sweep(sweep, explain: bool) -> int:
    """A sweep's points, one line each (its run name, then the values that differ), then the
    first point's resolved values."""
    from engine.config import check_chain, format_resolved
    from engine.data.sources import check_local_data

    for point in sweep.points:
        check_chain([point.stage])
    check_local_data([sweep.points[0].stage])
    print("\n".join(sweep.listing()))
    print(f"# the first run's resolved values (the others differ only in {', '.join(a.key for a in sweep.axes)})")
    print(format_resolved(sweep.points[0].stage, explain=explain))
    return 0


def cmd_inspect(args) -> int:
    from engine.data.stats import compute_stats
    from engine.data.stats_report import format_stats, stats_to_json

    stage, swept_plw = _inspect_stage(args)
    progress = _show_progress if sys.stderr.isatty() else None
    stats = compute_stats(stage, progress=progress, use_cache=not args.no_cache).for_sweep(swept_plw)
    worst = None
    if args.run:
        from engine.runs.listing import worst_validation

        worst = worst_validation(args.run)
        if worst is None:
            raise UserError(f"{args.run}: no per-example validation there (eval_examples.json) yet")
    if args.json or args.rows:
        data = stats_to_json(stats, rows=args.rows)
        if worst is not None:
            data["worst_valid"] = {"run": str(args.run), "step": worst[0], "examples": worst[1]}
        print(json.dumps(data, indent=2, allow_nan=False))
    else:
        print(format_stats(stats))
        if worst is not None:
            print(format_worst(args.run, *worst))
    return 0


def _inspect_stage(args):
    """The config to inspect, and the PLW values it sweeps (empty for one config): the YAML file
    given, or one built from a data path and --model.

    The command-line values go in as ``--set`` overrides, so they are checked like any config.
    """
    import yaml

    from engine.config import load_stages
    from engine.config.load import load_sweep
    from engine.data.rows import FILE_SUFFIXES
    from engine.files import not_a_regular_file
    from engine.hub import looks_like_local_path

    given = {"model": args.model, "max_seq_length": args.max_seq_length, "prompt_loss_weight": args.prompt_loss_weight}
    overrides = [f"{key}={json.dumps(value)}" for key, value in given.items() if value is not None]
    if args.target.lower().endswith((".yaml", ".yml")):
        sweep = load_sweep([args.target], overrides)  # its points share their data: the first is counted
        if sweep is not None:
            return sweep.points[0].stage, sweep.values("prompt_loss_weight")
        return load_stages([args.target], overrides)[0], ()
    target = Path(args.target).expanduser()
    if not target.exists() and target.is_symlink():  # dangling, or a loop: say which
        raise DataError(f"{args.target}: {not_a_regular_file(target)}")
    if not target.exists() and looks_like_local_path(args.target, FILE_SUFFIXES):
        raise DataError(f"{args.target}: no such file or folder")
    if args.model is None:
        raise UserError(f"{args.target}: not a config file, so say whose tokenizer to count with: --model MODEL")
    label = "tuner inspect"  # stands in for a config file in error messages
    return load_stages([label], overrides, texts={label: yaml.safe_dump({"data": args.target})})[0], ()


def _show_progress(done: int, total: int) -> None:
    print(f"\rtokenising {done:,} / {total:,}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def cmd_train(args) -> int:
    from engine.launch.train_command import cmd_train as train

    return train(args)


def cmd_control(args) -> int:
    from engine.runs.control import steer

    print(steer(Path(args.run_dir), args.action, args.wait))
    return 0


if __name__ == "__main__":
    sys.exit(main())
