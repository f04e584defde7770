"""The Train screen driven at 80×24 with injected events (no thread), as a user reads it:
scrolling, leaving a followed run, the live chart, the log, the header, the gauges, the samples."""

import asyncio
import math
from dataclasses import replace

from textual.widgets import ProgressBar

from engine import events as ev
from engine.runs.control import RemoteControl
from tui.messages import TrainingEnded
from tui.screens.chart_screen import ChartScreen
from tui.screens.sample_screen import NO_TEMPLATE, SampleScreen
from tui.system_memory import SystemMemory
from tui.widgets.memory_gauge import MemoryGauge

from .conftest import wait_until
from .test_screens_snapshot import fake_run, make_app


def run(scenario):
    asyncio.run(scenario())


def text_of(widget) -> str:
    return str(widget.render())


def report(step: int, total: int = 100, **values) -> ev.TrainReport:
    """A training report of a small run (30 MB active), with ``values`` replacing any field."""
    return replace(ev.TrainReport(
        step=step, total_steps=total, epoch=step / 50, loss=2.0, prompt_loss=2.5, completion_loss=1.5,
        learning_rate=1e-3, grad_norm=0.5, update_norm=1.0, tokens_per_second=2000, trained_tokens=step * 250,
        peak_memory_gb=0.05, active_memory_gb=0.03, cache_memory_gb=0.01, elapsed=step * 0.2, time=0.0), **values)


async def show(app, pilot, events) -> None:
    """Open the Train screen and let the drain timer show ``events``."""
    app.switch_mode("train")
    await pilot.pause(0.2)
    for event in events:
        app.events.put(event)
    assert await wait_until(pilot, lambda: app.events.empty() and len(app.history) >= len(events), 10)
    await pilot.pause(0.1)


def test_pageup_scrolls_back_after_pagedown_whatever_has_focus(tmp_path, monkeypatch):
    """With the log focused (Tab), PageDown scrolled the screen (the log was at its end) but PageUp
    went to the log, which could scroll up: the screen never came back."""
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, fake_run())
            body, log = app.train_screen.query_one("#train-body"), app.train_screen.query_one("#train-log")
            log.focus()
            await pilot.pause(0.1)
            await pilot.press("pagedown")
            assert await wait_until(pilot, lambda: body.scroll_y > 0, 5)
            await pilot.press("pageup")
            assert await wait_until(pilot, lambda: body.scroll_y == 0, 5)
            assert app.focused is log
            await pilot.press("pagedown", "pagedown", "pagedown")  # to the bottom, then all the way back
            assert await wait_until(pilot, lambda: body.scroll_y == body.max_scroll_y > 0, 5)
            await pilot.press("pageup", "pageup", "pageup")
            assert await wait_until(pilot, lambda: body.scroll_y == 0, 5)

    run(scenario)


def test_leaving_a_followed_run_says_it_goes_on_and_how_to_follow_it_again(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)
    run_dir = tmp_path / "runs" / "demo"
    run_dir.mkdir(parents=True)
    events = fake_run()
    events[0] = replace(events[0], pid=4242)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.train_screen
            app.switch_mode("train")
            await pilot.pause(0.2)
            assert screen.check_action("leave", ()) is False  # nothing followed: the key is hidden
            app.control = RemoteControl(run_dir)  # what attach_run sets; the follower's events injected
            app.set_state("running")
            await show(app, pilot, events)
            assert screen.check_action("leave", ()) is True
            await pilot.press("l")
            expected = f"left {run_dir}: it goes on training in process 4242; follow it again from Runs (4) with a"
            status = text_of(screen.query_one("#train-status"))
            assert status.startswith("step 65/100") and status.endswith(expected)
            assert screen.query_one("#train-log").texts[-1] == expected
            app.post_message(TrainingEnded())  # the cancelled follower's end
            assert await wait_until(pilot, lambda: app.control is None, 5)
            assert screen.check_action("leave", ()) is False
            assert text_of(screen.query_one("#train-status")).endswith(expected)  # still said, after the end

    run(scenario)


def test_the_large_chart_takes_new_points_while_it_is_open(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, fake_run())
            await pilot.press("c")
            assert await wait_until(pilot, lambda: isinstance(app.screen, ChartScreen), 5)
            chart = app.screen
            assert chart.shown == "train loss" and chart.drawn == (13, (65, chart.drawn[1][1]))
            for step in (70, 75):
                app.events.put(report(step, loss=1.5))
            assert await wait_until(pilot, lambda: chart.drawn[0] == 15, 5)
            assert chart.drawn[1] == (75, 1.5)
            plot = chart.query_one("#chart-plot")
            assert "75" in "".join(str(line.text) for line in plot.render_lines(plot.region.reset_offset))

    run(scenario)


def finished(adapter_dir: str) -> ev.RunFinished:
    return ev.RunFinished(step=100, status="completed", adapter_dir=adapter_dir, elapsed=12.3, time=0.0)


