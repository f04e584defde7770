"""The terminal app: Config, Dataset, Train, Runs and Playground screens as modes, switched with 1-5.

The app owns the training session. Training runs in a thread worker that only puts engine
events on a bounded queue; a 10 Hz timer drains it on the event loop and hands the events to the
Train screen, so the training speed never waits on the UI. A 1 Hz timer reads system memory.

A session is either trained here or *attached*: a run trained by another process (``tuner train
--detach``, a headless run, another app) is followed from its ``metrics.jsonl`` by a thread that
puts the same events on the same queue, and steered through the run's control inbox. Quitting
leaves an attached run training. Either thread's end comes back as a :class:`TrainingEnded`
message; the session's state (running, paused, how it ended) is read from the events folded into
a :class:`RunView`.
"""

from __future__ import annotations

import queue
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.worker import get_current_worker

from engine import events as ev
from engine.errors import UserError
from engine.launch.detach import detach_chain
from engine.printer import failed_line
from engine.runs.control import Control, RemoteControl
from engine.runs.listing import follow_run
from engine.runs.view import RunView
from themes import APP_CSS, load_keymap, load_theme_choice, register_themes, save_theme_choice

from .config_chain import ConfigChain
from .messages import DetachFailed, DetachStarted, TrainingEnded
from .screens.config_screen import ConfigScreen
from .screens.dataset_screen import DatasetScreen
from .screens.keys_screen import KeysScreen
from .screens.path_prompt import Confirm
from .screens.playground_screen import PlaygroundScreen
from .screens.runs_screen import RunsScreen
from .screens.train_screen import TrainScreen
from .system_memory import read_system_memory
from .training_work import train

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "sample_configs" / "demo.yaml"
QUEUE_LIMIT = 10_000
HISTORY_LIMIT = 1_000
DRAIN_HZ = 10


# mode, footer label, tooltip, and the character macOS's option+digit types: terminals send alt+1
# as ESC 1, which Textual 8 reads as that character (¡ ™ £ ¢ ∞), so it is bound too and switches
# screens even while the YAML editor has the keyboard (those characters cannot be typed there)
SCREEN_KEYS = [
    ("config", "Config", "Edit the config", "inverted_exclamation_mark"),
    ("dataset", "Data", "Inspect the dataset", "trade_mark_sign"),
    ("train", "Train", "Run and watch training", "pound_sign"),
    ("runs", "Runs", "Every run, finished or live", "cent_sign"),
    ("playground", "Playground", "Talk to a run's adapter and its base model", "infinity"),
]


def screen_bindings() -> list[Binding]:
    """1-5 and alt+1-5 for the screens. The digits share one footer entry, "12345 Screens", so an
    80-column footer has room for the screen's own keys (F1 lists each with its screen's name)."""
    group = Binding.Group("Screens", compact=True)
    digits = [Binding(str(n), f"switch_mode('{mode}')", label, id=f"mode-{mode}", tooltip=tip, group=group)
              for n, (mode, label, tip, _) in enumerate(SCREEN_KEYS, 1)]
    alts = [Binding(f"alt+{n},{char}", f"switch_mode('{mode}')", show=False, priority=True, id=f"mode-{mode}-alt")
            for n, (mode, _, _, char) in enumerate(SCREEN_KEYS, 1)]
    return digits + alts


