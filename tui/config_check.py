"""What the Config screen shows about the text being edited: every error, or the resolved values
and the LR schedule over the run's real number of optimizer updates.

The engine's loader stops at the first mistake. To show them all, the line of each mistake found
is blanked (with the block nested under it) and the text checked again, until it passes or a
mistake has no line to blank (or is a YAML syntax error, whose successors would only be its
echoes). ``find_errors`` reads only the chain's small config files, so the
screen may call it on the event loop before a save or a start; ``check_config`` also reads the
dataset (to count an epoch's examples) and belongs in a worker.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from engine.config import load_stages, resolved_rows
from engine.config.load import load_sweep
from engine.config.checks import check_chain
from engine.errors import UserError
from engine.levers.memory_plan import plan_for_stage, size
from engine.training.schedule import schedule_curve, updates_in_run

MAX_ERRORS = 10


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake: its one-line message, and its file label and 1-based line where known."""

    message: str
    file: str | None
    line: int | None


@dataclass(frozen=True)
class Checked:
    """What one validation pass found: the errors, or the resolved table and LR curve."""

    errors: tuple[ConfigProblem, ...]
    resolved: list[tuple[str, str, str]]
    curve: list[tuple[int, float]]
    curve_note: str
    sweep_runs: int = 0  # a config with lists of values: how many runs its sweep trains
    memory: str = ""  # "needs about 3.4 GB of 25 GB", or that it may not fit and what would


def _blank_block(text: str, line: int) -> str | None:
    """``text`` with 1-based ``line`` and the lines nested under it emptied; None if already empty."""
    lines = text.split("\n")
    if not 0 < line <= len(lines) or not lines[line - 1].strip():
        return None
    indent = len(lines[line - 1]) - len(lines[line - 1].lstrip())
    lines[line - 1] = ""
    for i in range(line, len(lines)):
        stripped = lines[i].lstrip()
        if stripped and len(lines[i]) - len(stripped) <= indent:
            break
        lines[i] = ""
    return "\n".join(lines)


def find_errors(paths: list[Path], texts: dict[str, str]) -> tuple[tuple[ConfigProblem, ...], list]:
    """Every mistake in the chain (up to ``MAX_ERRORS``), and the stages when there is none."""
    texts = dict(texts)
    problems: list[ConfigProblem] = []
    while len(problems) < MAX_ERRORS:
        try:
            sweep = load_sweep(paths, texts=texts)  # lists of values: every point is checked
            stages = [point.stage for point in sweep.points] if sweep else load_stages(paths, texts=texts)
            check_chain(stages if not sweep else stages[:1])
            return tuple(problems), stages if not problems else []
        except UserError as e:
            file, line = getattr(e, "file", None), getattr(e, "line", None)
            problems.append(ConfigProblem(str(e), file, line))
            if file is None or line is None or "invalid YAML" in str(e):  # a syntax error cascades
                break
            if file not in texts:
                try:
                    texts[file] = Path(file).read_text(encoding="utf-8")
                except OSError:
                    break
            blanked = _blank_block(texts[file], line)
            if blanked is None:
                break
            texts[file] = blanked
    return tuple(problems), []


_EXAMPLE_COUNTS: OrderedDict[tuple, int | None] = OrderedDict()  # a dataset is read once per change of its files
COUNTS_KEPT = 8  # the recent datasets and settings, so editing other keys never reads a dataset again


def train_examples(stage) -> int | None:
    """The training split's example count for a local dataset; None for a hub dataset or one
    that cannot be read (the data errors are the Data screen's and the run's to report)."""
    from engine.data.sources import data_path, load_splits

    cfg = stage.config
    try:
        path = None if cfg.hf_dataset else data_path(stage)
    except UserError:
        return None
    if path is None:
        return None
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    key = (str(path), tuple((f.name, f.stat().st_mtime_ns) for f in files if f.is_file()),
           cfg.prompt_feature, cfg.completion_feature, cfg.text_feature, cfg.chat_feature,
           cfg.valid_fraction, cfg.seed)
    if key not in _EXAMPLE_COUNTS:
        try:
            _EXAMPLE_COUNTS[key] = len(load_splits(stage).train)
        except (UserError, OSError):
            _EXAMPLE_COUNTS[key] = None
        while len(_EXAMPLE_COUNTS) > COUNTS_KEPT:
            _EXAMPLE_COUNTS.popitem(last=False)
    _EXAMPLE_COUNTS.move_to_end(key)
    return _EXAMPLE_COUNTS[key]


def check_config(paths: list[Path], index: int, texts: dict[str, str]) -> Checked:
    """Validate the chain with unsaved ``texts`` standing in for their files; report stage ``index``.

    Runs in a worker thread. An error in any stage is reported, since a later stage inherits.
    """
    errors, stages = find_errors(paths, texts)
    if errors:
        return Checked(errors, [], [], "")
    sweep_runs = len(stages) if len(stages) > 1 and len(paths) == 1 else 0  # a sweep's points, not a chain
    stage = stages[index if not sweep_runs else 0]
    cfg = stage.config
    examples = train_examples(stage) if cfg.epochs is not None else None
    updates = updates_in_run(cfg, examples)
    if updates is None:
        note = "data not counted: 1000 shown"
    elif cfg.epochs is not None:
        note = f"{examples} examples x {cfg.epochs:g} ep"
    else:
        note = ""
    return Checked((), resolved_rows(stage), schedule_curve(cfg, updates or 1000), note, sweep_runs,
                   memory_line(stage))


def memory_line(stage) -> str:
    """The memory plan in a few words for the Config screen's status (``tuner validate`` prints it
    whole); empty when the model is not here to read (a hub id not downloaded)."""
    try:
        plan, _ = plan_for_stage(stage)
    except (UserError, OSError, ValueError, KeyError):  # the loader will say what is wrong
        return ""
    if plan is None:
        return ""
    need = f"needs about {size(plan.total)} of {size(plan.machine_bytes)}"
    if plan.verdict == "fits":
        return need
    fix = f"; would fit: {plan.fix_text()}" if plan.fixes else ""
    return f"⚠ {need} at max_seq_length{fix}"
