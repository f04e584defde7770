"""The app drives a real demo run from the keyboard: start, pause, resume, stop."""

import asyncio

from engine import events as ev
from tui.app import TunerApp

from .conftest import write_config


async def wait_for(pilot, predicate, seconds=120):
    for _ in range(int(seconds * 10)):
        await pilot.pause(0.1)
        if predicate():
            return True
    return False


def test_start_pause_resume_stop_from_keys(tmp_path):
    config = write_config(tmp_path, iters=100000, steps_per_report=2, steps_per_eval=100000)

    def has(app, kind, **fields):
        return any(isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items()) for e in app.history)

    async def scenario():
        app = TunerApp(config)
        async with app.run_test() as pilot:
            try:
                await pilot.press("t")
                assert await wait_for(pilot, lambda: has(app, ev.TrainReport))
                await pilot.press("p")
                assert await wait_for(pilot, lambda: has(app, ev.StateChanged, state="paused"))
                await pilot.press("p")
                assert await wait_for(pilot, lambda: has(app, ev.StateChanged, state="running"))
                await pilot.press("s")
                assert await wait_for(pilot, lambda: has(app, ev.RunFinished, status="stopped"))
                assert await wait_for(pilot, lambda: app.control is None, 10)
                text = "\n".join(line.text for line in app.query_one("#log").lines)
                assert "stopped at step" in text
            finally:
                if app.control is not None:
                    app.control.stop()

    asyncio.run(scenario())
