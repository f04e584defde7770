"""Issue 21 on the Data screen, driven as a user would at 80x24: e goes both ways and says where,
the keys scroll at once, the worst validation examples follow new evaluations, each split's PLW
reading uses its own Rg, histogram bars and y labels are even, the token view dims the prompt in
both themes, and the config editor follows the light theme."""

import json
import os
import re

from textual.app import App
from textual.screen import Screen
from textual.widgets import DataTable, Static, TabbedContent, TextArea

from themes import APP_CSS, register_themes
from tui.app import TunerApp
from tui.config_chain import ConfigChain
from tui.screens.dataset_screen import DatasetScreen
from tui.widgets.histogram import Histogram, even_ticks
from tui.widgets.split_overview import SplitOverview, rg_text
from tui.widgets import worst_examples
from tui.widgets.token_view import TokenView

from .conftest import REPO, wait_until
from .test_dataset_screen import DatasetApp, fake_loaded, fake_tokens, inject, run, text

DEMO_CONFIG = REPO / "sample_configs" / "demo.yaml"


def footer_key(app, key):
    """The description the footer and F1 give ``key`` now."""
    return app.screen.active_bindings[key].binding.description


def test_e_goes_to_the_examples_and_back_and_the_keys_scroll_at_once(monkeypatch):
    inject(monkeypatch)

    async def scenario():
        app = DatasetApp("demo.yaml")
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_until(pilot, lambda: "examples" in text(app, "#dataset-summary"))
            tabs = app.screen.query_one(TabbedContent)
            overview = app.screen.query_one(SplitOverview)
            assert app.focused is overview and footer_key(app, "e") == "Examples"
            await pilot.press("pagedown")  # no Tab first: the overview scrolls
            assert await wait_until(pilot, lambda: overview.scroll_y > 0)
            await pilot.press("e")
            table = app.screen.query_one(DataTable)
            assert tabs.active == "dataset-examples" and app.focused is table
            assert footer_key(app, "e") == "Overview"
            await pilot.press("down", "down")
            assert table.cursor_row == 2
            await pilot.press("e")
            await pilot.pause(0.1)
            assert tabs.active == "dataset-overview" and app.focused is overview
            assert footer_key(app, "e") == "Examples"
            await pilot.press("e", "e")  # and again, both ways
            await pilot.pause(0.1)
            assert tabs.active == "dataset-overview"
            assert "and back" in DatasetScreen.HELP

    run(scenario)


def test_in_the_app_the_data_screen_scrolls_as_soon_as_it_is_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    inject(monkeypatch)

    async def scenario():
        app = TunerApp(DEMO_CONFIG, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            app.switch_mode("dataset")
            assert await wait_until(pilot, lambda: "examples" in text(app, "#dataset-summary"))
            overview = app.screen.query_one(SplitOverview)
            await pilot.press("pagedown")
            assert await wait_until(pilot, lambda: overview.scroll_y > 0)
            await pilot.press("e")
            assert app.focused is app.screen.query_one(DataTable)
            app.switch_mode("config")
            await pilot.pause(0.1)
            app.switch_mode("dataset")  # back: still on the examples, still focused there
            await pilot.pause(0.1)
            assert app.focused is app.screen.query_one(DataTable) and footer_key(app, "e") == "Overview"

    run(scenario)


def write_evaluation(runs, step, mtime):
    """A run's per-example validation file, as the trainer writes it at each evaluation."""
    folder = runs / "demo-run"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"completion_loss": 3.0 - i / 10, "completion_accuracy": 0.1 * i, "prompt_tokens": 20, "completion_tokens": 5,
         "origin": f"valid.jsonl:{i + 1}"}
        for i in range(3)
    ]
    path = folder / "eval_examples.json"
    path.write_text(json.dumps({"step": step, "examples": rows}))
    os.utime(path, (mtime, mtime))


class RunsDatasetApp(App):
    """The screen alone, looking for evaluations under ``runs_dir``."""

    CSS_PATH = DatasetApp.CSS_PATH

    def __init__(self, config, runs_dir):
        super().__init__()
        self.chain = ConfigChain([config], index=0)
        self.runs_dir = runs_dir

    def on_mount(self) -> None:
        self.push_screen(DatasetScreen(self.chain, self.runs_dir))