def test_every_log_line_wraps_inside_its_box_at_80_and_160_columns(tmp_path, monkeypatch):
    """RichLog wrapped at 78 columns at least, wider than the 43-column box at 80×24, so the
    middle of each line and the end of the final line were out of sight."""
    app = make_app(tmp_path, monkeypatch)
    adapters = "runs/demo-20261206-211400-a-long-run-name/adapters"
    events = [*fake_run(), finished(adapters)]

    def fits(log) -> bool:
        width = log.scrollable_content_region.width
        return all(strip.cell_length <= width for strip in log.lines) and log.max_scroll_x == 0

    def shown(log, line: str) -> bool:
        """Whether every character of ``line`` is on the log's rows, in order (wrapping drops spaces)."""
        return "".join(line.split()) in "".join("".join(strip.text.split()) for strip in log.lines)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, events)
            log = app.train_screen.query_one("#train-log")
            assert log.size.width < 78 and fits(log)
            assert len(log.lines) > len(log.texts)  # long lines took several rows
            assert shown(log, f"completed at step 100 in 12.3s; adapters: {adapters}")
            rows_at_80 = len(log.lines)
            await pilot.resize_terminal(160, 48)
            assert await wait_until(pilot, lambda: log.size.width > 78, 5)
            await pilot.pause(0.2)
            assert len(log.lines) < rows_at_80  # wrapped again, wider
            assert fits(log) and shown(log, f"completed at step 100 in 12.3s; adapters: {adapters}")
            assert log.is_vertical_scroll_end  # still following the end
            await pilot.resize_terminal(80, 24)
            assert await wait_until(pilot, lambda: log.size.width < 78, 5)
            await pilot.pause(0.2)
            assert fits(log) and len(log.lines) == rows_at_80

    run(scenario)


def test_the_header_says_paused_at_the_step_the_log_says(tmp_path, monkeypatch):
    """Reports came every 5 steps; a pause at step 72 left the header at the last report's step."""
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, [*fake_run(), report(70), ev.StateChanged(state="paused", step=72, time=0.0)])
            screen = app.train_screen
            status = text_of(screen.query_one("#train-status"))
            assert status.startswith("paused at step 72/100 (p resumes) · epoch 1.40") and "ETA" not in status
            assert screen.query_one("#train-log").texts[-1] == "paused at step 72"
            assert screen.query_one("#train-progress", ProgressBar).progress == 72
            app.events.put(ev.StateChanged(state="running", step=72, time=0.0))
            assert await wait_until(pilot, lambda: text_of(screen.query_one("#train-status")).startswith("step 72/100"))
            app.events.put(finished("runs/demo/adapters"))
            assert await wait_until(pilot, lambda: text_of(screen.query_one("#train-status")).startswith(
                "completed at step 100"))

    run(scenario)


def test_the_gauges_of_a_small_run_move(tmp_path, monkeypatch):
    """30 MB of 23.5 GB read "0.0 / 23.5 GB 0%" with an empty bar for a whole run."""
    app = make_app(tmp_path, monkeypatch)
    app.machine_memory_gb = 23.5

    def bar(gauge) -> str:
        return gauge.render().plain.split("\n")[1]

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, [fake_run()[0], report(5, active_memory_gb=0.012), report(10)])
            screen = app.train_screen
            active = screen.query_one("#mem-active", MemoryGauge)
            assert active.reading() == "29 MB / 23.5 GB  0.1%"
            assert bar(active).endswith("│50 MB") and 0 < bar(active).count("━") < len(bar(active))
            screen.show_system_memory(SystemMemory(total_gb=23.5, used_gb=2.1, available_gb=21.4, swap_used_gb=0.0,
                                                   swap_total_gb=0.0, process_rss_gb=0.115))
            await pilot.pause(0.1)
            rss = screen.query_one("#mem-rss", MemoryGauge)
            assert rss.reading() == "118 MB / 23.5 GB  0.5%" and bar(rss).endswith("│200 MB")
            assert screen.query_one("#mem-system", MemoryGauge).reading() == "2.1 / 23.5 GB  9%"
            assert screen.query_one("#mem-swap", MemoryGauge).reading() == "0 MB  (no swap)"
            app.events.put(replace(fake_run()[0], run_dir="runs/other"))  # another run: a new scale
            assert await wait_until(pilot, lambda: active.reading() == "—")

    run(scenario)


def test_memory_amounts_shares_and_scales():
    gauge = MemoryGauge("MLX peak", zoom=True)
    gauge.update_gauge(0.0008, 23.5)
    assert gauge.reading() == "0.8 MB / 23.5 GB  <0.1%" and math.isclose(gauge.scale() * 1024, 1.0)
    gauge.update_gauge(1.5, 23.5)
    assert gauge.reading() == "1.5 / 23.5 GB  6%" and math.isclose(gauge.scale() * 1024, 2000)
    gauge.update_gauge(20.0, 23.5)
    assert gauge.scale() == 23.5  # never beyond the machine
    gauge.reset()
    assert gauge.reading() == "—" and gauge.scale() == 23.5


def long_sample(step: int, tail: str) -> ev.SampleGenerated:
    prompt = "Add the numbers 17, 25 and 33, then subtract 9 and multiply by 2. Give only the result" + tail
    return ev.SampleGenerated(step=step, prompt=prompt, completion="132", reference="132", time=0.0)


