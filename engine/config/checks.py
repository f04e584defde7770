"""Checks that need several values, or several stages, of the configs and nothing else.

A single value's type and range are the schema's business (:mod:`engine.config.schema`); what
is here looks across keys, across the stages of a chain, or at how the ranks of a data-parallel
run share a batch, before any model or data is loaded, so ``tuner validate``, the config screen
and ``tuner train`` (foreground, ``--detach`` and ``--hosts``) refuse the same things at once.
Each error is located where the user set the key.
"""

import os
from pathlib import Path

from engine.config.load import Stage

SHAPE_KEYS = ("fine_tune_type", "num_layers")
NAME_MAX = 255  # bytes in one file name, on the usual file systems


def check_chain(stages: list[Stage], ranks: int = 1) -> None:
    """Every config-only check of a chain trained on ``ranks`` ranks: each stage's keys, each
    stage against the one before, and each batch against the ranks."""
    for stage in stages:
        check_keys(stage)
    for stage in stages[:-1]:
        if not stage.config.train:
            raise stage.error("train", "false (evaluate only) leaves no adapters for the next stage to continue; "
                              "only a chain's last stage can be an evaluation")
    check_continuity(stages)
    check_ranks(stages, ranks)


def check_keys(stage: Stage) -> None:
    """Keys that only make sense together."""
    cfg = stage.config
    if cfg.val_batches == 0 and cfg.early_stopping_patience:
        raise stage.error("early_stopping_patience", "needs validation, and val_batches is 0 (no validation)")
    check_best_metric(stage)
    for key in ("runs_dir", "adapter_path"):
        if (value := getattr(cfg, key)) is not None and (problem := folder_problem(Path(value))) is not None:
            raise stage.error(key, problem)


def check_best_metric(stage: Stage) -> None:
    """A ``best_metric`` other than the completion loss needs its measurement configured: refused
    here rather than found missing at the first evaluation, hours into a run."""
    cfg = stage.config
    metric = cfg.best_metric
    if metric == "completion_loss":
        return
    if cfg.val_batches == 0:
        raise stage.error("best_metric", f"{metric} is measured on validation, and val_batches is 0 (no validation)")
    if metric == "exact_match" and not cfg.eval_generations:
        raise stage.error("best_metric", "exact_match needs eval_generations: N (validation examples to generate)")
    if metric == "choice_accuracy" and not cfg.answer_choices:
        raise stage.error("best_metric", "choice_accuracy needs answer_choices: [...] (the answers to score)")


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder: a name longer than file systems allow, or
    it (or the nearest of its parents that exists) is not a folder. None when it can."""
    if any(len(part.encode(errors="surrogateescape")) > NAME_MAX for part in path.parts):
        return f"a folder name in {path} is longer than {NAME_MAX} bytes"
    for place in (path, *path.parents):
        if not os.path.lexists(place):
            continue
        if place.is_dir():
            return None
        return f"{place} is not a folder" + (f", so {path} cannot be one" if place != path else "")
    return None


def check_continuity(stages: list[Stage]) -> None:
    """Refuse a stage whose trained layers differ from the previous one's, which it continues."""
    for prev, cur in zip(stages, stages[1:]):
        if "resume_adapter_file" in cur.explicit:
            continue  # the stage names its own starting point
        for key in SHAPE_KEYS:
            if getattr(prev.config, key) != getattr(cur.config, key):
                raise cur.error(
                    key,
                    f"{getattr(cur.config, key)!r} differs from stage {prev.index + 1}'s "
                    f"{getattr(prev.config, key)!r}; a stage continues the previous stage's weights, "
                    "so the trained layers must match",
                )
        if cur.config.fine_tune_type != "full":
            a, b = prev.config.lora_parameters, cur.config.lora_parameters
            for key in ("rank", "keys"):
                if _as_set(getattr(a, key)) != _as_set(getattr(b, key)):
                    raise cur.error(
                        "lora_parameters",
                        f"{key} {getattr(b, key)!r} differs from stage {prev.index + 1}'s "
                        f"{getattr(a, key)!r}; the LoRA shape must match to continue its adapters",
                    )


def _as_set(value):
    """LoRA keys name a set of layers; their order in the list means nothing."""
    return frozenset(value) if isinstance(value, list) else value


def check_ranks(stages: list[Stage], ranks: int, over: str | None = None) -> None:
    """Refuse a batch that does not split evenly over the ranks of a data-parallel run.

    ``over`` names the ranks in the message (default ``"N ranks"``; ``tuner train --hosts`` names
    its hostfile's hosts).
    """
    for stage in stages:
        if stage.config.batch_size % ranks:
            raise stage.error("batch_size", f"{stage.config.batch_size} does not split evenly over "
                              f"{over or f'{ranks} ranks'}; use a multiple of {ranks}")