def test_worst_examples_follow_a_newer_evaluation_without_r(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("model: builtin:tiny-llama\n")
    runs = tmp_path / "runs"
    write_evaluation(runs, 10, 1_000_000)
    calls = []
    inject(monkeypatch, calls=calls)
    monkeypatch.setattr(worst_examples, "POLL_SECONDS", 0.2)

    async def scenario():
        app = RunsDatasetApp(config, runs)
        async with app.run_test(size=(80, 24)) as pilot:
            worst = app.screen.query_one("#dataset-worst", Static)
            assert await wait_until(pilot, lambda: "at step 10" in str(worst.render()))
            app.push_screen(Screen())  # away (another screen), an evaluation, back
            write_evaluation(runs, 20, 1_000_100)
            app.pop_screen()
            assert await wait_until(pilot, lambda: "at step 20" in str(worst.render()))
            write_evaluation(runs, 30, 1_000_200)  # while it is shown
            assert await wait_until(pilot, lambda: "at step 30" in str(worst.render()))
            assert "valid.jsonl:1" in str(worst.render())
            assert calls == [True]  # the statistics were not recomputed for it

    run(scenario)


def test_each_splits_plw_reading_quotes_its_own_rg(monkeypatch):
    loaded = fake_loaded()
    train, valid = loaded.stats.splits["train"].rg, loaded.stats.splits["valid"].rg
    assert f"{train.ratio_of_means:.2f}" != f"{valid.ratio_of_means:.2f}"
    inject(monkeypatch, loaded=loaded)

    async def scenario():
        app = DatasetApp("demo.yaml")
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_until(pilot, lambda: "examples" in text(app, "#dataset-summary"))
            assert f"Rg {train.ratio_of_means:.2f}" in text(app, "#dataset-rg-notes")
            await pilot.press("v")
            notes = text(app, "#dataset-rg-notes")
            assert notes.startswith(f"over {valid.count:,} examples") and "PLW reading for valid: " in notes
            assert f"Rg {valid.ratio_of_means:.2f}" in notes and f"Rg {train.ratio_of_means:.2f}" not in notes
            assert rg_text(valid.geometric_mean) in notes

    run(scenario)


class HistogramApp(App):
    CSS_PATH = [APP_CSS]

    def compose(self):
        yield Histogram()


def test_histogram_bottom_row_as_wide_as_the_row_above_and_even_y_labels():
    """Empty bins between full ones used to blank their neighbours' bottom cells."""
    edges = [float(i) for i in range(31)]
    counts = [1, 0, 4, 5, 0, 3, 4, 0, 5, 8, 5, 6, 3, 0, 4, 6, 5, 4, 6, 7, 0, 3, 2, 3, 0, 4, 4, 3, 5, 4]

    async def scenario():
        app = HistogramApp()
        async with app.run_test(size=(40, 14)) as pilot:
            histogram = app.query_one(Histogram)
            histogram.show(edges, counts, "lengths")
            await pilot.pause()
            rows = histogram.render().plain.splitlines()
            plot = [row for row in rows if "┤" in row or row.lstrip().startswith("│")]
            bottom, above = plot[-1], plot[-2]
            for column, cell in enumerate(above):
                if cell == "█":
                    assert bottom[column] == "█", f"column {column}:\n{above}\n{bottom}"
            labelled = [i for i, row in enumerate(plot) if re.match(r"\s*[\d,]+┤", row)]
            gaps = {b - a for a, b in zip(labelled, labelled[1:])}
            assert len(labelled) >= 3 and len(gaps) == 1, plot
            assert plot[-1].strip().startswith("0┤")

    run(scenario)


def test_even_ticks_cover_the_highest_count_on_evenly_spaced_rows():
    for highest in (1, 2, 7, 8, 13, 99, 1234, 50_000):
        for steps in range(2, 30):
            ticks = even_ticks(highest, steps)
            intervals = len(ticks) - 1
            assert ticks[0] == 0 and ticks[-1] >= highest and steps % intervals == 0
            assert len({b - a for a, b in zip(ticks, ticks[1:])}) == 1 and len(ticks) <= 6
            assert ticks[-1] < 2 * highest + 2  # the tallest bar keeps most of the height


def style_at(rendered, word):
    """The last coloured style over the first character of ``word``."""
    at = rendered.plain.index(word)
    return [span.style for span in rendered.spans if span.start <= at < span.end and span.style.color][-1]


def test_token_view_dims_the_prompt_and_keeps_the_completion_bright_in_both_themes():
    class TokensApp(App):
        CSS_PATH = [APP_CSS]

        def compose(self):
            yield TokenView()

        def on_mount(self):
            register_themes(self)

    def distance(a, b):
        return sum(abs(x - y) for x, y in zip(a.triplet, b.triplet))

    async def scenario():
        app = TokensApp()
        async with app.run_test(size=(80, 12)) as pilot:
            view = app.query_one(TokenView)
            view.show(fake_tokens(None, "train", 5))
            for theme in ("tuner-dark", "tuner-light"):
                app.theme = theme
                await pilot.pause()
                rendered = view.render()
                background = view.rich_style.bgcolor

                prompt, answer = style_at(rendered, "capital"), style_at(rendered, "Veltrain")
                assert answer.bold and not prompt.bold
                assert distance(prompt.color, background) < distance(answer.color, background), theme
                assert distance(prompt.color, background) > 100, theme  # dimmed, still readable

    run(scenario)


def test_the_config_editor_follows_the_light_theme(tmp_path, monkeypatch):
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "settings.json").write_text('{"theme": "tuner-light"}')
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(settings))

    def brightness(area):
        return sum(area.styles.background.rgb)

    async def scenario():
        app = TunerApp(DEMO_CONFIG, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(80, 24)) as pilot:
            area = app.screen.query_one(TextArea)
            assert await wait_until(pilot, lambda: brightness(area) > 600)  # a light editor on a light app
            app.theme = "tuner-dark"
            assert await wait_until(pilot, lambda: brightness(area) < 200)
            app.switch_mode("dataset")
            await pilot.pause(0.1)
            app.theme = "tuner-light"  # changed elsewhere: the editor is light when shown again
            await pilot.pause(0.1)
            app.switch_mode("config")
            assert await wait_until(pilot, lambda: brightness(area) > 600)

    run(scenario)
