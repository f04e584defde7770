"""The Dataset screen: statistics per split, the example table and the token view.

Most tests inject made-up statistics through the screen's two engine seams
(``load_dataset`` and ``example_tokens``), so they are fast and pixel-stable; one test runs
the real engine on the demo config.
"""

import asyncio
import math
import random
from types import SimpleNamespace

import numpy as np
from textual.app import App
from textual.screen import Screen
from textual.widgets import DataTable, ProgressBar, Static, TabbedContent

from engine.data.stats import DatasetStats, ExampleRow, SplitStats, TokenCell, distribution, plw_guidance, rg_stats
from themes import APP_CSS, DEFAULT_THEME, register_themes
from tui.config_chain import ConfigChain
from tui.screens import dataset_screen
from tui.screens.dataset_screen import DatasetScreen, Loaded
from tui.widgets.example_table import sorted_rows
from tui.widgets.token_view import TokenView

from .conftest import REPO, wait_until

DEMO_CONFIG = REPO / "sample_configs" / "demo.yaml"


# ---------------------------------------------------------------------------- made-up statistics


def fake_split(name, count, seed, errors=(), max_seq_length=256):
    """A split of chat examples with random lengths; example 3 has no prompt, so no Rg."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        prompt = 0 if i == 3 else rng.randint(20, 240)
        completion = rng.randint(2, 90)
        total = prompt + completion
        rows.append(ExampleRow(
            index=i, origin=f"/data/{name}.jsonl:{i + 1}", fmt="chat", prompt_tokens=prompt,
            completion_tokens=completion, total_tokens=total, rg=completion / prompt if prompt else math.nan,
            truncated=total > max_seq_length, completion_cut=total > max_seq_length,
            zero_completion=prompt >= max_seq_length,
        ))
    prompt = np.array([r.prompt_tokens for r in rows])
    completion = np.array([r.completion_tokens for r in rows])
    return SplitStats(
        name=name, count=count, formats={"chat": count, "text": 0}, parse_errors=tuple(errors),
        prompt=distribution(prompt), completion=distribution(completion), total=distribution(prompt + completion),
        rg=rg_stats(prompt, completion), truncated=sum(r.truncated for r in rows),
        completion_cut=sum(r.completion_cut for r in rows), zero_completion=sum(r.zero_completion for r in rows),
        duplicates=1, rows=tuple(rows), sources={},
    )


def fake_loaded():
    errors = ("train.jsonl:7: not valid JSON", "train.jsonl:19: no 'messages' list")
    splits = {"train": fake_split("train", 120, 1, errors), "valid": fake_split("valid", 20, 2)}
    splits["test"] = fake_split("test", 10, 3)
    stats = DatasetStats(
        splits=splits, overlap={"train/valid": 0, "train/test": 1}, max_seq_length=256, prompt_loss_weight=0.1,
        guidance=plw_guidance(splits["train"].rg, 0.1), tokenizer="builtin:tiny-llama", cached=False,
    )
    stage = SimpleNamespace(config=SimpleNamespace(model="builtin:tiny-llama", data="data/demo", hf_dataset=None))
    return Loaded(stage, stats)


def fake_tokens(loaded, split, index):
    """A chat example whose completion names its split and index, with one token cut off."""
    prompt = ["<|user|>", "\n", "What", " is", " the", " capital", " of", " Norvania", "?", "<|end|>", "\n"]
    completion = ["<|assistant|>", "\n", f"Vel{split}", f"spar{index}", "<|end|>"]
    cells = [TokenCell(t, "prompt", 0.1, False, t.startswith("<|")) for t in prompt]
    cells += [TokenCell(t, "completion", 1.0, False, t.startswith("<|")) for t in completion]
    return cells + [TokenCell(" extra", "completion", 1.0, True, False)]


class DatasetApp(App):
    """The screen alone, under the app's stylesheets and theme, with its last config open."""

    CSS_PATH = [APP_CSS, APP_CSS.with_name("dataset.tcss")]

    def __init__(self, *config_paths):
        super().__init__()
        self.chain = ConfigChain(config_paths, index=len(config_paths) - 1)

    def on_mount(self) -> None:
        register_themes(self)
        self.theme = DEFAULT_THEME
        self.push_screen(DatasetScreen(self.chain))


