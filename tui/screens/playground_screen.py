"""The Playground: ask a run's adapter (any checkpoint) and its base model, and read the answers
stream in, one at a time or side by side.

The model loads, and answers are generated, in one exclusive thread worker (a new request
supersedes the one before; a lock keeps two threads off the model); the worker posts the text a
few tokens at a time (``THROTTLE``), so the event loop only draws. MLX is imported in the worker,
never with the app. The run's validation prompts are read by a worker of their own.
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, Static
from textual.worker import get_current_worker

from engine.errors import UserError
from engine.playground.chat import MOST_TURNS, Turn, split_record
from engine.playground.stream import ValidPrompt

from ..messages import (
    AnswerFinished,
    AnswerStarted,
    AnswerStreamed,
    GenerationEnded,
    PlaygroundFailed,
    PlaygroundLoaded,
    ValidPromptsRead,
)
from ..playground_work import (BASE, FINAL, SAMPLING_FIELDS, Request, TurnsFitted, answer_safely, open_source,
                               read_sampling, read_valid_prompts, weights_label)
from ..widgets.answer_view import AnswerView
from .path_prompt import PathPrompt

WIDE = 120  # columns from which the two answers open side by side
PANES = ("adapter", "base")


class PlaygroundScreen(Screen):
    BINDING_GROUP_TITLE = "Playground"
    HELP = """\
## Playground

Ask a run's adapter, at any of its checkpoints, and its base model; the answer streams in as it
is generated, through the model's chat template.

- **enter** (in any field) sends the prompt, with the chat so far: each pane keeps its own
  turns (the oldest are dropped when they no longer fit the model); **ctrl+r** starts a new
  chat. **escape** stops the answer being generated (what it wrote stays in the chat), and
  otherwise leaves the fields, so that 1-5 switch screens again (alt+1-5 work anywhere; tab
  comes back to the fields).
- **ctrl+t** switches between the adapter and the base model; **ctrl+b** shows both side by
  side (one after the other is generated); **ctrl+o** steps through the run's checkpoints
  (a new chat: the answers so far came from other weights).
- **ctrl+n** starts a new chat from the run's next validation prompt (its earlier turns too);
  its reference answer shows below.
- **ctrl+l** loads a run folder or a model by name; on the Runs screen (4), **g** opens the
  selected run (and the checkpoint selected there) here.
