"""The monitor's widgets, the themes and the remembered theme choice.

Each widget test mounts the widget in a tiny app that loads the real stylesheet, so the
CSS classes the widgets set are checked against the colours the themes give them.
"""

import asyncio
import json
import math

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.color import Color
from textual.containers import Grid
from textual.widgets import Footer, Label, Sparkline

from themes import (
    APP_CSS,
    DEFAULT_THEME,
    THEME_NAMES,
    load_theme_choice,
    register_themes,
    save_theme_choice,
    settings_path,
)
from tui.system_memory import read_system_memory
from tui.widgets import MemoryGauge, MetricSparkline


class WidgetApp(App):
    """Mounts the given widgets under the app stylesheet and the default theme."""

    CSS_PATH = APP_CSS

    def __init__(self, *widgets):
        super().__init__()
        self.widgets = widgets
        register_themes(self)
        self.theme = DEFAULT_THEME

    def compose(self) -> ComposeResult:
        yield from self.widgets


def run(app, scenario, size=(80, 24)):
    """Run ``scenario(pilot)`` against ``app``; errors inside the app fail the test."""

    async def main():
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await scenario(pilot)

    asyncio.run(main())


def value_text(metric):
    return str(metric.query_one(".value", Label).content)


def test_sparkline_keeps_a_bounded_finite_history_and_shows_non_finite_latest():
    metric = MetricSparkline("train loss", maxlen=5)

    async def scenario(pilot):
        spark = metric.query_one(Sparkline)
        assert metric.latest is None and value_text(metric) == "—"
        for step in range(12):
            metric.push(step / 2)
        await pilot.pause()
        assert spark.data == (3.5, 4.0, 4.5, 5.0, 5.5)
        assert value_text(metric) == "5.500"
        assert not metric.has_class("-bad")

        for bad in (math.nan, math.inf, -math.inf):
            metric.push(bad)
            await pilot.pause()
            assert metric.has_class("-bad")
            assert all(math.isfinite(v) for v in spark.data) and len(spark.data) == 5
        assert value_text(metric) == "-inf"
        metric.push(math.nan)
        assert value_text(metric) == "nan" and math.isnan(metric.latest)

        metric.push(1.25)
        await pilot.pause()
        assert not metric.has_class("-bad")
        assert spark.data == (4.0, 4.5, 5.0, 5.5, 1.25)
        assert len(metric.history) == 5

    run(WidgetApp(metric), scenario)


def test_sparkline_push_many_reset_format_and_values_pushed_before_mount():
    early = MetricSparkline("learning rate", fmt=".1e")
    early.push(2e-4)  # before the app composes it
    metric = MetricSparkline("val loss", maxlen=3)

    async def scenario(pilot):
        assert value_text(early) == "2.0e-04"
        assert early.query_one(Sparkline).data == (2e-4,)

        metric.push_many([3.0, math.nan, 2.0, 1.0, 0.5])
        await pilot.pause()
        assert metric.query_one(Sparkline).data == (2.0, 1.0, 0.5)
        assert value_text(metric) == "0.500"

        metric.push_many([])
        assert metric.latest == 0.5
        metric.push_many([math.inf])
        assert metric.has_class("-bad")

        metric.reset()
        await pilot.pause()
        assert metric.latest is None and value_text(metric) == "—"
        assert metric.query_one(Sparkline).data == ()
        assert not metric.has_class("-bad")

    run(WidgetApp(early, metric), scenario)


def test_gauge_text_bar_and_threshold_classes():
    gauge = MemoryGauge("MLX active")

    async def scenario(pilot):
        gauge.update_gauge(1.2, 24.0)
        await pilot.pause()
        reading, bar = gauge.render().plain.split("\n")
        assert reading == "MLX active  1.2 / 24.0 GB  5%"
        assert len(bar) == gauge.content_size.width == 80
        assert bar.count("━") == 4

        expected = {0.5: set(), 0.75: set(), 0.76: {"-warn"}, 0.9: {"-warn"}, 0.91: {"-danger"}, 1.3: {"-danger"}}
        for fraction, classes in expected.items():
            gauge.update_gauge(fraction * 10, 10.0, "GiB", detail="peak 9.9")
            assert {c for c in ("-warn", "-danger") if gauge.has_class(c)} == classes, fraction
        assert gauge.render().plain.startswith("MLX active  13.0 / 10.0 GiB  130%  peak 9.9\n")
        assert gauge.render().plain.endswith("━" * 80)

        gauge.update_gauge(3.0, 0.0)
        assert gauge.render().plain.split("\n") == ["MLX active  3.0 GB", "─" * 80]
        assert not gauge.has_class("-warn") and not gauge.has_class("-danger")

    run(WidgetApp(gauge), scenario)


