"""The training loop of one stage, step by step.

For each step: act on the requests that came in (stop, pause, save, eval), take a batch, compute
its gradients, skip it or stop on a non-finite loss or gradient norm, update (every
``grad_accumulation_steps`` steps), then report, evaluate, save, check memory and check
patience, each when due.

Units: a *step* is one batch (mlx-lm's "iteration"); ``iters``, ``steps_per_report``,
``steps_per_eval`` and ``save_every`` count steps. The optimizer updates once every
``grad_accumulation_steps`` steps, and learning-rate schedules (warmup included) count updates.

With several ranks (:mod:`engine.training.distributed`) every rank runs this loop: every
collective sits at a point all ranks reach in the same order, and every decision that ends or
pauses the loop is taken from values all ranks share.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import mlx.core as mx

from engine import events as ev
from engine.runs.control import Control
from engine.training.distributed import World
from engine.training.evaluator import Evaluator
from engine.training.memory_guard import MemoryGuard
from engine.training.prepare import PreparedStage
from engine.training.report import Reporter, ReportWindow
from engine.training.state import TrainState
from engine.training.step import compile_step

STEP_SEED_STRIDE = 1_000_003
RANK_SEED_STRIDE = 2**40  # ranks draw different dropout masks for their different examples


@dataclass(frozen=True)
class Outcome:
    status: str  # completed | stopped | early_stopped | diverged
    reason: str = ""  # why it stopped, for the run-finished message


@dataclass
class Clock:
    started: float = field(default_factory=time.perf_counter)
    paused_for: float = 0.0

    def training_seconds(self) -> float:
        """Seconds since the start, pauses left out."""
        return time.perf_counter() - self.started - self.paused_for


class StageLoop:
    """Trains a prepared stage from ``state.first_step`` to its last step, or until it stops."""

    def __init__(self, prepared: PreparedStage, state: TrainState, world: World, control: Control,
                 evaluator: Evaluator, reporter: Reporter, resumed: bool):
        self.prepared, self.state, self.world, self.control = prepared, state, world, control
        self.evaluator, self.reporter, self.resumed = evaluator, reporter, resumed
        cfg = prepared.cfg
        self.compiled = compile_step(prepared.model, prepared.optimizer, prepared.loss, world,
                                 cfg.grad_accumulation_steps, cfg.max_grad_norm)
        self.guard = MemoryGuard(cfg.memory_limit_percent, cfg.swap_growth_gb)
        self.bad_batches = 0
        self.window = ReportWindow()
        self.grad_norm = float("nan")  # the last update's
        self.clock = Clock()  # started now, right before the loop runs

    def run(self) -> Outcome:
        state, total, stream = self.state, self.prepared.total_steps, self.prepared.stream
        cfg = self.prepared.cfg
        self.prepared.model.train()
        state.step_done = state.first_step - 1
        if not self.resumed:
            self.evaluator.validate(0)
        for step in range(state.first_step, total + 1):
            if self._between_steps(step - 1):
                return Outcome("stopped")
            tic = time.perf_counter()
            batch = stream.next()
            do_update = step % cfg.grad_accumulation_steps == 0 or step == total
            # dropout depends on (seed, step, rank) only
            mx.random.seed(cfg.seed * STEP_SEED_STRIDE + step + self.world.rank * RANK_SEED_STRIDE)
            inputs = self.prepared.loss.inputs(batch)
            loss, aux, grad, norm = self.compiled.compute(inputs, state.pending_grad, do_update)
            if not (math.isfinite(loss.item()) and math.isfinite(norm.item())):
                if diverged := self._skip_batch(step, loss):
                    return Outcome("diverged", diverged)
                continue
            self._update(grad, norm, do_update)
            state.step_done = step
            self.window.add(loss.item(), aux.tolist(), batch, time.perf_counter() - tic)
            state.trained_tokens += batch.group_tokens
            if (outcome := self._when_due(step)) is not None:
                return outcome
        return Outcome("completed")

    def _update(self, grad, norm: mx.array, do_update: bool) -> None:
        """At an update, apply the gradients; between two, carry them to the next step."""
        if do_update:
            self.compiled.apply(grad, norm)
            self.state.pending_grad = None
            self.grad_norm = norm.item()
        else:
            self.state.pending_grad = grad

    def _skip_batch(self, step: int, loss: mx.array) -> str:
        """A non-finite batch: skipped while ``skip_nonfinite_batches`` allows (the accumulation
        window restarts without it), returning ""; past that, why the run diverged."""
        self.bad_batches += 1
        allowed = self.prepared.cfg.skip_nonfinite_batches
        what = f"non-finite {'loss' if not math.isfinite(loss.item()) else 'gradient norm'} at step {step}"
        if self.bad_batches > allowed:
            return what
        self.state.emit(ev.Notice(message=f"{what}: batch skipped ({self.bad_batches} of {allowed} allowed)",
                                  level="warning"))
        self.state.pending_grad = None
        self.state.step_done = step
        return ""

    def _when_due(self, step: int) -> Outcome | None:
        """Report, evaluate, save, check memory and patience after ``step``, each when due."""
        cfg, total, state = self.prepared.cfg, self.prepared.total_steps, self.state
        if step % cfg.steps_per_report == 0 or step == total:
            self.reporter.report(step, self.window, self.grad_norm, self.clock.training_seconds(), state.trained_tokens)
            self.window = ReportWindow()
        if step % self.prepared.steps_per_eval == 0 or step == total:
            self.evaluator.validate(step)
        if step % cfg.save_every == 0 and step != total:
            state.save(step, "periodic")
        pressure = self.guard.check()
        if self.world.any(pressure is not None) and step != total:
            pressure = pressure or "memory pressure on another rank"
            state.save(step, "memory")
            state.emit(ev.Notice(message=f"{pressure}: checkpoint saved at step {step}", level="warning"))
            if not self.control.pause_on_memory_pressure:
                return Outcome("stopped", pressure)
            self.control.pause()
        if self.evaluator.patience_exhausted and step != total:
            return Outcome("early_stopped", self.evaluator.stop_reason())
        return None

    def _between_steps(self, step: int) -> bool:
        """Act on the requests that came in during the last step: save, eval, and pause (still
        serving save and eval requests while paused). Returns whether to stop.

        Every rank calls this after every step and, while paused, once per turn of the wait; the
        requests come from :meth:`World.agree`, so all ranks save, evaluate, pause and stop together.
        """
        stop, pause, save, evaluate = self._requests()
        tic = time.perf_counter()
        was_paused = pause and not stop
        if was_paused:
            self.state.emit(ev.StateChanged(state="paused", step=step))
        while True:
            if save:
                self.state.save(step, "requested")
            if evaluate and not self.evaluator.validate(step) and self.prepared.data.valid:
                self.state.emit(ev.Notice(message=f"evaluation requested: step {step} has just been evaluated"))
            if not pause or stop:
                break
            if self.world.is_main:
                self.control.wait_for_resume(0.2)
            else:  # only rank 0 is paused and resumed; the others look again with it
                time.sleep(0.2)
            stop, pause, save, evaluate = self._requests()
        if was_paused:
            self.state.emit(ev.StateChanged(state="stopping" if stop else "running", step=step))
            self.clock.paused_for += time.perf_counter() - tic
        return stop

    def _requests(self) -> tuple[bool, bool, bool, bool]:
        """(stop, pause, save, eval) as every rank will act on them."""
        control = self.control
        control.poll()
        return self.world.agree(control.stopping, control.paused, control.take_save(), control.take_eval())
