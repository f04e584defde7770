"""Chains of stages, and resuming a stopped run.

A chain trains its stages in order, each starting from the previous stage's trained weights (a
stage's own ``resume_adapter_file`` wins), each in its own run folder linked to the next one's.
Resuming continues a run from its latest checkpoint, in its own folder, with its own config; a run
that finished has nothing left to resume, and resuming it would overwrite its (perhaps promoted)
adapter, so it is refused. Training such a run further is a new stage instead
(:func:`continue_run`): a new folder, linked from the old one, starting from its final adapter.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.config import Stage, check_chain, load_stages
from engine.data.sources import check_local_data
from engine.errors import UserError
from engine.runs.checkpoints import WEIGHTS, Checkpoints, adapter_file_problem
from engine.runs.control import Control
from engine.runs.listing import read_view
from engine.runs.more import check_resumable, check_run_folder, refuse_live
from engine.training.distributed import World
from engine.training.trainer import Emit, StageResult, Trainer


def run_chain(stages: list[Stage], emit: Emit, control: Control | None = None,
              world: World | None = None) -> list[StageResult]:
    """Run the stages in order, each starting from the previous stage's trained weights.

    With several ranks only rank 0 reads those weights (the others have no run folders) and
    hands them on when the stage starts.
    """
    control = control or Control()
    world = world or World()
    check_chain(stages, world.size)
    check_local_data(stages)
    results: list[StageResult] = []
    for stage in stages:
        init = stage.config.resume_adapter_file
        if results and "resume_adapter_file" not in stage.explicit:
            previous = results[-1]
            init = str(Checkpoints(previous.run_dir, previous.adapter_dir).adapter_file) if world.is_main else None
        if init and world.is_main and (problem := adapter_file_problem(Path(init))) is not None:
            raise stage.error("resume_adapter_file", problem)
        after = results[-1].run_dir if results else None
        result = Trainer(stage, emit, control, stages=len(stages), init_weights=init, after=after, world=world).run()
        results.append(result)
        if result.status != "completed":
            break
    return results


def resume_run(run_dir: Path, emit: Emit, control: Control | None = None, world: World | None = None) -> StageResult:
    """Continue a stopped run from its latest checkpoint, in its own folder, with its own config.

    A finished run is refused before anything is written (see the module docstring)."""
    run_dir = Path(run_dir)
    checkpoint = check_resumable(run_dir)
    stage = load_stages([run_dir / "config.yaml"])[0]
    check_chain([stage], (world or World()).size)
    return Trainer(stage, emit, control, resume=checkpoint, world=world).run()


def continuation_stage(run_dir: Path, steps: int | None = None, epochs: float | None = None) -> tuple[Stage, Path]:
    """The stage that trains ``run_dir`` ``steps`` (or ``epochs``) further, and the weights it starts from.

    Its config is the run's own with the length replaced and a constant learning rate, the one
    the run's last training report shows; the weights of the checkpoint the run's
    final adapter holds now (a promoted one included; the checkpoint's copy, which no later
    promotion changes) as ``resume_adapter_file``, its adapters in its own folder, and a name
    that says what it continues.
    """
    if (steps is None) == (epochs is None):
        raise UserError("continue a run by a number of steps or of epochs (one of them)")
    if (steps is not None and steps < 1) or (epochs is not None and epochs <= 0):
        raise UserError("the number of steps or epochs to train further must be positive")
    run_dir = Path(run_dir).resolve()
    check_run_folder(run_dir)
    refuse_live(run_dir, "; continue it once it has finished")
    view = read_view(run_dir)
    started = view.started
    checkpoints = Checkpoints(run_dir, started.adapter_dir if started is not None else None)
    final = checkpoints.final_step()
    weights = checkpoints.at(final).folder / WEIGHTS if final is not None else checkpoints.adapter_file
    if not weights.exists():
        raise UserError(f"{run_dir}: no trained adapter to continue from ({weights} is missing)")
    length = f"iters={steps}" if steps is not None else f"epochs={epochs:g}"
    # train=true: run folders from before `train: false` meant "evaluate only" carry that old default
    overrides = [length, f"resume_adapter_file={json.dumps(str(weights))}", "adapter_path=null",
                 f"name={json.dumps(run_dir.name + '-more')}", "train=true"]
    if view.last_train is not None and view.last_train.learning_rate > 0:
        # on from where the run ended, at the learning rate it ended with: starting its schedule
        # over (a warmup back to the peak) undid what the decay had settled
        overrides += [f"learning_rate={view.last_train.learning_rate!r}", "lr_schedule=null"]
    return load_stages([run_dir / "config.yaml"], overrides)[0], weights


def continue_run(run_dir: Path, emit: Emit, control: Control | None = None, *, steps: int | None = None,
                 epochs: float | None = None) -> StageResult:
    """Train a finished run ``steps`` (or ``epochs``) further as a new run folder linked from it
    (``next_stage``); the old folder's adapters and checkpoints are left as they are."""
    stage, weights = continuation_stage(run_dir, steps, epochs)
    check_chain([stage], 1)
    return Trainer(stage, emit, control, init_weights=str(weights), after=Path(run_dir).resolve()).run()