def test_gauge_bar_colour_follows_its_class_and_the_theme():
    gauge = MemoryGauge("memory")

    def bar_colour():
        return gauge.get_visual_style("memory-gauge--bar").foreground

    async def scenario(pilot):
        variables = pilot.app.theme_variables
        for fraction, variable in ((0.1, "primary"), (0.8, "warning"), (0.95, "error"), (0.2, "primary")):
            gauge.update_gauge(fraction, 1.0)
            await pilot.pause()
            assert bar_colour() == Color.parse(variables[variable]), (fraction, variable)

        pilot.app.theme = "tuner-light"
        await pilot.pause()
        assert bar_colour() == Color.parse(pilot.app.theme_variables["primary"])

    run(WidgetApp(gauge), scenario)


def test_themes_register_and_switch_without_css_errors():
    metric = MetricSparkline("loss")
    gauge = MemoryGauge("memory")

    async def scenario(pilot):
        app = pilot.app
        assert set(THEME_NAMES) == {"tuner-dark", "tuner-light"}
        assert set(THEME_NAMES) <= set(app.available_themes)
        metric.push_many([1.0, math.nan])
        gauge.update_gauge(0.95, 1.0)
        for name in (*THEME_NAMES, "nord", "textual-light", DEFAULT_THEME):
            app.theme = name
            await pilot.pause()
            assert app.theme == name
            assert app.current_theme.name == name
        assert app.screen.styles.background == Color.parse("#1C1C1E")

    run(WidgetApp(metric, gauge), scenario)


def test_theme_choice_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "config"))
    path = settings_path()
    assert path == tmp_path / "config" / "settings.json"
    assert load_theme_choice() == "tuner-dark"  # no file yet

    save_theme_choice("tuner-light")
    assert load_theme_choice() == "tuner-light"
    save_theme_choice("nord")
    assert load_theme_choice() == "nord"

    path.write_text(json.dumps({"theme": "nord", "other": 1}))
    save_theme_choice("tuner-dark")
    assert json.loads(path.read_text()) == {"theme": "tuner-dark", "other": 1}
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]  # no temp file left

    for content in ("{not json", "[1, 2]", '{"theme": "no-such-theme"}', '{"theme": ["x"]}'):
        path.write_text(content)
        assert load_theme_choice() == DEFAULT_THEME
    path.write_bytes(b"\xff\xfe")
    assert load_theme_choice() == DEFAULT_THEME
    save_theme_choice("tuner-light")  # an unreadable file is replaced, not fatal
    assert load_theme_choice() == "tuner-light"


def test_system_memory_reading_is_consistent():
    memory = read_system_memory()
    assert memory.total_gb > 0
    assert 0 <= memory.available_gb <= memory.total_gb
    assert math.isclose(memory.used_gb + memory.available_gb, memory.total_gb)
    assert 0 < memory.process_rss_gb < memory.total_gb
    assert 0 <= memory.swap_used_gb <= max(memory.swap_total_gb, memory.swap_used_gb)


class MonitorPreview(WidgetApp):
    """Two metrics and two gauges in a two-column grid, as the monitor will show them."""

    CSS = """
    Grid { grid-size: 2; grid-rows: auto; grid-gutter: 0 1; height: auto; }
    """
    BINDINGS = [Binding("s", "noop", "Stop & save")]

    def compose(self) -> ComposeResult:
        with Grid():
            yield MetricSparkline("train loss", id="train", classes="panel")
            yield MetricSparkline("val loss", id="val", classes="panel")
            yield MemoryGauge("MLX active", id="active", classes="panel")
            yield MemoryGauge("system", id="system", classes="panel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#train", MetricSparkline).push_many(
            2.5 * math.exp(-step / 30) + 0.6 + 0.1 * math.sin(step) for step in range(120)
        )
        self.query_one("#val", MetricSparkline).push_many([2.4, 1.9, 1.5, 1.3, 1.2, 1.4, 2.8, math.nan])
        self.query_one("#active", MemoryGauge).update_gauge(1.2, 24.0, detail="peak 3.1")
        self.query_one("#system", MemoryGauge).update_gauge(22.1, 24.0)


def test_monitor_widgets_snapshot(snap_compare):
    assert snap_compare(MonitorPreview(), terminal_size=(80, 24))