- The system prompt, temperature (0 is greedy), top-p and max tokens are fields: tab moves on.
"""
    BINDINGS = [
        Binding("escape", "stop_or_leave", "Stop", id="playground-stop", priority=True,
                tooltip="Stop the answer being generated (what it wrote stays); otherwise leave the fields, "
                "so 1-5 switch screens (tab comes back)"),
        Binding("ctrl+t", "toggle_base", "Base", id="playground-toggle", priority=True,
                tooltip="Answer with the run's adapter or with the base model"),
        Binding("ctrl+b", "both", "Both", id="playground-both", priority=True,
                tooltip="Answer with both, side by side (the adapter first), or with one again"),
        Binding("ctrl+o", "next_checkpoint", "Ckpt", id="playground-checkpoint", priority=True,
                tooltip="The adapter of the run's next checkpoint (the final adapter, then each step)"),
        Binding("ctrl+n", "next_prompt", "Valid", id="playground-valid", priority=True,
                tooltip="A new chat from the run's next validation prompt, with its reference answer below"),
        Binding("ctrl+r", "new_chat", "New", id="playground-new-chat", priority=True,
                tooltip="Start a new chat: both panes forget the turns so far"),
        Binding("ctrl+l", "load", "Load", id="playground-load", priority=True,
                tooltip="Load a run folder or a model (a folder, a hub id, builtin:tiny-llama, a .gguf)"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.source: str | None = None  # the run folder or model loaded (or loading)
        self.loaded = False
        self.title_text = ""  # the run's name, or the model's
        self.is_run = False
        self.choices: list[str | int] = []  # the adapters to step through: FINAL, then each step
        self.adapter: str | int = FINAL
        self.show = "adapter"  # adapter | base | both
        self.prompts: list[ValidPrompt] = []
        self.prompt_index = -1
        self.picked: ValidPrompt | None = None
        self.generating = False
        self.history: dict[str, list[Turn]] = {pane: [] for pane in PANES}  # each pane's chat so far
        self._asked = ""  # the prompt being answered: a turn of each pane that answers it
        self._trim_said = False  # dropping old turns is said once per chat
        self._pending: tuple[str, int | None] | None = None
        self._stop: threading.Event | None = None
        self._playground = None  # engine.playground.weights.Playground, used on workers only
        self._model_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("No model loaded: pick a run on the Runs screen (4) and press g, or ctrl+l.",
                     id="playground-status", markup=False)
        with Horizontal(classes="row"):
            yield Label("System")
            yield Input(placeholder="system prompt (optional)", id="system")
        with Horizontal(classes="row"):
            yield Label("temp")
            yield Input("0", id="temp")
            yield Label("top-p")
            yield Input("1", id="top-p")
            yield Label("max tokens")
            yield Input("256", id="max-tokens")
        with Horizontal(classes="row"):
            yield Label("Prompt")
            yield Input(placeholder="ask something, then enter", id="prompt")
        with Horizontal(id="answers"):
            yield AnswerView("adapter", id="answer-adapter")
            yield AnswerView("base model", id="answer-base")
        yield Static("", id="reference", markup=False)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._apply_layout()
        self.query_one("#prompt", Input).focus()

    def on_screen_resume(self) -> None:
        self._start_pending()

    # ------------------------------------------------------------------ what is loaded

    def open_source(self, source, step: int | None = None) -> None:
        """Load a run folder (``step``: its checkpoint to answer with; the final adapter by default)
        or a model; a run already loaded only switches to the checkpoint."""
        self._pending = (str(source), step)
        if self.is_mounted:
            self._start_pending()

    def _start_pending(self) -> None:
        if self._pending is None:
            return
        (source, step), self._pending = self._pending, None
        wanted = step if step is not None else FINAL
        self.show = "adapter"
        if source == self.source and self.loaded:
            self._pick_adapter(wanted)
            return
        self.adapter, chatted = wanted, any(self.history.values())
        self._new_chat(f"new chat with {source} (the earlier answers came from other weights)" if chatted else "",
                       announce=True)
        self.source, self.loaded, self.is_run, self.choices = source, False, False, []
        self.prompts, self.prompt_index = [], -1
        self._status(f"Loading {source} …")
        self.load_model(source)
        self.read_prompts(source)

    @work(thread=True, exclusive=True, group="playground")
    def load_model(self, source: str) -> None:
        with self._model_lock:
            playground, message = open_source(source)
        if playground is None or not get_current_worker().is_cancelled:
            self._playground = playground or self._playground
            self.post_message(message)

    def on_playground_loaded(self, message: PlaygroundLoaded) -> None:
        if message.superseded or message.source != self.source:
            return
        self.loaded, self.title_text = True, message.title
        self.is_run = message.has_final or bool(message.steps)
        self.choices = ([FINAL] if message.has_final else []) + list(message.steps)
        if not self.is_run:
            self.show = "base"
        elif self.adapter not in self.choices:
            self.notify(f"{weights_label(self.adapter)} not found; using {weights_label(self.choices[0])}",
                        severity="warning")
            self.adapter = self.choices[0]
        if self.is_run and self.size.width >= WIDE:
            self.show = "both"
        self._apply_layout()
        self.refresh_bindings()

    def on_playground_failed(self, message: PlaygroundFailed) -> None:
        if not message.superseded:
            self.notify(message.error, severity="error", timeout=10)
            self._status(message.error if not self.loaded else self._status_text())

    @work(thread=True, exclusive=True, group="playground-prompts")
    def read_prompts(self, source: str) -> None:
        self.post_message(read_valid_prompts(source))

    def on_valid_prompts_read(self, message: ValidPromptsRead) -> None:
        if not message.superseded:
            self.prompts, self.prompt_index = message.prompts, -1
            if message.error:
                self.notify(message.error, severity="warning")
            self.refresh_bindings()

    def action_load(self) -> None:
        self.app.push_screen(PathPrompt("Load a run folder or a model (folder, hub id, builtin:tiny-llama, .gguf):",
                                        self.source or ""),
                             lambda answer: answer and self.open_source(answer))

    # ------------------------------------------------------------------ which weights answer

    def action_toggle_base(self) -> None:
        self.show = "base" if self.show == "adapter" else "adapter"
        self._apply_layout()

    def action_both(self) -> None:
        self.show = "adapter" if self.show == "both" else "both"
        self._apply_layout()

    def action_next_checkpoint(self) -> None:
        at = self.choices.index(self.adapter) if self.adapter in self.choices else -1
        self._pick_adapter(self.choices[(at + 1) % len(self.choices)])

    def _pick_adapter(self, which: str | int) -> None:
        if which not in self.choices:
            self.notify(f"{weights_label(which)} not found in {self.source}", severity="warning")
            return
        changed, self.adapter = which != self.adapter, which
        if self.show == "base":
            self.show = "adapter"
        self._apply_layout()
        if changed:
            self._new_chat(f"new chat: {weights_label(which)} answers now (the earlier answers came from other weights)",
                           announce=True)

    def _apply_layout(self) -> None:
        self.query_one("#answer-adapter").border_title = weights_label(self.adapter)
        self.query_one("#answer-adapter").display = self.show in ("adapter", "both")
        self.query_one("#answer-base").display = self.show in ("base", "both")
        self._status(self._status_text())

    def _status_text(self) -> str:
        if self.source is None:
            return "No model loaded: pick a run on the Runs screen (4) and press g, or ctrl+l."
        if not self.loaded:
            return f"Loading {self.source} …"
        title = self.title_text
        if not self.is_run:
            return f"{title}: base model (no adapters)"
        shown = {"adapter": weights_label(self.adapter), "base": "base model",
                 "both": f"{weights_label(self.adapter)} | base model"}[self.show]
        return f"{title}: {shown}" + (" · generating …" if self.generating else "")

    def _status(self, text: str) -> None:
        self.query_one("#playground-status", Static).update(text)

    # ------------------------------------------------------------------ validation prompts

    def action_next_prompt(self) -> None:
        if not self.prompts:
            self.notify("this run's data has no validation prompts with answers", severity="warning")
            return
        self.prompt_index = (self.prompt_index + 1) % len(self.prompts)
        prompt = self.prompts[self.prompt_index]
        system, turns, question = split_record(prompt.messages)
        self.query_one("#prompt", Input).value = question
        self.query_one("#system", Input).value = system or ""
        where = f"{self.prompt_index + 1}/{len(self.prompts)}, {Path(prompt.origin).name}"
        self._new_chat(f"new chat: validation prompt {where}", turns)
        self.picked = prompt  # after the new chat, which forgets the last one
        self.query_one("#reference", Static).update(f"Reference ({where}): {prompt.reference}")

    # ------------------------------------------------------------------ the chat

    def action_new_chat(self) -> None:
        self._new_chat("new chat")

    def _new_chat(self, note: str, turns: tuple[Turn, ...] = (), announce: bool = False) -> None:
        """Both panes start over (from ``turns``, a validation record's), saying why in them (and
        aloud when ``announce``: a chat the user did not end); an answer being generated stops and
        is not kept, and a reference no longer applies."""
        had = any(self.history.values())
        if self.generating:
            if self._stop is not None:
                self._stop.set()
            self.workers.cancel_group(self, "playground")  # what it still posts is superseded
            self.generating = False
            self.refresh_bindings()
        self.picked = None
        self.query_one("#reference", Static).update("")
        self.history = {pane: list(turns) for pane in PANES}
        self._trim_said = False
        for view in self.query(AnswerView):
            view.new_chat(turns, note)
        if had and announce:
            self.notify(note)
        self._status(self._status_text())

    def on_turns_fitted(self, message: TurnsFitted) -> None:
        """The oldest turns no longer fit the model: they go from the pane's chat, said once."""
        if message.superseded:
            return
        self.history[message.pane] = list(message.kept)
        if not self._trim_said:
            self._trim_said = True
            note = (f"the oldest {message.dropped} turn(s) no longer fit (the model's context, at most "
                    f"{MOST_TURNS} turns): it reads the last {len(message.kept)}; ctrl+r starts a new chat")
            self.query_one(f"#answer-{message.pane}", AnswerView).say(note)
            self.notify(note, severity="warning")

    # ------------------------------------------------------------------ asking

    def on_input_submitted(self, message: Input.Submitted) -> None:
        message.stop()
        self.send()

    def send(self) -> None:
        if not self.loaded:
            self.notify("no model loaded yet: pick a run on the Runs screen (4) and press g, or ctrl+l",
                        severity="warning")
            return
        text = self.query_one("#prompt", Input).value.strip()
        if not text:
            return
        if self.generating:  # the chat goes one turn at a time
            self.notify("an answer is being generated: wait for it, or escape stops it", severity="warning")
            return
        try:
            sampling = read_sampling({name: self.query_one(f"#{name}", Input).value for name in SAMPLING_FIELDS})
        except UserError as e:
            self.notify(str(e), severity="error")
            return
        self._forget_reference(text)
        targets = [("adapter", self.adapter)] if self.show in ("adapter", "both") else []
        targets += [("base", BASE)] if self.show in ("base", "both") else []
        chats = tuple((pane, which, tuple(self.history[pane])) for pane, which in targets)
        system = self.query_one("#system", Input).value.strip() or None
        self._stop, self._asked = threading.Event(), text
        self.generating = True
        self._status(self._status_text())
        self.refresh_bindings()
        self.generate_answers(Request(self.source, system, text, sampling, chats, self._stop))

    def _forget_reference(self, text: str) -> None:
        """The reference answer goes once the chat moves past the validation prompt it answers."""
        picked = self.picked
        if picked is None:
            return
        _system, turns, question = split_record(picked.messages)
        if text != question or any(len(chat) > len(turns) for chat in self.history.values()):
            self.picked = None
            self.query_one("#reference", Static).update("")

    @work(thread=True, exclusive=True, group="playground")
    def generate_answers(self, request: Request) -> None:
        worker = get_current_worker()
        with self._model_lock:
            answer_safely(self._playground, request, self.post_message,
                          lambda: request.stop.is_set() or worker.is_cancelled)

    def on_answer_started(self, message: AnswerStarted) -> None:
        if not message.superseded:
            self.query_one(f"#answer-{message.pane}", AnswerView).start(message.label, self._asked)

    def on_answer_streamed(self, message: AnswerStreamed) -> None:
        if not message.superseded:
            self.query_one(f"#answer-{message.pane}", AnswerView).add(message.text, message.tokens)

    def on_answer_finished(self, message: AnswerFinished) -> None:
        """The answer joins its pane's chat as it ended (cut short when stopped)."""
        if not message.superseded:
            self.query_one(f"#answer-{message.pane}", AnswerView).finish(message.finished)
            self.history[message.pane].append(Turn(self._asked, message.finished.text))

    def on_generation_ended(self, message: GenerationEnded) -> None:
        if not message.superseded:
            self.generating = False
            self._status(self._status_text())
            self.refresh_bindings()

    def action_stop_or_leave(self) -> None:
        if self.generating and self._stop is not None:
            self._stop.set()
        else:  # typing digits into a field would not switch screens: leave it for the answers
            shown = [view for view in self.query(AnswerView) if view.display]
            if shown:
                shown[0].focus()

    def check_action(self, action: str, parameters) -> bool | None:
        """Keys that do nothing now are hidden from the footer (F1 lists them all)."""
        if action in ("toggle_base", "both", "next_checkpoint"):
            return self.loaded and self.is_run
        if action == "next_prompt":
            return bool(self.prompts)
        if action == "new_chat":
            return self.loaded
        return True