def test_v_opens_the_latest_samples_whole_and_takes_new_ones(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)
    first = long_sample(20, ", as a number.")

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, [fake_run()[0], first])
            panel = text_of(app.train_screen.query_one("#train-samples"))
            assert first.prompt not in panel and "…" in panel  # the panel cuts, and says so
            await pilot.press("v")
            assert await wait_until(pilot, lambda: isinstance(app.screen, SampleScreen), 5)
            text = " ".join(text_of(app.screen.query_one("#samples-text")).split())
            assert f"prompt {first.prompt} prompt as the model saw it (chat template) {NO_TEMPLATE}" in text
            assert "completion 132 reference 132" in text and "step 20 · matches the reference" in text
            second = long_sample(40, ", in words.")
            app.events.put(second)
            assert await wait_until(pilot, lambda: second.prompt in " ".join(
                text_of(app.screen.query_one("#samples-text")).split()), 5)
            text = " ".join(text_of(app.screen.query_one("#samples-text")).split())
            assert text.index("step 40") < text.index("step 20")  # newest first
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: app.screen is app.train_screen, 5)

    run(scenario)


def test_a_resumed_or_new_run_shows_none_of_the_last_sessions_samples(tmp_path, monkeypatch):
    """R on a run showed the progress at 0% and another session's samples."""
    app = make_app(tmp_path, monkeypatch)
    events = fake_run()

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, events)
            screen = app.train_screen
            panel = screen.query_one("#train-samples")
            assert text_of(panel).startswith("@60 What is the capital of Norvania?")
            app.events.put(replace(events[0], resumed_from=65))  # the same run, resumed
            assert await wait_until(pilot, lambda: text_of(panel) == "samples appear at each evaluation")
            assert screen.query_one("#train-progress", ProgressBar).progress == 65
            app.events.put(long_sample(70, "."))
            assert await wait_until(pilot, lambda: text_of(panel).startswith("@70 Add the numbers"))
            app.events.put(replace(events[0], run_dir="runs/other"))  # another run
            assert await wait_until(pilot, lambda: text_of(panel) == "samples appear at each evaluation")
            assert screen.query_one("#train-progress", ProgressBar).progress == 0

    run(scenario)


def test_the_focused_log_scrolls_back_with_the_arrows_and_new_lines_leave_it_there(tmp_path, monkeypatch):
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, fake_run())
            log = app.train_screen.query_one("#train-log")
            log.focus()
            await pilot.press("up", "up", "up")
            assert await wait_until(pilot, lambda: log.scroll_y == log.max_scroll_y - 3, 5)
            reading_at = log.scroll_y
            app.events.put(report(70))
            assert await wait_until(pilot, lambda: log.texts[-1].startswith("step    70/100"), 5)
            await pilot.pause(0.2)
            assert log.scroll_y == reading_at  # not pulled to the end while reading
            await pilot.press("end")
            app.events.put(report(75))
            assert await wait_until(pilot, lambda: log.texts[-1].startswith("step    75/100"), 5)
            assert await wait_until(pilot, lambda: log.is_vertical_scroll_end and log.scroll_y > reading_at, 5)

    run(scenario)


def test_a_run_that_fails_before_its_first_step_stops_the_progress_bar(tmp_path, monkeypatch):
    """A run that failed while starting (bad data, say) left the bar pulsing as if still at work."""
    app = make_app(tmp_path, monkeypatch)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            await show(app, pilot, [ev.RunFailed(step=0, error="DataError: data/train.jsonl:3: not JSON")])
            bar = app.train_screen.query_one("#train-progress", ProgressBar)
            assert bar.total is not None and bar.progress == 0  # determinate: no pulsing
            assert "not JSON" in text_of(app.train_screen.query_one("#train-status"))

    run(scenario)


def test_a_failing_run_is_notified_once_in_one_line(tmp_path, monkeypatch):
    """The trainer reports its failure and re-raises; the app said it again, and a library's
    multi-line message (a bad seed's, say) filled the notification."""
    import engine.training.chain as chain

    def failing_chain(stages, emit, control):
        emit(ev.RunFailed(step=3, error="ValueError: seed must be between 0 and 2**32 - 1\n  detail\n  more"))
        raise ValueError("seed must be between 0 and 2**32 - 1\n  detail\n  more")

    monkeypatch.setattr(chain, "run_chain", failing_chain)
    app = make_app(tmp_path, monkeypatch)
    said = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: said.append((message, kw.get("severity"))))

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            app.switch_mode("train")
            await pilot.pause(0.2)
            app.screen.set_focus(None)
            await pilot.press("t")
            assert await wait_until(pilot, lambda: app.run_state == "idle" and any(s == "error" for _, s in said), 30)
            await pilot.pause(0.3)
            errors = [message for message, severity in said if severity == "error"]
            assert errors == ["failed at step 3: ValueError: seed must be between 0 and 2**32 - 1"]
            failures = [e for e in app.history if isinstance(e, ev.RunFailed)]
            assert len(failures) == 1

    run(scenario)
