"""The Dataset screen: what the open config will train on, before any training starts.

Statistics come from ``engine.data.stats`` as plain data. Computing them reads and tokenises every
example, and showing one example loads its record and the tokenizer, so both run in thread
workers; widgets are touched only on the event loop, once per worker result. The statistics
are recomputed when the screen is shown after the config file changed, or on ``r``.

The module-level functions ``load_dataset`` and ``example_tokens`` are the only places that
call the engine, which keeps the screen testable with injected statistics.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from ..widgets.histogram import Histogram
from ..widgets.token_view import TokenView

if TYPE_CHECKING:
    from engine.config import Stage
    from engine.data.stats import DatasetStats, Distribution, ExampleRow, SplitStats, TokenCell

SPLITS = ("train", "valid", "test")
# sort column -> ExampleRow attribute, in the order ``s`` cycles through them
SORTS = {
    "index": "index", "total": "total_tokens", "prompt": "prompt_tokens", "completion": "completion_tokens", "Rg": "rg",
}
COLUMNS = ("index", "prompt", "completion", "total", "Rg", "flags", "origin")  # origin: file name and line
# Textual's DataTable measures every cell it is given (about 0.3 s per 2,000 rows), so the
# table shows the first rows of the sorted split; the sort itself always covers every row.
ROW_LIMIT = 2_000
PROGRESS_SECONDS = 0.1
PARSE_ERRORS_SHOWN = 3
PERCENTILES = ("mean", "min", "p10", "p25", "p50", "p75", "p90", "p99", "max")
NO_VALUE = "—"


@dataclass(frozen=True)
class Loaded:
    """A finished computation: the stage it was for and its statistics."""

    stage: Stage
    stats: DatasetStats
    worst: str = ""  # the latest evaluated run's worst validation examples, as text


@dataclass(frozen=True)
class ExampleTokens:
    """One example tokenised for the token view, or the one-line reason it could not be."""

    split: str
    index: int
    cells: tuple[TokenCell, ...] = ()
    error: str = ""


class Superseded(Exception):
    """Raised from the progress callback to stop a computation nobody waits for any more.

    Its worker is already cancelled, so whatever it returns is never shown.
    """


def load_dataset(chain: list[Path], progress, use_cache: bool, runs_dir: Path | None = None) -> Loaded:
    """Compute the statistics of the chain's last stage (on a worker thread).

    The stages before it are loaded too, because a later stage inherits their keys. When a run
    under ``runs_dir`` has evaluated, its worst validation examples come along.
    """
    from engine.cli import format_worst
    from engine.config import load_stages
    from engine.runs.listing import latest_evaluated_run, worst_validation
    from engine.data.stats import compute_stats

    stage = load_stages(chain)[-1]
    stats = compute_stats(stage, progress=progress, use_cache=use_cache)
    run = latest_evaluated_run(runs_dir) if runs_dir is not None else None
    found = worst_validation(run) if run is not None else None
    worst = format_worst(run, *found).strip() if found else ""
    return Loaded(stage, stats, worst)


def example_tokens(loaded: Loaded, split: str, index: int) -> list[TokenCell]:
    """One example's tokens as the loss sees them (on a worker thread).

    The engine keeps the tokenizer and the records it read last, so stepping through examples
    loads neither again.
    """
    from engine.data.stats import load_record, load_stage_tokenizer, token_view

    stats = loaded.stats
    record = load_record(loaded.stage, split, index)
    return token_view(load_stage_tokenizer(loaded.stage), record, stats.max_seq_length, stats.prompt_loss_weight)


def _problem(error: Exception) -> str:
    """A UserError is already one line for the user; anything else is a bug, named as such."""
    from engine.errors import UserError

    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------------------- text for the panels


def short_path(path: str | Path) -> str:
    """An absolute path under the working folder, written relative to it; anything else as given."""
    text = str(path)
    if os.path.isabs(text):
        relative = os.path.relpath(text)
        if not relative.startswith(".."):
            return relative
    return text


def _number(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if math.isfinite(value) else NO_VALUE


def _percent(value: float) -> str:
    return f"{value:.1%}" if math.isfinite(value) else NO_VALUE


def rg_text(value: float) -> str:
    """Rg to three significant digits; an example without prompt tokens has none."""
    return f"{value:.3g}" if math.isfinite(value) else NO_VALUE


def _share(part: int, whole: int) -> str:
    return f"{part:,} ({part / whole:.1%})" if whole else f"{part:,}"


def _flags(row: ExampleRow) -> str:
    """The worst thing ``max_seq_length`` does to the example."""
    if row.zero_completion:
        return "no completion"
    if row.completion_cut:
        return "completion cut"
    return "cut" if row.truncated else ""


def length_title(name: str, dist: Distribution) -> str:
    return f"{name} p50 {_number(dist.p50)} · p90 {_number(dist.p90)} · max {_number(dist.max)}"


def summary_text(stats: DatasetStats, split: SplitStats) -> str:
    """Counts, formats, parse errors, truncation, duplicates and overlap, then the length percentiles."""
    formats = " · ".join(f"{name} {count:,}" for name, count in split.formats.items() if count) or "nothing readable"
    lines = [f"{split.name}: {split.count:,} examples · {formats}"]
    if len(split.sources) > 1:
        lines.append("sources: " + " · ".join(f"{name} {part.count:,}" for name, part in split.sources.items()))
    errors = split.parse_errors
    if errors:
        more = f" (first {PARSE_ERRORS_SHOWN})" if len(errors) > PARSE_ERRORS_SHOWN else ""
        lines.append(f"{len(errors):,} rows could not be read{more}:")
        lines.extend(f"  {error}" for error in errors[:PARSE_ERRORS_SHOWN])
    lines.append(
        f"at max_seq_length {stats.max_seq_length:,}: {_share(split.truncated, split.count)} cut · "
        f"{_share(split.completion_cut, split.count)} lose completion tokens · "
        f"{_share(split.zero_completion, split.count)} keep no completion"
    )
    overlap = " · ".join(f"{pair} overlap {count:,}" for pair, count in stats.overlap.items())
    lines.append(f"duplicates within {split.name}: {split.duplicates:,}" + (f" · {overlap}" if overlap else ""))
    lines.append("")
    lines.append(f"{'tokens':<10}" + "".join(f"{name:>7}" for name in PERCENTILES))
    for name, dist in (("prompt", split.prompt), ("completion", split.completion), ("total", split.total)):
        values = [_number(dist.mean, 1)] + [_number(getattr(dist, key)) for key in PERCENTILES[1:]]
        lines.append(f"{name:<10}" + "".join(f"{value:>7}" for value in values))
    return "\n".join(lines)


def rg_notes(stats: DatasetStats, split: SplitStats) -> str:
    """The Rg figures printed beside its histogram, and the engine's guidance for the data."""
    rg = split.rg
    lines = [
        f"over {rg.count:,} examples with a prompt",
        f"arithmetic mean  {rg_text(rg.arithmetic_mean)}",
        f"geometric mean   {rg_text(rg.geometric_mean)}",
        f"median           {rg_text(rg.median)}",
        f"ratio of means   {rg_text(rg.ratio_of_means)}",
        f"share Rg < 1     {_percent(rg.share_below_1)}",
        f"without prompt   {rg.no_prompt:,}",
    ]
    if stats.guidance:
        lines += ["", stats.guidance]
    return "\n".join(lines)