class TunerApp(App):
    """The five screens and the one training session they share.

    The session is ``control`` (which steers the run; a :class:`RemoteControl` when the run is
    attached, so ``attached`` is read from it), ``view`` (its events folded), ``run_state`` (what
    the footer's keys offer), and ``events`` / ``history`` (the queue from the training thread
    and what the Train screen replays when it opens).
    """

    TITLE = "tuner"
    CSS_PATH = [APP_CSS, *(APP_CSS.with_name(f"{name}.tcss") for name in ("screens", "dataset", "playground"))]
    BINDINGS = [
        *screen_bindings(),
        Binding("f1", "toggle_help", "Keys", id="help", tooltip="This list: every key of the screen and of the app"),
        # not in the footer (no room at 80 columns beside a run's keys): F1 lists it, and ctrl+c
        # says "press ctrl+q to quit"
        Binding("ctrl+q", "quit", "Quit", id="quit", tooltip="Quit (asks first during a run)", priority=True,
                show=False),
    ]

    def __init__(
        self,
        config_paths: str | Path | list[str | Path] | None = None,
        runs_dir: str | Path = "runs",
        poll_memory: bool = True,
        attach: str | Path | None = None,
    ):
        if config_paths is None:
            config_paths = [DEFAULT_CONFIG]
        elif isinstance(config_paths, (str, Path)):
            config_paths = [config_paths]
        self.chain = ConfigChain(config_paths)  # the stages; the Config screen edits one at a time
        runs_dir = Path(runs_dir)  # read only by the screens it makes
        self.config_screen = ConfigScreen(self.chain)
        self.train_screen = TrainScreen()
        self.playground_screen = PlaygroundScreen()
        self.MODES = {  # one lasting screen per mode, so the app can reach them directly
            "config": lambda: self.config_screen,
            "dataset": lambda: DatasetScreen(self.chain, runs_dir),
            "train": lambda: self.train_screen,
            "runs": lambda: RunsScreen(runs_dir),
            "playground": lambda: self.playground_screen,
        }
        super().__init__()
        self.events: queue.Queue[ev.Event] = queue.Queue(maxsize=QUEUE_LIMIT)
        self.history: deque[ev.Event] = deque(maxlen=HISTORY_LIMIT)  # the latest events shown
        self.view = RunView()  # the session's events so far, folded
        self.control: Control | RemoteControl | None = None
        self.attach_on_start = Path(attach) if attach else None
        self.run_state = "idle"  # idle | running | paused | stopping
        self.quit_when_stopped = False
        self.machine_memory_gb = read_system_memory().total_gb
        self.poll_memory = poll_memory  # snapshot tests turn the live readings off

    def on_mount(self) -> None:
        register_themes(self)
        self.theme = load_theme_choice()
        self.set_keymap(load_keymap())
        self.switch_mode("config")
        self.set_interval(1 / DRAIN_HZ, self.drain_events)
        if self.poll_memory:
            self.set_interval(1.0, self.poll_system_memory)
        if self.attach_on_start is not None:
            self.attach_run(self.attach_on_start)

    def watch_theme(self, theme: str) -> None:
        """Remember the chosen theme; a read-only settings folder only costs the memory."""
        try:
            save_theme_choice(theme)
        except OSError as e:
            self.notify(f"could not save the theme choice: {e}", severity="warning")

    def get_system_commands(self, screen):
        """The palette (ctrl+p) offers the training actions next to Textual's own commands."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Start training", "Train the open config", self.action_start_training)
        yield SystemCommand("Start training detached", "In its own process, which outlives this app and SSH",
                            self.action_start_detached)
        yield SystemCommand("Leave the followed run", "Stop following; it goes on training", self.action_leave_run)
        yield SystemCommand("Pause or resume training", "Between steps", self.action_toggle_pause)
        yield SystemCommand("Stop training and save", "After the current step", self.action_stop_training)
        yield SystemCommand("Save a checkpoint now", "After the current step", self.action_save_now)
        yield SystemCommand("Evaluate now", "After the current step", self.action_eval_now)
        for mode in ("config", "dataset", "train", "runs", "playground"):
            yield SystemCommand(f"Show {mode.title()}", f"Switch to the {mode} screen", lambda m=mode: self.switch_mode(m))

    def action_toggle_help(self) -> None:
        """F1: the current screen's keys and the app's, in a box that scrolls (F1 again closes it)."""
        if not isinstance(self.screen, KeysScreen):
            self.push_screen(KeysScreen(self.screen))

    # ------------------------------------------------------------------ training session
    def check_action(self, action: str, parameters) -> bool | None:
        if action == "switch_mode":  # the current screen's key is shown dimmed in the footer
            return parameters[0] != self.current_mode or None
        # keys that do nothing now are hidden, not dimmed: at 80 columns the footer holds only
        # the keys of the moment (F1 and the README list them all)
        busy = self.control is not None or self.run_state == "starting"
        if action in ("start_training", "start_detached"):
            return not busy
        if action in ("toggle_pause", "stop_training", "save_now", "eval_now"):
            return self.control is not None
        if action == "leave_run":
            return self.attached is not None
        return True

    def action_start_training(self) -> None:
        self._when_valid(lambda: self._launch(list(self.chain.paths), None))

    def action_start_detached(self) -> None:
        """Train the open config in its own process, then follow it like any detached run."""

        def start() -> None:
            self.set_state("starting")
            self.notify("starting a detached run: loading the model and data ...")
            self.launch_detached(list(self.chain.paths))

        self._when_valid(start)

    def _when_valid(self, start) -> None:
        """Start only from a config that validates, saved first; with errors, show them and stay."""
        if self.config_screen.is_mounted:
            self.config_screen.start_when_valid(start)
        else:
            start()

    @work(thread=True, exclusive=True, group="launch")
    def launch_detached(self, config_paths: list[Path]) -> None:
        try:
            run = detach_chain(config_paths)
        except UserError as e:
            self.post_message(DetachFailed(str(e)))
            return
        self.post_message(DetachStarted(run.run_dir, run.pid))

    def on_detach_failed(self, message: DetachFailed) -> None:
        self.set_state("idle")
        self.notify(message.error, severity="error", timeout=10)

    def on_detach_started(self, message: DetachStarted) -> None:
        self.set_state("idle")
        self.notify(f"training in process {message.pid}, which outlives this app: {message.run_dir}")
        self.attach_run(message.run_dir)

    def resume_run(self, run_dir: Path, more: dict | None = None) -> None:
        """Continue a stopped run from its latest checkpoint, or with ``more`` (``{"steps": n}``
        or ``{"epochs": x}``) train a finished one further as a new linked run (from the Runs screen)."""
        if self.control is not None:
            self.notify("a run is already in progress", severity="warning")
            return
        self._launch([], run_dir, more)

    def rerun_run(self, run_dir: Path, overrides: dict) -> None:
        """Train a run's config again with ``overrides`` (another PLW) as a new run beside it,
        recording where it came from (from the Runs screen)."""
        if self.control is not None:
            self.notify("a run is already in progress", severity="warning")
            return
        self._launch([], run_dir, rerun=overrides)

    def open_in_playground(self, run_dir: Path, step: int | None = None) -> None:
        """Talk to a run's adapter (at checkpoint ``step``; the final one by default) on the
        Playground (from the Runs screen)."""
        self.switch_mode("playground")
        self.playground_screen.open_source(run_dir, step)

    def attach_run(self, run_dir: Path) -> None:
        """Follow a run another process trains, with pause, stop, save and eval working on it."""
        if self.control is not None:
            self.notify("leave the run shown first (l on the Train screen)", severity="warning")
            return
        self.control, self.view = RemoteControl(run_dir), RunView()
        self.set_state("running")
        self.switch_mode("train")
        self.follow_trainer(Path(run_dir))

    def action_leave_run(self) -> None:
        if self.attached is not None:
            self.workers.cancel_group(self, "training")
            self.notify(f"{self.attached} goes on training; attach again from Runs (4)")

    def _launch(self, config_paths: list[Path], resume: Path | None, more: dict | None = None,
                rerun: dict | None = None) -> None:
        self.control = Control(pause_on_memory_pressure=True)  # a person can free memory and resume
        self.view = RunView()
        self.set_state("running")
        self.switch_mode("train")
        self.run_training(config_paths, self.control, resume, more, rerun)

    def action_toggle_pause(self) -> None:
        if self.control is None:
            return
        if self.run_state in ("paused", "pausing"):
            self.control.resume()
            self.set_state("running")  # a pause taken back before the step ended sends no event
        else:
            self.control.pause()
            self.set_state("pausing")

    def action_stop_training(self) -> None:
        if self.control is not None:
            self.control.stop()
            self.set_state("stopping")

    def action_save_now(self) -> None:
        if self.control is not None:
            self.control.save_now()

    def action_eval_now(self) -> None:
        if self.control is not None:
            self.control.eval_now()

    async def action_quit(self) -> None:
        if self.control is None or self.attached is not None:  # an attached run trains on
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.quit_when_stopped = True
                self.action_stop_training()

        self.push_screen(Confirm("A run is in progress. Stop it, save a checkpoint and quit?"), answered)

    @work(thread=True, exclusive=True, group="training")
    def run_training(self, config_paths: list[Path], control: Control, resume: Path | None = None,
                     more: dict | None = None, rerun_with: dict | None = None) -> None:
        failed: list[ev.RunFailed] = []  # the trainer reports its own failure; say it once

        def emit(event: ev.Event) -> None:
            if isinstance(event, ev.RunFailed):
                failed.append(event)
            self._enqueue(event)

        try:
            train(config_paths, emit, control, resume, more, rerun_with)
        except UserError as e:
            if not failed:
                self._enqueue(ev.RunFailed(step=0, error=str(e)))
        except Exception as e:  # a bug: show it, keep the app alive
            if not failed:
                self._enqueue(ev.RunFailed(step=0, error=f"{type(e).__name__}: {e}"))
        finally:
            self.post_message(TrainingEnded())

    @work(thread=True, exclusive=True, group="training")
    def follow_trainer(self, run_dir: Path) -> None:
        worker = get_current_worker()
        try:
            ended = follow_run(run_dir, self._enqueue, lambda: worker.is_cancelled)
            if ended == "process ended":
                self._enqueue(ev.Notice(message=f"the process training {run_dir} ended before the run finished",
                                        level="warning"))
        finally:
            self.post_message(TrainingEnded())

    def _enqueue(self, event: ev.Event) -> None:
        """Called on the training thread; blocks only if the UI is 10,000 events behind."""
        self.events.put(event)

    def set_state(self, state: str) -> None:
        self.run_state = state
        self.sub_title = "" if state == "idle" else state
        self.refresh_bindings()

    def drain_events(self) -> None:
        """Show the events queued since the last drain (the timer's 10 Hz is the UI's throttle)."""
        with self.batch_update():
            while True:
                try:
                    event = self.events.get_nowait()
                except queue.Empty:
                    break
                before, self.view = self.view, self.view.apply(event)
                self._follow_view(before, self.view)
                self.history.append(event)  # what the Train screen replays when it opens
                if self._train_screen_live():
                    self.train_screen.apply(event)

    def _follow_view(self, before: RunView, view: RunView) -> None:
        """What the session's state says to the app: the loop's state, and a failure worth a
        notification."""
        if view.loop_state != before.loop_state:
            self.set_state(view.loop_state)
        if view.end is not before.end and isinstance(view.end, ev.RunFailed):
            self.notify(failed_line(view.end), severity="error", timeout=10)  # one line, as the CLI prints

    def on_training_ended(self, message: TrainingEnded) -> None:
        """The session is over once the thread's last events are shown."""
        self.drain_events()
        self.control = None
        self.set_state("idle")
        if self.quit_when_stopped:
            self.exit()

    @property
    def attached(self) -> Path | None:
        """The run folder followed, when another process trains it."""
        return self.control.run_dir if isinstance(self.control, RemoteControl) else None

    @property
    def attached_pid(self) -> int | None:
        """The process training the run followed, from its RunStarted, for the RSS gauge."""
        started = self.view.started
        return (started.pid or None) if self.attached is not None and started is not None else None

    def poll_system_memory(self) -> None:
        if self._train_screen_live():
            self.train_screen.show_system_memory(read_system_memory(self.attached_pid))

    def _train_screen_live(self) -> bool:
        """Whether the Train screen's widgets can take updates: it is mounted and the app is not
        closing (the timers still fire while the screens are being taken down)."""
        return self.train_screen.is_mounted and not self._exit


def run_app(config_paths: list[str] | None = None, attach: str | None = None) -> int:
    runs_dir = Path(attach).parent if attach else "runs"
    TunerApp(config_paths or None, runs_dir=runs_dir, attach=attach).run()
    return 0
