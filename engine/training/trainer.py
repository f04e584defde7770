"""One stage of a run, from config to finished run folder: prepare, open the folder, train, finish.

The trainer owns its loop (mlx-lm's ``train()`` draws to stdout and cannot pause) and reuses
mlx-lm for model loading, LoRA/DoRA layers, optimizers and schedules. It never prints: everything
it has to say is an event passed to ``emit`` and appended to the run's ``metrics.jsonl``. It runs
the same on the main thread (CLI) or a worker thread (TUI), and under ``mlx.launch`` on every
rank, of which only rank 0 writes or reports (:mod:`engine.training.distributed`).

Where each part lives: preparing a stage in :mod:`~engine.training.prepare` (the compute levers
in :mod:`engine.levers.plan`, the loss in :mod:`~engine.training.loss_path`), the step in
:mod:`~engine.training.step`, the loop in :mod:`~engine.training.loop`, evaluation in
:mod:`~engine.training.evaluator`, reports in :mod:`~engine.training.report`, what a checkpoint
holds in :mod:`~engine.training.state` and its files in :mod:`engine.runs.checkpoints`, chains of
stages and resuming in :mod:`~engine.training.chain`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import yaml
from mlx_lm.utils import maybe_set_recommended_wired_limit

from engine import events as ev
from engine.config import Stage, config_to_dict
from engine.errors import UserError
from engine.files import atomic_write_text
from engine.model.load import fuse, write_adapter_config
from engine.runs.checkpoints import WEIGHTS, Checkpoint, Checkpoints
from engine.runs.control import Control
from engine.runs.folder import link_next_stage, new_run_dir
from engine.runs.lock import RunLock
from engine.runs.metrics import MetricsWriter, fan_out
from engine.training.distributed import World
from engine.training.evaluator import Evaluator
from engine.training.loop import Outcome, StageLoop
from engine.training.prepare import PreparedStage, prepare_stage
from engine.training.report import Reporter, run_started
from engine.training.state import TrainState

Emit = Callable[[ev.Event], None]


@dataclass(frozen=True)
class StageResult:
    status: str  # completed | stopped | early_stopped | diverged
    run_dir: Path | None  # None on ranks other than 0, which write nothing
    adapter_dir: Path | None
    step: int


class Trainer:
    """One stage of a run: prepared up front, then trained by :meth:`run`.

    ``init_weights``: trained weights to start from (a chain's previous stage); ``resume``: a
    checkpoint to continue exactly, in its own run folder; ``after``: the folder of the chain's
    previous stage, pointed at this one's.

    A stage with ``train: false`` only evaluates (mlx-lm's ``--test`` without ``--train``): the
    model with ``init_weights`` (else ``adapter_path``'s adapters, as mlx-lm's ``--adapter-path``),
    if any, on the valid and test splits, in a run folder of its own that holds the reports and no
    adapters. Resuming always trains: a run folder written before ``train`` meant anything says
    ``train: false``, and an evaluation has no checkpoint to resume.
    """

    def __init__(self, stage: Stage, emit: Emit, control: Control | None = None, *, stages: int = 1,
                 init_weights: str | None = None, resume: Checkpoint | None = None, after: Path | None = None,
                 world: World | None = None):
        self.stage = stage
        self.world = world or World()
        self.control = control or Control()
        self._user_emit = emit
        self.stages = stages
        self.init_weights = init_weights
        self.resume = resume
        self.after = after
        self.evaluate_only = not stage.config.train and resume is None
        if self.evaluate_only and not init_weights and stage.config.adapter_path:  # mlx-lm's --adapter-path
            self.init_weights = str(Path(stage.config.adapter_path).expanduser() / WEIGHTS)
            if self.world.is_main and not Path(self.init_weights).exists():
                raise stage.error("adapter_path", f"train: false evaluates the adapters there; no {self.init_weights}")

    def run(self) -> StageResult:
        prepared = prepare_stage(self.stage, self.world, self.init_weights, self.evaluate_only)  # user errors surface here, before a run folder is half-written
        state = TrainState(prepared.model, prepared.optimizer, prepared.stream, self.world, prepared.cfg.save_every)
        main, notes, writer, self.lock = self.world.is_main, prepared.notes, None, None
        try:
            if main:
                writer, resumed = self._open_run(prepared, state)  # owns the folder from here (self.lock)
                notes += resumed
                run_dir = state.checkpoints.run_dir
                if self.after is not None:
                    link_next_stage(self.after, run_dir)
                self.control.watch(run_dir)  # requests from other processes: tuner control, an attached app
            state.start_together(resumed=self.resume is not None)
            return self._train(prepared, state, notes)
        except Exception as e:
            # bad input says what it is in one line; anything else is named by its type
            error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            state.emit(ev.RunFailed(step=state.step_done, error=error))
            raise
        finally:
            if writer is not None:
                writer.close()
            if self.lock is not None:
                self.lock.release()

    def _open_run(self, prepared: PreparedStage, state: TrainState) -> tuple[MetricsWriter, tuple[ev.Notice, ...]]:
        """Rank 0's run folder: a new one, or the resumed checkpoint's (restored first, so a
        checkpoint that does not load leaves the folder as it was); its metrics file and, when
        new, its config and adapter config. Returns the metrics writer and the resume's notices.

        The folder's lock is taken first (:mod:`engine.runs.lock`): one process trains a folder."""
        cfg, notes = self.stage.config, ()
        if self.resume is not None:
            self.lock = RunLock.take(self.resume.run_dir)
            run_dir = self.resume.run_dir
            notes = (*(ev.Notice(message=m) for m in self.lock.messages + self.resume.skipped),
                     state.restore(self.resume))
        else:
            run_dir = new_run_dir(cfg.runs_dir, cfg.name, self.stage.path.stem)
            self.lock = RunLock.take(run_dir)
        checkpoints = Checkpoints(run_dir, cfg.adapter_path)
        writer = MetricsWriter(run_dir)
        state.checkpoints, state.emit = checkpoints, fan_out(writer, self._user_emit)
        if self.resume is None:
            atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        if self.resume is None and not self.evaluate_only:
            checkpoints.adapter_dir.mkdir(parents=True, exist_ok=True)
            write_adapter_config(checkpoints.adapter_dir, cfg, prepared.model_path, {"config_file": str(self.stage.path)})
        return writer, notes

    def _stopping(self) -> bool:
        """Whether a stop was asked for (Ctrl-C, SIGTERM, `tuner control stop`): the evaluator asks
        between generated tokens and validation batches, at most five times a second."""
        self.control.poll()
        return self.control.stopping

    def _train(self, prepared: PreparedStage, state: TrainState, notes: tuple[ev.Notice, ...]) -> StageResult:
        world, emit, checkpoints = self.world, state.emit, state.checkpoints
        if mx.metal.is_available():
            maybe_set_recommended_wired_limit()
        run_dir = checkpoints.run_dir if checkpoints else None
        adapter_dir = checkpoints.adapter_dir if checkpoints else None
        if self.evaluate_only:
            adapter_dir = Path(self.init_weights).parent if self.init_weights else None
        emit(run_started(prepared, world, run_dir, adapter_dir, self.stages, state.first_step - 1))
        for note in notes:
            emit(note)
        evaluator = Evaluator(prepared, world, emit, state.save, checkpoints, training=not self.evaluate_only,
                              stopping=self._stopping)
        if self.evaluate_only:
            return self._evaluate(evaluator, state, run_dir, adapter_dir)
        if self.resume is not None:
            evaluator.restore_best(checkpoints.best() if checkpoints else None)
        loop = StageLoop(prepared, state, world, self.control, evaluator, Reporter(prepared, world, emit),
                         resumed=self.resume is not None)
        outcome = loop.run()
        return self._finish(prepared, state, evaluator, outcome, loop.clock.started)

    def _evaluate(self, evaluator: Evaluator, state: TrainState, run_dir: Path | None,
                  adapter_dir: Path | None) -> StageResult:
        """``train: false``: the valid and test passes of the untrained model, and the run-finished event."""
        started = time.perf_counter()
        evaluator.validate(0)
        evaluator.test(0)
        weights = self.init_weights or "the base model, no adapters"
        state.emit(ev.RunFinished(step=0, status="completed", adapter_dir=str(adapter_dir or ""),
                                  elapsed=time.perf_counter() - started,
                                  message=f"train: false: evaluated {weights}, no training"))
        return StageResult("completed", run_dir, adapter_dir, 0)

    def _finish(self, prepared: PreparedStage, state: TrainState, evaluator: Evaluator, outcome: Outcome,
                started: float) -> StageResult:
        """The final checkpoint, the test pass and fusing (a completed stage), and the run-finished event."""
        status, step, checkpoints = outcome.status, state.step_done, state.checkpoints
        state.save(step, {"completed": "final", "diverged": "diverged"}.get(status, "stopped"))
        if status == "completed":
            evaluator.test(step)
        run_dir = checkpoints.run_dir if checkpoints else None
        adapter_dir = checkpoints.adapter_dir if checkpoints else None
        fused = ""
        if prepared.cfg.fuse and status == "completed" and self.world.is_main:
            fused = str(fuse(prepared.model_path, adapter_dir, run_dir / "fused"))
        state.emit(
            ev.RunFinished(
                step=step,
                status=status,
                adapter_dir=str(adapter_dir),
                elapsed=time.perf_counter() - started,
                fused_dir=fused,
                message=outcome.reason + ("; the weights saved are the last finite ones" if status == "diverged" else ""),
            )
        )
        return StageResult(status, run_dir, adapter_dir, step)