def sorted_rows(rows: tuple[ExampleRow, ...], sort: str, descending: bool) -> list[ExampleRow]:
    """Rows in the chosen order; rows without a value (Rg of a prompt-less example) always go last."""
    key = attrgetter(SORTS[sort])
    known = [row for row in rows if not math.isnan(key(row))]
    unknown = [row for row in rows if math.isnan(key(row))]
    return sorted(known, key=key, reverse=descending) + unknown


def row_cells(row: ExampleRow) -> tuple:
    numbers = (row.index, row.prompt_tokens, row.completion_tokens, row.total_tokens)
    right = [Text(f"{n:,}", justify="right") for n in numbers]
    return (*right, Text(rg_text(row.rg), justify="right"), _flags(row), row.origin.rsplit("/", 1)[-1])


# ---------------------------------------------------------------------------- the screen


class DatasetScreen(Screen):
    """Statistics of the open config's data per split, and a browser of its tokenised examples."""

    BINDING_GROUP_TITLE = "Dataset"
    HELP = """\
## Dataset

What the open config will train on, computed with its own tokenizer, chat template and
`max_seq_length`.

- **v** switches between the train, valid and test splits; **r** recomputes (the statistics
  are also recomputed when this screen is shown after the config file changed).
- **e** switches between the overview and the examples.
- In the examples, **s** picks the sort column and **o** flips the order; **n**/**p** (or
  **j**/**k**, or the arrows) step through examples, and the selected one is shown token by token:
  prompt dimmed with its weight `[w=…]`, completion bold, `‹special›` tokens coloured, and
  tokens cut by `max_seq_length` struck through after a ✂.

**Rg** is an example's completion tokens divided by its prompt tokens. The vertical line on
the length histograms marks `max_seq_length`, and on the Rg histogram Rg = 1.
"""
    # the footer shows the first three (it must fit 80 columns beside the app's keys); F1 lists all
    BINDINGS = [
        Binding("v", "next_split", "Split", id="dataset-split", tooltip="Show the next split: train, valid, test"),
        Binding("e", "toggle_view", "View", id="dataset-view", tooltip="Switch between overview and examples"),
        Binding("s", "next_sort", "Sort", id="dataset-sort",
                tooltip="Sort examples by index, total, prompt, completion, Rg"),
        Binding("o", "flip_order", "Order", id="dataset-order", show=False, tooltip="Flip the sort order"),
        Binding("n,j", "step(1)", "Next", id="dataset-next", show=False, tooltip="Show the next example"),
        Binding("p,k", "step(-1)", "Previous", id="dataset-prev", show=False, tooltip="Show the previous example"),
        Binding("r", "recompute", "Recompute", id="dataset-refresh", show=False,
                tooltip="Read and tokenise the data again, ignoring the cache"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.loaded: Loaded | None = None
        self.split = "train"
        self.sort = "index"
        self.descending = False
        self._computed_for: tuple[tuple[Path, int | None], ...] = ()  # the chain's files and mtimes
        self._example: tuple[str, int] | None = None  # the example asked for last
        self._shown_rows: list[ExampleRow] = []  # the table's rows, in table order
        self._shown_split = ""

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="dataset-top"):
            yield Static("", id="dataset-source")
            yield Static("", id="dataset-splits")
            yield Static("", id="dataset-error")
            yield ProgressBar(total=None, show_eta=False, id="dataset-progress")
        with TabbedContent(id="dataset-tabs"):
            with TabPane("Overview", id="dataset-overview"):
                with VerticalScroll():
                    yield Static("", id="dataset-summary")
                    with Grid(id="dataset-lengths"):
                        for name in ("prompt", "completion", "total"):
                            yield Histogram(id=f"dataset-{name}")
                    with Horizontal(id="dataset-rg-row"):
                        yield Histogram(id="dataset-rg")
                        yield Static("", id="dataset-rg-notes")
                    yield Static("", id="dataset-worst")
            with TabPane("Examples", id="dataset-examples"):
                yield Static("", id="dataset-table-note")
                yield DataTable(cursor_type="row", zebra_stripes=True, id="dataset-table")
                yield Static("", id="dataset-example-title")
                with VerticalScroll(id="dataset-token-scroll"):
                    yield TokenView("select an example to see its tokens", id="dataset-tokens")
        yield Footer(compact=True, show_command_palette=False)

    def on_resize(self) -> None:
        self.set_class(self.size.width < 110, "-narrow")

    def on_screen_resume(self) -> None:
        if self._chain_files() != self._computed_for:
            self.recompute(use_cache=True)

    def _chain_files(self) -> tuple[tuple[Path, int | None], ...]:
        """The config files up to the open stage, with their modification times."""
        files = []
        for path in map(Path, self.app.config_paths[: self.app.stage_index + 1]):
            try:
                files.append((path, path.stat().st_mtime_ns))
            except OSError:
                files.append((path, None))  # loading it will say what is wrong
        return tuple(files)

    @property
    def config_label(self) -> str:
        """The open config file, and its place when it is a stage of a chain."""
        chain = self._computed_for
        stage = f" (stage {len(chain)} of the chain)" if len(chain) > 1 else ""
        return f"{short_path(chain[-1][0])}{stage}" if chain else ""

    # ------------------------------------------------------------------ computing

    def action_recompute(self) -> None:
        self.recompute(use_cache=False)

    def recompute(self, use_cache: bool) -> None:
        self._computed_for = self._chain_files()
        self.add_class("-busy")
        self.query_one("#dataset-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#dataset-source", Static).update(f"{self.config_label} · reading and tokenising the data …")
        self.compute([path for path, _ in self._computed_for], use_cache)

    @work(thread=True, exclusive=True, group="dataset-stats")
    def compute(self, chain: list[Path], use_cache: bool) -> Loaded | str:
        worker = get_current_worker()
        last = 0.0

        def progress(done: int, total: int) -> None:
            """Called by the engine on this thread; forwards at most ten updates a second."""
            nonlocal last
            if worker.is_cancelled:
                raise Superseded
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS or done >= total:
                last = now
                self.app.call_from_thread(self._show_progress, done, total)

        try:
            return load_dataset(chain, progress, use_cache, getattr(self.app, "runs_dir", None))
        except Exception as error:  # shown on the screen; the app stays alive
            return _problem(error)

    def _show_progress(self, done: int, total: int) -> None:
        self.query_one("#dataset-progress", ProgressBar).update(total=total, progress=done)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Apply a worker's result on the event loop; a superseded worker never gets here."""
        if event.state != WorkerState.SUCCESS:
            return
        result = event.worker.result
        if event.worker.group == "dataset-stats":
            self.remove_class("-busy")
            if isinstance(result, Loaded):
                self.show_loaded(result)
            else:
                self._show_error(result)
        elif event.worker.group == "dataset-example":
            self._show_example(result)

    def _show_error(self, message: str) -> None:
        error = self.query_one("#dataset-error", Static)
        error.update(message)
        error.display = bool(message)
        if message:
            self.query_one("#dataset-source", Static).update(f"{self.config_label} · could not compute the statistics")

    # ------------------------------------------------------------------ showing statistics

    def show_loaded(self, loaded: Loaded) -> None:
        """Show freshly computed statistics, keeping the split shown if it still exists."""
        stats = loaded.stats
        self._show_error("")
        self.loaded = loaded
        self._example = None  # tokenise the selected example again, with the new settings
        if self.split not in stats.splits:
            self.split = next(iter(stats.splits))
        config = loaded.stage.config
        data = short_path(config.data) if config.data else ", ".join(entry.path for entry in config.hf_dataset or ())
        cached = " · from cache" if stats.cached else ""
        self.query_one("#dataset-source", Static).update(
            f"{self.config_label} · data {data} · tokenizer {stats.tokenizer} · "
            f"max_seq_length {stats.max_seq_length:,} · PLW {stats.prompt_loss_weight:g}{cached}"
        )
        worst = self.query_one("#dataset-worst", Static)
        worst.update(loaded.worst)
        worst.display = bool(loaded.worst)
        self._show_split()

    def _show_split(self) -> None:
        stats = self.loaded.stats
        split = stats.splits[self.split]
        names = Text("split  ")
        for name in SPLITS:
            if name in stats.splits:
                names.append(f" {name} ", "reverse bold" if name == self.split else "")
                names.append(" ")
        names.append("  v next split · r recompute", "dim")
        self.query_one("#dataset-splits", Static).update(names)
        self.query_one("#dataset-summary", Static).update(summary_text(stats, split))
        for name, dist in (("prompt", split.prompt), ("completion", split.completion), ("total", split.total)):
            self.query_one(f"#dataset-{name}", Histogram).show(
                dist.bin_edges, dist.bin_counts, length_title(name, dist), marker=stats.max_seq_length
            )
        self.query_one("#dataset-rg", Histogram).show(
            split.rg.log10_bin_edges, split.rg.bin_counts, "Rg = completion / prompt tokens (log scale)",
            marker=1.0, log_x=True,
        )
        self.query_one("#dataset-rg-notes", Static).update(rg_notes(stats, split))
        self._fill_table()

    def action_next_split(self) -> None:
        if self.loaded is None:
            return
        names = [name for name in SPLITS if name in self.loaded.stats.splits]
        self.split = names[(names.index(self.split) + 1) % len(names)] if self.split in names else names[0]
        self._show_split()

    def action_toggle_view(self) -> None:
        tabs = self.query_one(TabbedContent)
        tabs.active = "dataset-overview" if tabs.active == "dataset-examples" else "dataset-examples"

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "dataset-examples":
            self.query_one(DataTable).focus()

    # ------------------------------------------------------------------ the example browser

    def action_next_sort(self) -> None:
        names = list(SORTS)
        self.sort = names[(names.index(self.sort) + 1) % len(names)]
        self._fill_table()

    def action_flip_order(self) -> None:
        self.descending = not self.descending
        self._fill_table()

    def _fill_table(self) -> None:
        """Show the split's rows in the chosen order, keeping the selected example selected."""
        if self.loaded is None:
            return
        rows = self.loaded.stats.splits[self.split].rows
        shown = sorted_rows(rows, self.sort, self.descending)[:ROW_LIMIT]
        table = self.query_one(DataTable)
        selected = None
        if self._shown_split == self.split and 0 <= table.cursor_row < len(self._shown_rows):
            selected = self._shown_rows[table.cursor_row].index
        self._shown_rows, self._shown_split = shown, self.split
        arrow = " ↓" if self.descending else " ↑"
        table.clear(columns=True)
        for column in COLUMNS:
            table.add_column(column + (arrow if column == self.sort else ""), key=column)
        table.add_rows((row_cells(row) for row in shown))
        order = "descending" if self.descending else "ascending"
        limit = f"the first {len(shown):,} of {len(rows):,}" if len(shown) < len(rows) else f"all {len(rows):,}"
        self.query_one("#dataset-table-note", Static).update(
            f"{self.split}: {limit} examples, sorted by {self.sort} {order} · s sort column · o order · n/p step"
        )
        position = next((i for i, row in enumerate(shown) if row.index == selected), 0)
        if shown:
            table.move_cursor(row=position)
            self._request_example(shown[position].index)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self._shown_rows):
            self._request_example(self._shown_rows[event.cursor_row].index)

    def action_step(self, delta: int) -> None:
        self.query_one(TabbedContent).active = "dataset-examples"
        table = self.query_one(DataTable)
        table.move_cursor(row=max(0, table.cursor_row + delta))

    def _request_example(self, index: int) -> None:
        if self.loaded is None or self._example == (self.split, index):
            return
        self._example = (self.split, index)
        self.query_one("#dataset-example-title", Static).update(f"{self.split} #{index} · tokenising …")
        self.tokenize_example(self.loaded, self.split, index)

    @work(thread=True, exclusive=True, group="dataset-example")
    def tokenize_example(self, loaded: Loaded, split: str, index: int) -> ExampleTokens:
        try:
            return ExampleTokens(split, index, tuple(example_tokens(loaded, split, index)))
        except Exception as error:  # shown in the example's title line
            return ExampleTokens(split, index, error=_problem(error))

    def _show_example(self, example: ExampleTokens) -> None:
        if (example.split, example.index) != self._example:
            return  # the cursor has moved on
        title = self.query_one("#dataset-example-title", Static)
        if example.error:
            title.update(f"{example.split} #{example.index} · {example.error}")
            self.query_one(TokenView).show(())
            return
        row = next(row for row in self.loaded.stats.splits[example.split].rows if row.index == example.index)
        title.update(
            f"{example.split} #{example.index} · {short_path(row.origin)} · {row.fmt} · {row.prompt_tokens:,} prompt + "
            f"{row.completion_tokens:,} completion tokens · Rg {rg_text(row.rg)}"
        )
        self.query_one(TokenView).show(example.cells)
        self.query_one("#dataset-token-scroll").scroll_home(animate=False)
