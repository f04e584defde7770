"""The terminal app (first cut): open a config, start a run, watch its events, pause or stop it.

Training runs in a thread worker that only puts engine events on a bounded queue; a 10 Hz
timer drains it on the event loop, so the training speed never waits on the UI.
"""

from __future__ import annotations

import queue
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, RichLog, Static

from engine import events as ev
from engine.control import Control
from engine.printer import format_event

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "sample_configs" / "demo.yaml"
QUEUE_LIMIT = 10_000
HISTORY_LIMIT = 1_000


class TunerApp(App):
    TITLE = "tuner"
    BINDINGS = [
        Binding("t", "train", "Train", id="train", tooltip="Start training the open config"),
        Binding("p", "pause", "Pause/resume", id="pause", tooltip="Pause or resume between steps"),
        Binding("s", "stop", "Stop & save", id="stop", tooltip="Stop after this step and save"),
        Binding("q", "quit", "Quit", id="quit"),
    ]

    def __init__(self, config_path: str | Path | None = None):
        super().__init__()
        self.config_path = Path(config_path) if config_path else DEFAULT_CONFIG
        self.events: queue.Queue[ev.Event] = queue.Queue(maxsize=QUEUE_LIMIT)
        self.control: Control | None = None
        self.history: deque[ev.Event] = deque(maxlen=HISTORY_LIMIT)  # latest events shown

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"config: {self.config_path}  (t: train)", id="status")
        yield RichLog(id="log", max_lines=2000, wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(0.1, self.drain_events)

    def on_unmount(self) -> None:
        """Leaving the app stops a run (it saves first) rather than orphaning the thread."""
        if self.control is not None:
            self.control.stop()

    def check_action(self, action: str, parameters) -> bool | None:
        running = self.control is not None
        if action == "train":
            return not running
        if action in ("pause", "stop"):
            return running or None
        return True

    def action_train(self) -> None:
        self.control = Control()
        self.refresh_bindings()
        self.run_training(self.control)

    def action_pause(self) -> None:
        if self.control is not None:
            self.control.resume() if self.control.paused else self.control.pause()

    def action_stop(self) -> None:
        if self.control is not None:
            self.control.stop()

    @work(thread=True, exclusive=True, group="training")
    def run_training(self, control: Control) -> None:
        from engine.config import load_stages
        from engine.errors import UserError
        from engine.trainer import run_chain

        def emit(event: ev.Event) -> None:
            self.events.put(event)

        try:
            run_chain(load_stages([self.config_path]), emit, control)
        except UserError as e:
            emit(ev.RunFailed(step=0, error=str(e)))
        finally:
            self.events.put(ev.Notice(message="training thread ended"))

    def drain_events(self) -> None:
        log = self.query_one("#log", RichLog)
        status = self.query_one("#status", Static)
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self.history.append(event)
            line = format_event(event)
            if line:
                log.write(line)
            if isinstance(event, ev.TrainReport):
                status.update(f"step {event.step}/{event.total_steps}  loss {event.loss:.3f}")
            if isinstance(event, ev.Notice) and event.message == "training thread ended":
                self.control = None
                self.refresh_bindings()


def run_app(config_path: str | None = None) -> int:
    TunerApp(config_path).run()
    return 0
