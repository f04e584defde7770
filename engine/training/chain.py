"""Chains of stages, and resuming a stopped run.

A chain trains its stages in order, each starting from the previous stage's trained weights (a
stage's own ``resume_adapter_file`` wins), each in its own run folder linked to the next one's.
Resuming continues a run from its latest checkpoint, in its own folder, with its own config.
"""

from __future__ import annotations

from pathlib import Path

from engine.config import Stage, check_chain, load_stages
from engine.errors import UserError
from engine.runs.checkpoints import Checkpoints
from engine.runs.control import Control
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
    results: list[StageResult] = []
    for stage in stages:
        init = stage.config.resume_adapter_file
        if results and "resume_adapter_file" not in stage.explicit:
            previous = results[-1]
            init = str(Checkpoints(previous.run_dir, previous.adapter_dir).adapter_file) if world.is_main else None
        if init and world.is_main and not Path(init).exists():
            raise stage.error("resume_adapter_file", f"no such file: {init}")
        after = results[-1].run_dir if results else None
        result = Trainer(stage, emit, control, stages=len(stages), init_weights=init, after=after, world=world).run()
        results.append(result)
        if result.status != "completed":
            break
    return results


def resume_run(run_dir: Path, emit: Emit, control: Control | None = None, world: World | None = None) -> StageResult:
    """Continue a run from its latest checkpoint, in its own folder, with its own config."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise UserError(f"{run_dir}: not a run folder (it has no config.yaml)")
    stage = load_stages([run_dir / "config.yaml"])[0]
    check_chain([stage], (world or World()).size)
    return Trainer(stage, emit, control, resume=Checkpoints(run_dir).latest(), world=world).run()