def inject(monkeypatch, loaded=None, calls=None):
    """Serve made-up statistics and tokens; ``calls`` records each computation's use_cache."""

    def load(chain, progress, use_cache, runs_dir=None):
        for done in range(0, 101, 10):
            progress(done, 100)
        if calls is not None:
            calls.append(use_cache)
        return loaded or fake_loaded()

    monkeypatch.setattr(dataset_screen, "load_dataset", load)
    monkeypatch.setattr(dataset_screen, "example_tokens", fake_tokens)



def text(app, selector) -> str:
    return str(app.screen.query_one(selector, Static).render())


def tokens_text(app) -> str:
    return str(app.screen.query_one(TokenView).render())


def shows(app, index) -> bool:
    """The token view holds the train example ``index`` (its fake completion names it)."""
    title = text(app, "#dataset-example-title")
    return title.startswith(f"train #{index} ·") and f"spar{index}‹" in tokens_text(app)


def index_column(table: DataTable) -> list[int]:
    return [int(str(table.get_row_at(i)[0]).replace(",", "")) for i in range(table.row_count)]


def run(scenario):
    asyncio.run(scenario())


# ---------------------------------------------------------------------------- pilot tests


def test_summary_split_switch_sort_and_tokens(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("model: builtin:tiny-llama\n")
    inject(monkeypatch)

    async def scenario():
        app = DatasetApp(config)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_until(pilot, lambda: "examples" in text(app, "#dataset-summary"))
            summary = text(app, "#dataset-summary")
            assert summary.startswith("train: 120 examples · chat 120")
            assert "train.jsonl:7: not valid JSON" in summary and "train/test overlap 1" in summary
            notes = text(app, "#dataset-rg-notes")
            assert "arithmetic mean" in notes and "geometric mean" in notes and "share Rg < 1" in notes
            assert "PLW 0.1" in text(app, "#dataset-source")
            bar = app.screen.query_one(ProgressBar)
            assert (bar.progress, bar.total) == (100, 100) and not bar.display  # the last report always arrives

            await pilot.press("v")
            assert text(app, "#dataset-summary").startswith("valid: 20 examples")
            await pilot.press("v", "v")
            assert text(app, "#dataset-summary").startswith("train: 120")

            await pilot.press("e")
            table = app.screen.query_one(DataTable)
            assert app.screen.query_one(TabbedContent).active == "dataset-examples"
            assert index_column(table) == list(range(120))
            assert await wait_until(pilot, lambda: "Veltrainspar0" in tokens_text(app))
            assert "[w=0.1]" in tokens_text(app) and "‹<|assistant|>›" in tokens_text(app)
            await pilot.press("s")  # by total, ascending
            totals = [row.total_tokens for row in app.screen.loaded.stats.splits["train"].rows]
            column = [int(str(table.get_row_at(i)[3])) for i in range(table.row_count)]
            assert column == sorted(totals)
            await pilot.press("o")
            assert [int(str(table.get_row_at(i)[3])) for i in range(table.row_count)] == sorted(totals, reverse=True)
            await pilot.press("s", "s", "s")  # Rg, descending: the prompt-less example last
            assert str(table.get_row_at(table.row_count - 1)[4]) == "—"

            await pilot.press("ctrl+home")  # the selection followed its example through the sorts
            indexes = index_column(table)
            assert await wait_until(pilot, lambda: shows(app, indexes[0]))
            await pilot.press("n", "j")
            assert await wait_until(pilot, lambda: shows(app, indexes[2]))
            assert f"train.jsonl:{indexes[2] + 1} · chat" in text(app, "#dataset-example-title")
            await pilot.press("p")
            assert await wait_until(pilot, lambda: shows(app, indexes[1]))

    run(scenario)


def test_recompute_on_r_and_when_the_config_changes(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("model: builtin:tiny-llama\n")
    calls = []
    inject(monkeypatch, calls=calls)

    async def scenario():
        app = DatasetApp(config)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_until(pilot, lambda: calls == [True])
            await pilot.press("r")
            assert await wait_until(pilot, lambda: calls == [True, False])
            app.push_screen(Screen())  # hide the screen, come back: nothing changed, nothing computed
            await pilot.pause(0.1)
            app.pop_screen()
            await pilot.pause(0.3)
            assert calls == [True, False]
            app.push_screen(Screen())  # hide it, change the config, come back
            config.write_text("model: builtin:tiny-llama\nmax_seq_length: 128\n")
            app.pop_screen()
            assert await wait_until(pilot, lambda: calls == [True, False, True])

    run(scenario)


def test_real_statistics_of_a_chain_stage_and_its_tokens(tmp_path):
    """The engine on the demo data, for a second stage that inherits the demo config's keys."""
    second = tmp_path / "second.yaml"
    second.write_text("max_seq_length: 64\n")

    async def scenario():
        app = DatasetApp(DEMO_CONFIG, second)
        async with app.run_test(size=(100, 30)) as pilot:
            assert await wait_until(pilot, lambda: "examples" in text(app, "#dataset-summary"), 120)
            assert text(app, "#dataset-summary").startswith("train: 800 examples · chat 800")
            source = text(app, "#dataset-source")
            assert "second.yaml (stage 2 of the chain)" in source and "max_seq_length 64" in source
            notes = text(app, "#dataset-rg-notes")
            assert "arithmetic mean" in notes and "PLW 0.1" in notes
            first = app.screen.loaded.stats.splits["train"].rows[0]
            await pilot.press("e")
            view = app.screen.query_one(TokenView)
            assert await wait_until(pilot, lambda: bool(view.cells), 60)
            completion = "".join(cell.text for cell in view.cells if cell.role == "completion")
            assert "positive" in completion  # the demo's first answer
            assert "[w=1]positive" in tokens_text(app)
            assert sum(cell.role == "completion" for cell in view.cells) == first.completion_tokens

    run(scenario)


def test_a_bad_config_shows_its_one_line_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("model: builtin:tiny-llama\nbatch_size: many\n")

    async def scenario():
        app = DatasetApp(config)
        async with app.run_test(size=(80, 24)) as pilot:
            error = app.screen.query_one("#dataset-error", Static)
            assert await wait_until(pilot, lambda: error.display and "batch_size" in text(app, "#dataset-error"))
            message = text(app, "#dataset-error")
            assert "\n" not in message and "bad.yaml:2" in message

    run(scenario)


def test_token_view_marks_weights_specials_newlines_and_the_cut():
    class TokensApp(App):
        def compose(self):
            yield TokenView("nothing yet")

    async def scenario():
        app = TokensApp()
        async with app.run_test(size=(80, 12)) as pilot:
            view = app.query_one(TokenView)
            assert str(view.render()) == "nothing yet"
            view.show(fake_tokens(None, "train", 5))
            await pilot.pause()
            rendered = view.render()
            assert str(rendered) == (
                "[w=0.1]‹<|user|>›↵\nWhat is the capital of Norvania?‹<|end|>›↵\n"
                "[w=1]‹<|assistant|>›↵\nVeltrainspar5‹<|end|>› ✂  extra"
            )
            cut = rendered.plain.index(" extra")
            assert any(span.start <= cut < span.end and span.style.strike for span in rendered.spans)
            answer = rendered.plain.index("Veltrain")
            assert any(span.start <= answer < span.end and span.style.bold for span in rendered.spans)

    run(scenario)


def test_sorting_puts_missing_rg_last_in_both_orders():
    rows = fake_loaded().stats.splits["train"].rows
    for descending in (False, True):
        ordered = sorted_rows(rows, "Rg", descending)
        assert math.isnan(ordered[-1].rg) and len(ordered) == len(rows)
        values = [row.rg for row in ordered[:-1]]
        assert values == sorted(values, reverse=descending)


# ---------------------------------------------------------------------------- snapshots


def test_snapshot_overview(snap_compare, monkeypatch):
    inject(monkeypatch)

    async def settle(pilot):
        assert await wait_until(pilot, lambda: "examples" in text(pilot.app, "#dataset-summary"))
        await pilot.pause(0.2)

    assert snap_compare(DatasetApp("demo.yaml"), run_before=settle, terminal_size=(120, 40))


def test_snapshot_examples(snap_compare, monkeypatch):
    inject(monkeypatch)

    async def settle(pilot):
        assert await wait_until(pilot, lambda: "examples" in text(pilot.app, "#dataset-summary"))
        await pilot.press("e", "s", "o", "ctrl+home", "n")  # the second longest example
        assert await wait_until(pilot, lambda: "‹<|end|>›" in tokens_text(pilot.app))
        await pilot.pause(0.2)

    assert snap_compare(DatasetApp("demo.yaml"), run_before=settle, terminal_size=(120, 40))
