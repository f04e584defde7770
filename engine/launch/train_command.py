"""``tuner train``: what to train (a chain, a sweep, a resume, a finished run further), where
(here, detached, over several hosts), and the signal handling of a run trained here.

Split from :mod:`engine.cli`, which parses the command line and is the one boundary for errors.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from engine.errors import EXIT_CODES, EXIT_INTERRUPTED, UserError
from engine.runs.control import Control


def cmd_train(args) -> int:
    """``tuner train``: check the arguments, then train here, detached or over several hosts."""
    sweep = _check_arguments(args)
    if args.detach:
        return detach_train(args, sweep is not None)
    if args.hosts:
        return train_on_hosts(args, sweep is not None)
    # MLX is imported here, to train in this process: the other commands, and the parents of
    # detached and multi-host runs, start fast
    from engine.levers.process import prepare_process
    from engine.training.distributed import current_world

    prepare_process()  # before anything starts MLX's threads
    world = current_world()
    results = _train_here(args, world, _starter(args, sweep, world), sweep is not None)
    if isinstance(results, int):  # interrupted, or a rank's failure
        return results
    if sweep is not None:  # a stop ends the sweep; a diverged run does not, but the exit code says so
        statuses = {result.status for result in results}
        return next((EXIT_CODES[s] for s in ("stopped", "diverged") if s in statuses), 0)
    return EXIT_CODES.get(results[-1].status, 0) if results else 0


def _check_arguments(args):
    """The combinations of options that cannot work, refused before anything loads; the sweep to
    train (see :func:`_sweep_of`)."""
    if bool(args.configs) == bool(args.resume):
        raise UserError("train: give config files, or --resume RUN_DIR (not both)")
    if args.resume and args.overrides:
        raise UserError("train: --set changes config files; a resumed run keeps the config it was trained with")
    if args.more and (args.detach or args.hosts):
        raise UserError("train: --more trains here, without --detach or --hosts")
    if args.more and not args.resume:
        raise UserError("train: --more goes with --resume RUN_DIR")
    sweep = _sweep_of(args)
    if sweep is not None and args.more:
        raise UserError(f"train: --more trains one finished run further; {args.resume} is a sweep, "
                        "so give one of its run folders")
    return sweep


def _starter(args, sweep, world):
    """What trains, as ``start(emit, control) -> results``: a finished run further, a sweep (new or
    resumed), a stopped run resumed, or the chain of configs."""
    from engine.config import load_stages
    from engine.runs.more import parse_more
    from engine.training.chain import continue_run, resume_run, run_chain
    from engine.training.sweep import resume_sweep, run_sweep

    if sweep is not None and world.distributed:  # every rank would make its own sweep folder
        raise UserError("train: under mlx.launch every rank would make its own sweep folder; "
                        "train a sweep over several hosts with: tuner train --hosts HOSTFILE SWEEP_CONFIG")
    if args.more:
        if world.distributed:
            raise UserError("train: --more trains in one process; start the new run's config with --hosts instead")
        more = parse_more(args.more)
        return lambda emit, control: [continue_run(args.resume, emit, control, **more)]
    if sweep == "resume":
        return lambda emit, control: resume_sweep(Path(args.resume), emit, control)
    if sweep is not None:
        return lambda emit, control: run_sweep(sweep, emit, control)
    if args.resume:
        return lambda emit, control: [resume_run(args.resume, emit, control, world)]
    stages = load_stages(args.configs, args.overrides)
    notices = check_memory(stages)

    def start(emit, control):
        for notice in notices:
            emit(notice)
        return run_chain(stages, emit, control, world)

    return start


def _train_here(args, world, start, sweep: bool):
    """Run ``start`` with the printer and the signal handlers: the results, or an exit code.

    The first Ctrl-C or SIGTERM during a stage stops it after the step and saves; before a stage
    starts (loading, tokenising) there is nothing to save, so it ends the command at once, as a
    second one always does."""
    from engine.events import RunFailed, RunFinished, RunStarted
    from engine.printer import Printer

    control = Control()
    printer = Printer(sys.stdout, quiet=args.quiet) if world.is_main else (lambda event: None)
    if args.announce and world.is_main:  # a detached child: tell the waiting parent where the run lives
        printer = _announcing(printer, Path(args.announce), sweep)
    printer = _noting_run_dir(printer, args)
    interrupts = {"n": 0}
    # "training": a stage between its start and its end, where a stop saves first; "failed": the
    # run has failed and this process is on its way out
    phase = {"training": False, "failed": False}

    def emit(event) -> None:
        if isinstance(event, (RunStarted, RunFinished, RunFailed)):
            phase["training"] = isinstance(event, RunStarted)
            phase["failed"] = isinstance(event, RunFailed)
        printer(event)

    def on_signal(signum, frame):
        if phase["failed"]:  # mlx.launch stopping the other ranks after one died: the failure is
            return           # being reported already, and an interrupt now would end it in a traceback
        interrupts["n"] += 1
        if interrupts["n"] > 1 or not phase["training"]:
            raise KeyboardInterrupt
        if world.is_main:
            print("\nstopping after this step and saving (press Ctrl-C again to quit at once)", file=sys.stderr)
        control.stop()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        return start(emit, control)
    except KeyboardInterrupt:
        kept = "the last saved checkpoint is kept" if args.run_dir_seen else "before training started"
        print(f"tuner: interrupted; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RuntimeError as e:
        if not world.distributed:
            raise
        # this rank's own failure, or a peer's (then the peer says why): the run failed, its checkpoints stay
        print(f"tuner: error: rank {world.rank} of {world.size}: {e}; the last saved checkpoint is kept "
              "(resume with: tuner train --hosts HOSTFILE --resume RUN_DIR)", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def check_memory(stages) -> list:
    """A warning Notice for a config predicted to need more than 80% of this machine's memory,
    naming the changes that would fit. Never a refusal: the plan counts batches of max_seq_length
    tokens, and most data is far shorter (a 2048 limit on 200-token chats is common). A model the
    plan cannot read is left to the loader, whose error says what is wrong."""
    from engine.events import Notice
    from engine.levers.memory_plan import plan_for_stage

    notices = []
    for stage in stages:
        try:
            plan, _ = plan_for_stage(stage)
        except (UserError, OSError, ValueError, KeyError):
            continue
        if plan is None or plan.verdict == "fits":
            continue
        fix = f"; would fit: {plan.fix_text()}" if plan.fixes else ""
        said = "may not fit in memory" if plan.verdict == "too big" else "memory is tight"
        notices.append(Notice(f"{said} if batches reach max_seq_length: {plan.summary()}{fix}", "warning"))
    return notices


def _sweep_of(args):
    """The sweep to train: a loaded :class:`~engine.config.load.Sweep` for a config with lists,
    ``"resume"`` for ``--resume SWEEP_DIR``, None for anything else (configs only, no MLX)."""
    from engine.config.load import load_sweep
    from engine.runs.sweeps import is_sweep_dir

    if args.resume:
        return "resume" if is_sweep_dir(Path(args.resume)) else None
    return load_sweep(args.configs, args.overrides)


def train_on_hosts(args, sweep: bool = False) -> int:
    """``tuner train --hosts HOSTFILE ...``: check here, then train through mlx.launch."""
    from engine.launch.detach import checked_chain, checked_resume
    from engine.launch.hosts import train_on_hosts as launch

    if sweep:
        from engine.launch.sweep_hosts import sweep_on_hosts

        return sweep_on_hosts(Path(args.hosts), args, Path(args.announce) if args.announce else None)
    if args.resume:
        train_args, stages, runs_dir = checked_resume(Path(args.resume), args.quiet)
    else:
        train_args, stages, runs_dir = checked_chain(args.configs, args.overrides, args.quiet)
    return launch(Path(args.hosts), train_args, stages, runs_dir)


def detach_train(args, sweep: bool = False) -> int:
    """Start the same ``tuner train`` in the background and print how to follow and steer it."""
    from engine.launch.detach import detach_chain, detach_resume, detach_sweep

    hosts = Path(args.hosts) if args.hosts else None
    print("starting a detached run (loading the model and data) ...", file=sys.stderr, flush=True)
    try:
        if sweep:
            run = detach_sweep(args.configs, args.overrides, args.quiet, Path(args.resume) if args.resume else None,
                               hosts)
        elif args.resume:
            run = detach_resume(Path(args.resume), args.quiet, hosts)
        else:
            run = detach_chain(args.configs, args.overrides, args.quiet, hosts)
    except KeyboardInterrupt:
        print("\nstill starting in the background; its run folder will appear in the runs folder", file=sys.stderr)
        return EXIT_INTERRUPTED
    if sweep:
        print(f"training a sweep in the background (pid {run.pid}): {run.run_dir}")
        print(f"  its runs:   {run.run_dir}/*/ one after another, listed in {run.run_dir}/sweep.json")
        print(f"  steer it:   tuner control {run.run_dir} pause|resume|stop|save|eval  (the run training now; "
              "stop ends the sweep)")
        print(f"  resume it:  tuner train{f' --hosts {hosts}' if hosts else ''} --resume {run.run_dir}")
        print(f"  its output: {run.log}")
        return 0
    print(f"training in the background (pid {run.pid}): {run.run_dir}")
    print(f"  watch it:   tuner attach {run.run_dir}   (or: tuner, then 4 for Runs)")
    print(f"  steer it:   tuner control {run.run_dir} pause|resume|stop|save|eval")
    print(f"  its output: {run.log}")
    return 0


def _noting_run_dir(printer, args):
    """The printer, noting each stage's run folder in ``args.run_dir_seen`` for a crash's log."""
    from engine.events import RunStarted

    def emit(event) -> None:
        if isinstance(event, RunStarted) and event.run_dir:
            args.run_dir_seen = event.run_dir
        printer(event)

    return emit


def _announcing(printer, announce: Path, sweep: bool = False):
    """The printer, plus the handshake with a waiting ``--detach`` parent at the first RunStarted
    (a sweep announces its sweep folder, the run folder's parent)."""
    from engine.launch.handshake import announce_run
    from engine.events import RunStarted

    announced = []

    def emit(event) -> None:
        if isinstance(event, RunStarted) and not announced:  # the first stage's folder only
            run_dir = Path(event.run_dir)
            announce_run(announce, run_dir.parent if sweep else run_dir)
            announced.append(event.run_dir)
        printer(event)

    return emit
