"""The Dataset screen: what the open config will train on, before any training starts.

Statistics come from ``engine.data.stats`` as plain data. Computing them reads and tokenises every
example, and showing one example loads its record and the tokenizer, so both run in thread
workers whose results come back as messages. The statistics are recomputed when the screen is
shown after a file of the config chain changed, or on ``r``. The overview, the example table and
the latest run's worst validation examples (which follow new evaluations on their own) are widgets
of their own (``tui/widgets/split_overview.py``, ``example_table.py``, ``worst_examples.py``).

The module-level functions ``load_dataset`` and ``example_tokens`` are the only places that
call the engine, so tests inject statistics through them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, ProgressBar, Static, TabbedContent, TabPane, Tabs
from textual.worker import get_current_worker

from engine.errors import UserError

from ..config_chain import ConfigChain
from ..dataset_work import ExampleTokens, Loaded, Superseded, example_tokens, load_dataset
from ..messages import WorkerResult
from ..widgets.example_table import ROW_LIMIT, ExampleTable, sorted_rows
from ..widgets.split_overview import SplitOverview, rg_text
from ..widgets.token_view import TokenView
from ..widgets.worst_examples import WorstExamples

SPLITS = ("train", "valid", "test")
PROGRESS_SECONDS = 0.1
VIEWS = ("dataset-overview", "dataset-examples")  # the tab panes e switches between


def _problem(error: Exception) -> str:
    """A UserError is already one line for the user; anything else is a bug, named as such."""
    return str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"


def short_path(path: str | Path) -> str:
    """An absolute path under the working folder, written relative to it; anything else as given."""
    text = str(path)
    if os.path.isabs(text):
        relative = os.path.relpath(text)
        if not relative.startswith(".."):
            return relative
    return text


class DatasetScreen(Screen):
    """Statistics of the open config's data per split, and a browser of its tokenised examples."""

    BINDING_GROUP_TITLE = "Dataset"
    HELP = """\
## Dataset

What the open config will train on, computed with its own tokenizer, chat template and
`max_seq_length`.

- **v** switches between the train, valid and test splits; **r** recomputes (the statistics
  are also recomputed when this screen is shown after the config file changed).
- **e** switches between the overview and the examples, and back; the arrows, **PageUp**/**PageDown**
  and **Home**/**End** scroll whichever is shown (**Tab** reaches the tab bar and the token view).
- In the examples, **s** picks the sort column and **o** flips the order; **n**/**p** (or
  **j**/**k**, or the arrows) step through examples, and the selected one is shown token by token:
  prompt dimmed with its weight `[w=…]`, completion bold, `‹special›` tokens coloured, and
  tokens cut by `max_seq_length` struck through after a ✂.

**Rg** is an example's completion tokens divided by its prompt tokens. The vertical line on
the length histograms marks `max_seq_length`, and on the Rg histogram Rg = 1.
"""
    # the footer shows the first three (it must fit 80 columns beside the app's keys); F1 lists all.
    # e is bound twice under one id (so a keymap moves both): the footer names where it goes next.
    BINDINGS = [
        Binding("v", "next_split", "Split", id="dataset-split", tooltip="Show the next split: train, valid, test"),
        Binding("e", "show_view('dataset-examples')", "Examples", id="dataset-view",
                tooltip="Show the example browser (e again: back to the overview)"),
        Binding("e", "show_view('dataset-overview')", "Overview", id="dataset-view",
                tooltip="Back to the overview (e again: the examples)"),
        Binding("s", "next_sort", "Sort", id="dataset-sort",
                tooltip="Sort examples by index, total, prompt, completion, Rg"),
        Binding("o", "flip_order", "Order", id="dataset-order", show=False, tooltip="Flip the sort order"),
        Binding("n,j", "step(1)", "Next", id="dataset-next", show=False, tooltip="Show the next example"),
        Binding("p,k", "step(-1)", "Previous", id="dataset-prev", show=False, tooltip="Show the previous example"),
        Binding("r", "recompute", "Recompute", id="dataset-refresh", show=False,
                tooltip="Read and tokenise the data again, ignoring the cache"),
    ]

    class Progress(WorkerResult):
        def __init__(self, done: int, total: int) -> None:
            super().__init__()
            self.done, self.total = done, total

    class Computed(WorkerResult):
        """The statistics, or the one line that says why they could not be computed."""

        def __init__(self, result: Loaded | str) -> None:
            super().__init__()
            self.result = result

    class Tokenised(WorkerResult):
        def __init__(self, example: ExampleTokens) -> None:
            super().__init__()
            self.example = example

    class Sorted(WorkerResult):
        """A split's rows in the table's order, cut to what the table shows."""

        def __init__(self, split: str, shown: list, total: int) -> None:
            super().__init__()
            self.split, self.shown, self.total = split, shown, total

    def __init__(self, chain: ConfigChain, runs_dir: Path | None = None) -> None:
        super().__init__()
        self.chain = chain
        self.runs_dir = runs_dir  # where to look for the latest evaluated run's worst examples
        self.loaded: Loaded | None = None
        self.split = "train"
        self._computed_for: tuple[tuple[Path, int | None], ...] = ()  # the chain's files and mtimes
        self._example: tuple[str, int] | None = None  # the example asked for last

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="dataset-top"):
            yield Static("", id="dataset-source")
            yield Static("", id="dataset-splits")
            yield Static("", id="dataset-error")
            yield ProgressBar(total=None, show_eta=False, id="dataset-progress")
        with TabbedContent(id="dataset-tabs"):
            with TabPane("Overview", id="dataset-overview"):
                yield SplitOverview(self.runs_dir)
            with TabPane("Examples", id="dataset-examples"):
                yield Static("", id="dataset-table-note")
                yield ExampleTable(id="dataset-table")
                yield Static("", id="dataset-example-title")
                with VerticalScroll(id="dataset-token-scroll"):
                    yield TokenView("select an example to see its tokens", id="dataset-tokens")
        yield Footer(compact=True, show_command_palette=False)

    def on_resize(self) -> None:
        self.set_class(self.size.width < 110, "-narrow")

    def on_screen_resume(self) -> None:
        if self._chain_files() != self._computed_for:
            self.recompute(use_cache=True)
        self.query_one(WorstExamples).check()
        if self.focused is None or isinstance(self.focused, Tabs):  # entering: the keys scroll at once
            self._focus_view()

    def _focus_view(self) -> None:
        """Focus what the active tab shows, so the keys scroll it at once (not the tab bar)."""
        active = self.query_one(TabbedContent).active
        target = self.query_one(ExampleTable) if active == "dataset-examples" else self.query_one(SplitOverview)
        if not target.has_focus:
            target.focus()

    def _chain_files(self) -> tuple[tuple[Path, int | None], ...]:
        """The config files up to the open stage, with their modification times."""
        files = []
        for path in self.chain.up_to_current():
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
        self.query_one(WorstExamples).check(again=True)

    def recompute(self, use_cache: bool) -> None:
        self._computed_for = self._chain_files()
        self.add_class("-busy")
        self.query_one("#dataset-progress", ProgressBar).update(total=None, progress=0)
        self.query_one("#dataset-source", Static).update(f"{self.config_label} · reading and tokenising the data …")
        self.compute([path for path, _ in self._computed_for], use_cache)

    @work(thread=True, exclusive=True, group="dataset-stats")
    def compute(self, chain: list[Path], use_cache: bool) -> None:
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
                self.post_message(self.Progress(done, total))

        try:
            result = load_dataset(chain, progress, use_cache)
        except Exception as error:  # shown on the screen; the app stays alive
            result = _problem(error)
        self.post_message(self.Computed(result))

    def on_dataset_screen_progress(self, message: DatasetScreen.Progress) -> None:
        if not message.superseded:
            self.query_one("#dataset-progress", ProgressBar).update(total=message.total, progress=message.done)

    def on_dataset_screen_computed(self, message: DatasetScreen.Computed) -> None:
        if message.superseded:  # the chain changed while it ran; the newer computation shows
            return
        self.remove_class("-busy")
        if isinstance(message.result, Loaded):
            self.show_loaded(message.result)
        else:
            self._show_error(message.result)

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
            f"max_seq_length {stats.max_seq_length:,} · PLW {stats.plw_text}{cached}"
        )
        self._show_split()

    def _show_split(self) -> None:
        stats = self.loaded.stats
        names = Text("split  ")
        for name in SPLITS:
            if name in stats.splits:
                names.append(f" {name} ", "reverse bold" if name == self.split else "")
                names.append(" ")
        names.append("  v next split · r recompute", "dim")
        self.query_one("#dataset-splits", Static).update(names)
        self.query_one(SplitOverview).show_split(stats, stats.splits[self.split])
        self._fill_table()

    def action_next_split(self) -> None:
        if self.loaded is None:
            return
        names = [name for name in SPLITS if name in self.loaded.stats.splits]
        self.split = names[(names.index(self.split) + 1) % len(names)] if self.split in names else names[0]
        self._show_split()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Of e's two bindings only the one leading away from the view shown is active."""
        if action == "show_view":
            tabs = self.query(TabbedContent)  # none yet while the screen is being composed
            return bool(tabs) and parameters[0] != tabs.first().active
        return True

    def action_show_view(self, view: str) -> None:
        self.query_one(TabbedContent).active = view
        self._focus_view()  # the table left focused in a hidden pane would switch the tab back

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id in VIEWS:
            self.refresh_bindings()
            if not isinstance(self.focused, Tabs):  # the user is going through the tabs: leave focus there
                self._focus_view()

    # ------------------------------------------------------------------ the example browser

    def action_next_sort(self) -> None:
        self.query_one(ExampleTable).next_sort()
        self._fill_table()

    def action_flip_order(self) -> None:
        self.query_one(ExampleTable).flip_order()
        self._fill_table()

    def _fill_table(self) -> None:
        """Sort the split's rows in a worker (a large split takes a while); the table shows them
        when they come back."""
        if self.loaded is None:
            return
        table = self.query_one(ExampleTable)
        rows = self.loaded.stats.splits[self.split].rows
        self.sort_rows(self.split, rows, table.sort_column, table.descending)

    @work(thread=True, exclusive=True, group="dataset-sort")
    def sort_rows(self, split: str, rows, column: str, descending: bool) -> None:
        self.post_message(self.Sorted(split, sorted_rows(rows, column, descending)[:ROW_LIMIT], len(rows)))

    def on_dataset_screen_sorted(self, message: DatasetScreen.Sorted) -> None:
        """Show the sorted rows, and the selected example's tokens."""
        if message.superseded or message.split != self.split:
            return
        table = self.query_one(ExampleTable)
        note = table.show_split(message.split, message.shown, message.total)
        self.query_one("#dataset-table-note", Static).update(note)
        if (index := table.example_at(table.cursor_row)) is not None:
            self._request_example(index)

    def on_data_table_row_highlighted(self, event: ExampleTable.RowHighlighted) -> None:
        if (index := self.query_one(ExampleTable).example_at(event.cursor_row)) is not None:
            self._request_example(index)

    def action_step(self, delta: int) -> None:
        self.query_one(TabbedContent).active = "dataset-examples"
        table = self.query_one(ExampleTable)
        table.move_cursor(row=max(0, table.cursor_row + delta))

    def _request_example(self, index: int) -> None:
        if self.loaded is None or self._example == (self.split, index):
            return
        self._example = (self.split, index)
        self.query_one("#dataset-example-title", Static).update(f"{self.split} #{index} · tokenising …")
        self.tokenize_example(self.loaded, self.split, index)

    @work(thread=True, exclusive=True, group="dataset-example")
    def tokenize_example(self, loaded: Loaded, split: str, index: int) -> None:
        try:
            example = ExampleTokens(split, index, tuple(example_tokens(loaded, split, index)))
        except Exception as error:  # shown in the example's title line
            example = ExampleTokens(split, index, error=_problem(error))
        self.post_message(self.Tokenised(example))

    def on_dataset_screen_tokenised(self, message: DatasetScreen.Tokenised) -> None:
        example = message.example
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
