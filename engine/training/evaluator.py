"""Validation and test passes, the best checkpoint, early stopping, and sample generations.

A pass is deterministic: the first ``val_batches`` batches of the split, sorted by length, scored
without dropout through the stage's :class:`engine.training.loss_path.LossPath`. Each validation
writes every example's losses to ``eval_examples.json`` (worst completion first, so a person can
find what the model gets wrong), measures the answers (answer-token accuracy from the same sums;
choice accuracy and exact match, :mod:`engine.training.answers`), checkpoints a new best
``best_metric`` (validation completion loss unless the config names an answer measure), counts the
evaluations since one for early stopping, and generates a few samples to read beside the numbers.
A step is validated once: the weights have not changed since, so a second pass (an eval request
served right after the scheduled one) would only repeat the numbers and the samples, and count
against patience. The step-0 validation scores the starting weights, which no checkpoint holds:
when it stays the best, ``best.json`` and the stop message say so and name the best trained
checkpoint beside it.
With several ranks, each scores its share of every batch and the rows are gathered, so every rank
ends with the same totals and takes the same decisions.
Samples are at most ``max_seq_length`` tokens long whatever ``sample_max_tokens`` says, and a stop
request (Ctrl-C, SIGTERM, ``tuner control stop``) is honoured between generated tokens and between
the batches of a single-process pass: an interrupted pass reports nothing, and the loop then
stops and saves as it does after any step.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Callable

import mlx.core as mx
import numpy as np
from mlx_lm.generate import stream_generate

from engine import events as ev
from engine.data.batching import collate
from engine.data.tokenize import Example
from engine.files import atomic_write_json
from engine.loss import EvalTotals
from engine.runs.checkpoints import Best, Checkpoints
from engine.runs.listing import EVAL_EXAMPLES
from engine.training.answers import ChoiceSet, ExactCheck, answered, choice_scores, detect_choices, reference
from engine.training.distributed import World
from engine.training.prepare import PreparedStage

HIGHER_IS_BETTER = frozenset({"answer_accuracy", "choice_accuracy", "exact_match"})  # best_metric values


class Evaluator:
    """Scores a stage's splits and keeps the best validation.

    ``save(step, reason)`` checkpoints the training state (every rank calls it);
    ``checkpoints``, rank 0's (None on the others, which write nothing), also gives the run
    folder that ``eval_examples.json`` goes to. ``training``: False for ``train: false``, which
    only reports (no best, no checkpoints). ``stopping``: whether a stop was asked for (the
    run's ``Control``), asked between generated tokens and between evaluation batches.
    """

    def __init__(self, prepared: PreparedStage, world: World, emit: Callable[[ev.Event], None],
                 save: Callable[[int, str], None], checkpoints: Checkpoints | None, training: bool = True,
                 stopping: Callable[[], bool] | None = None):
        self.prepared, self.cfg, self.world, self.emit = prepared, prepared.cfg, world, emit
        self.save, self.checkpoints, self.training = save, checkpoints, training
        self._stop = StopCheck(stopping or (lambda: False))
        self._sample_limit_noted = False
        self.best: tuple[float, int] | None = None  # (valid best_metric value, step) of the best eval
        self.best_trained: tuple[float, int] | None = None  # the same over steps > 0, which have checkpoints
        self._choices: ChoiceSet | bool | None = None  # the choice-scored examples; False: none, None: not yet looked
        self.evals_since_best = 0
        self.validated_step = -1  # the step of the latest validation
        self._compiled = {}  # validation's sums per shared prefix length, built on first use

    def validate(self, step: int) -> bool:
        """A validation pass (none without a validation set, or when ``step`` was just validated),
        its event, best and samples. Returns whether it ran."""
        if not self.prepared.data.valid or step == self.validated_step:
            return False
        self.validated_step = step
        self._pass(step, "valid", self.prepared.data.valid, self.cfg.val_batches)
        return True

    def restore_best(self, saved: Best | None) -> None:
        """On resume, the run's best so far (``best.json``, which only rank 0 reads; every rank
        takes its values), so that only a better validation replaces it. The count of evaluations
        towards patience starts again."""
        if saved is not None and saved.metric != self.cfg.best_metric:  # measured otherwise: start afresh
            saved = None
        trained = None if saved is None else saved if saved.step > 0 else saved.trained
        losses = [saved.value if saved else 0.0, trained.value if trained else 0.0]
        steps = [saved.step if saved else -1, trained.step if trained else -1]
        losses = self.world.from_main(mx.array(losses, dtype=mx.float32)).tolist() if self.world.distributed else losses
        steps = self.world.from_main_ints(steps)
        if steps[0] >= 0:
            self.best = (losses[0], steps[0])
        if steps[1] > 0:
            self.best_trained = (losses[1], steps[1])

    def test(self, step: int) -> None:
        """The test pass at the end of a completed stage (none unless ``test: true``)."""
        if self.prepared.data.test:
            self._pass(step, "test", self.prepared.data.test, self.cfg.test_batches)

    @property
    def patience_exhausted(self) -> bool:
        patience = self.cfg.early_stopping_patience
        return patience is not None and self.evals_since_best >= patience

    def stop_reason(self) -> str:
        """Why early stopping ends the stage, naming the best checkpoint (or, when no trained step
        beat the starting weights, saying so and naming the best trained one)."""
        best_loss, best_step = self.best
        metric = self.cfg.best_metric.replace("_", " ")
        said = f"no better validation {metric} in {self.cfg.early_stopping_patience} evaluations; "
        if best_step > 0:
            return said + f"best {best_loss:.4f} at step {best_step} ({Checkpoints.relative(best_step)})"
        said += f"best {best_loss:.4f} at step 0, before training: no trained step beat the starting weights"
        if self.best_trained is not None:
            loss, step = self.best_trained
            said += f"; best trained {loss:.4f} at step {step} ({Checkpoints.relative(step)})"
        return said

    def evaluate(self, examples: list[Example], max_batches: int) -> tuple[EvalTotals, list[dict]]:
        """Deterministic pass over the first ``max_batches`` batches (-1: all), length-sorted.

        Returns the totals and one row per example (its losses and token counts).
        """
        model, size, pad_id = self.prepared.model, self.cfg.batch_size, self.prepared.data.pad_id
        subset = examples if max_batches == -1 else examples[: max_batches * size]
        subset = sorted(subset, key=len)
        totals, rows = EvalTotals(), []
        prefix = self.prepared.loss.eval_prefix(subset)
        model.eval()
        for i in range(0, len(subset), size):
            if not self.world.distributed and self._stop():  # ranks must finish a pass together
                break
            chunk = subset[i : i + size]
            share = self.world.share(chunk)
            batch = collate(share, pad_id, answers=True)
            sums = self._sums(mx.array(batch.ids), mx.array(batch.roles), prefix)
            sums = self._gather_rows(sums[: len(share)], len(chunk))
            totals.add(sums, len(chunk))
            rows.extend(_example_row(example, *values) for example, values in zip(chunk, sums.tolist()))
        model.train()
        return totals, rows

    def _sums(self, ids: mx.array, roles: mx.array, prefix: int) -> mx.array:
        """Validation's per-example sums, compiled (once per batch shape): eager, each element-wise
        op is its own pass over memory, and the CPU's polynomial exponentials are a dozen of them
        (bench/README.md, "Compiled validation"). ``prefix``: the leading tokens every row shares, computed once; one compiled function each."""
        if prefix not in self._compiled:
            model = self.prepared.model
            sums = partial(self.prepared.loss.eval_sums, model, prefix=prefix)
            self._compiled[prefix] = mx.compile(sums, inputs=model.state)
        return self._compiled[prefix](ids, roles)

    def _gather_rows(self, rows: mx.array, n: int) -> mx.array:
        """All ranks' per-example rows of one batch of ``n`` examples, in the batch's order
        (example j is row j // size of rank j % size)."""
        world = self.world
        if not world.distributed:
            return rows
        width = -(-n // world.size)
        padded = mx.concatenate([rows, mx.zeros((width - rows.shape[0], rows.shape[1]), rows.dtype)])
        gathered = world.gather(padded)
        order = mx.array([(j % world.size) * width + j // world.size for j in range(n)])
        return gathered[order]

    def _pass(self, step: int, split: str, examples: list[Example], batches: int) -> None:
        tic = time.perf_counter()
        t, rows = self.evaluate(examples, batches)
        answers = self._answer_measures(examples, batches) if split == "valid" else {}
        if self._stop.seen and not self.world.distributed:  # cut short: its numbers would mislead
            return
        if split == "valid" and self.world.is_main:  # the latest validation, worst completion loss first
            rows.sort(key=lambda r: -(r["completion_loss"] or 0.0))
            atomic_write_json(self.checkpoints.run_dir / EVAL_EXAMPLES, {"step": step, "examples": rows})
        report = ev.EvalReport(
            step=step,
            split=split,
            prompt_loss=t.prompt_loss,
            completion_loss=t.completion_loss,
            full_loss=t.full_loss,
            weighted_loss=t.weighted_loss(self.cfg.plw),
            completion_accuracy=t.completion_accuracy,
            completion_perplexity=math.exp(min(t.completion_loss, 50.0)),
            prompt_tokens=t.prompt_tokens,
            completion_tokens=t.completion_tokens,
            examples=t.examples,
            seconds=time.perf_counter() - tic,
            answer_accuracy=t.answer_accuracy,
            answer_tokens=t.answer_tokens,
            **answers,
        )
        self.emit(report)
        if split == "valid":
            if self.training:
                self._track_best(step, getattr(report, self.cfg.best_metric))
            self._samples(step)

    def _better(self, value: float, than: float) -> bool:
        return value > than if self.cfg.best_metric in HIGHER_IS_BETTER else value < than

    def _track_best(self, step: int, loss: float) -> None:
        """Count evals since the best validation ``best_metric`` (``loss``: its value, lower or higher
        is better), record the best in ``best.json``, and checkpoint every new best of the trained
        steps (step 0's weights are the start's). An unmeasured (NaN) value counts for nothing."""
        if not math.isfinite(loss):
            return
        if step > 0 and (self.best_trained is None or self._better(loss, self.best_trained[0])):
            self.best_trained = (loss, step)
            self.save(step, "best")
        if self.best is None or self._better(loss, self.best[0]):
            self.best, self.evals_since_best = (loss, step), 0
        else:
            self.evals_since_best += 1
        if self.world.is_main and (self.best[1] == step or self.best_trained == (loss, step)):
            self.checkpoints.mark_best(self.best, self.best_trained, self.cfg.best_metric)

    def _answer_measures(self, examples: list[Example], batches: int) -> dict:
        """This validation's choice accuracy and exact match, as EvalReport fields (those not
        measured are left out: NaN). Every rank measures the same, so all take the same decisions;
        a stop request cuts a single-process pass short (``_pass`` then reports nothing)."""
        model, out = self.prepared.model, {}
        model.eval()
        choices = self._choice_set(examples, batches)
        if choices:
            hits = 0
            for scored, right in choices.items:
                if not self.world.distributed and self._stop():
                    break
                hits += int(np.argmax(choice_scores(model, scored))) == right
            out["choice_accuracy"] = hits / len(choices)
        if self.cfg.eval_generations:
            out.update(self._exact_match())
        model.train()
        return out

    def _choice_set(self, examples: list[Example], batches: int) -> ChoiceSet | None:
        """The examples choice accuracy scores, tokenised at the first validation and kept: the
        validation records of the pass's examples, over ``answer_choices`` or the detected set
        (said once in a notice, so a user knows what the number is over)."""
        if self._choices is None:
            subset = examples if batches == -1 else examples[: batches * self.cfg.batch_size]
            origins = {e.origin for e in subset}
            records = [r for r in self.prepared.data.valid_records if r.origin in origins]
            configured = self.cfg.answer_choices
            choices = tuple(configured) if configured is not None else detect_choices(records)
            self._choices = False
            if choices:
                self._choices = ChoiceSet(self.prepared.tokenizer, records, choices, self.cfg.max_seq_length)
                how = "answer_choices" if configured else "detected from the validation completions; answer_choices names them"
                self.emit(ev.Notice(message=f"choice accuracy over {', '.join(choices)} ({how}): "
                                    f"{len(self._choices)} validation example(s) scored by log-probability"))
        return self._choices or None

    def _exact_match(self) -> dict:
        """Greedy answers to the first ``eval_generations`` validation prompts against their
        references; each stops once it ended or can no longer match."""
        records = answered(self.prepared.data.valid_records)[: self.cfg.eval_generations]
        stop = (lambda: False) if self.world.distributed else self._stop
        hits = 0
        for record in records:
            check = ExactCheck(self.prepared.tokenizer, reference(record))
            prompt_ids = self._prompt_ids(record)
            text = self._generate(prompt_ids, max(1, self.cfg.max_seq_length - len(prompt_ids)), stop, check.done)
            if text is None:
                return {}
            hits += check.matches(text)
        return {"exact_match": hits / len(records) if records else math.nan, "exact_matches": hits,
                "generations": len(records)}

    def _prompt_ids(self, record) -> list[int]:
        """The prompt of a chat record's last answer, as the model reads it before answering."""
        return self.prepared.tokenizer.apply_chat_template(list(record.messages[:-1]), add_generation_prompt=True)

    def _samples(self, step: int) -> None:
        """Greedy generations for the first validation prompts, to read beside the numbers."""
        n = self.cfg.samples_per_eval
        if not n or not self.world.is_main:
            return
        model, tokenizer = self.prepared.model, self.prepared.tokenizer
        max_tokens = self._sample_limit()
        model.eval()
        for record in answered(self.prepared.data.valid_records)[:n]:
            prompt_messages = list(record.messages[:-1])
            prompt_ids = self._prompt_ids(record)
            text = self._generate(prompt_ids, max_tokens)
            if text is None:  # a stop request: the loop stops and saves next
                break
            self.emit(ev.SampleGenerated(step=step, prompt=prompt_messages[-1]["content"], completion=text,
                                         reference=record.messages[-1]["content"],
                                         rendered_prompt=tokenizer.decode(prompt_ids)))
        model.train()

    def _sample_limit(self) -> int:
        """``sample_max_tokens``, but no longer than ``max_seq_length``: the model was trained on no
        longer sequences, and a limit of a billion would generate for hours. Said once per stage."""
        limit, longest = self.cfg.sample_max_tokens, self.cfg.max_seq_length
        if limit <= longest:
            return limit
        if not self._sample_limit_noted:
            self._sample_limit_noted = True
            self.emit(ev.Notice(message=f"sample_max_tokens {limit:,} is more than max_seq_length {longest:,}: "
                                f"samples stop at {longest:,} tokens", level="warning"))
        return longest

    def _generate(self, prompt_ids: list[int], max_tokens: int, stop: Callable[[], bool] | None = None,
                  done: Callable[[str], bool] | None = None) -> str | None:
        """Greedy text for ``prompt_ids`` (mlx-lm's ``generate``, token by token), or None when a
        stop was asked for meanwhile (``stop``, the run's by default). ``done(text)``: the text
        needs no more tokens."""
        stop = stop or self._stop
        text = ""
        for response in stream_generate(self.prepared.model, self.prepared.tokenizer, prompt_ids,
                                        max_tokens=max_tokens):
            text += response.text
            if stop():
                return None
            if done is not None and done(text):
                break
        return text


class StopCheck:
    """``stopping()`` asked at most every ``seconds`` (it may read the control inbox from disk), so a
    check between generated tokens costs nothing; a stop once seen stays seen, as a Control's does."""

    def __init__(self, stopping: Callable[[], bool], seconds: float = 0.2):
        self.stopping, self.seconds = stopping, seconds
        self.asked_at = -math.inf
        self.seen = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.seen and now - self.asked_at >= self.seconds:
            self.asked_at = now
            self.seen = bool(self.stopping())
        return self.seen


def _example_row(example: Example, p_ce: float, p_n: float, c_ce: float, c_n: float, c_ok: float,
                 a_n: float, a_ok: float) -> dict:
    """One example's line of ``eval_examples.json``."""
    return {
        "origin": example.origin,
        "prompt_tokens": int(p_n),
        "completion_tokens": int(c_n),
        "prompt_loss": p_ce / p_n if p_n else None,
        "completion_loss": c_ce / c_n if c_n else None,
        "completion_accuracy": c_ok / c_n if c_n else None,
        "answer_accuracy": a_ok / a_n if a_n else None,
    }
