"""Export a run's checkpoint: pick the format, its precision and the output path, then watch it
being written.

The export itself is :func:`engine.export.export_run`, run in a thread worker that posts its
progress; a path that exists is refused (nothing a user has is overwritten), and what cannot be
exported says so before any work (:func:`engine.export.check_exportable`). The dialog closes with
the path written, which the Runs screen announces. Escape during an export cancels it at its
next progress report, which leaves nothing behind (``export_run`` removes its staging folder).
"""

from __future__ import annotations

import threading
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, ProgressBar

from engine.errors import UserError

from ..messages import ExportEnded, ExportProgress
from ..widgets.ordered_input import OrderedInput

FORMATS = {
    "mlx": "a fused mlx-lm model folder",
    "gguf": "one GGUF file (llama.cpp)",
    "ollama": "a GGUF and its Modelfile, for ollama create",
    "lmstudio": "the folder layout LM Studio reads",
}


GGUF_QUANTS = {
    "f16": "16-bit floats (llama.cpp's usual)",
    "q8_0": "8-bit blocks, about half the size",
    "f32": "32-bit floats, exactly the fused model",
}
QUANTS = {  # per format, the default first; engine.export.export_run's quant= (None for "keep")
    "mlx": {"keep": "the base's own dtype and quantization", "dequantize": "float32, no quantized layer"},
    "gguf": GGUF_QUANTS,
    "ollama": GGUF_QUANTS,
    "lmstudio": GGUF_QUANTS,
}
CANCELLED = "export cancelled; nothing was left behind"


class Cancelled(Exception):
    """Raised in the export's progress callback when the user cancels."""


def default_output(run_dir: Path, step: int | None, fmt: str, quant: str | None = None) -> str:
    """``exports/<run>-<step>-<format>`` under the working folder, ``-<quant>`` added when it is
    not the format's default (a ``.gguf`` file for gguf)."""
    name = f"{Path(run_dir).name}-{'final' if step is None else f'step{step}'}-{fmt}"
    if quant is not None and quant != next(iter(QUANTS[fmt])):
        name += f"-{quant}"
    return str(Path("exports") / (name + (".gguf" if fmt == "gguf" else "")))


def export_quant(quant: str) -> str | None:
    """What ``export_run`` takes for a choice: "keep" is its default, None."""
    return None if quant == "keep" else quant


class ExportDialog(ModalScreen[Path | None]):
    """Returns the path written, or None when closed before (escape) or after a failure."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="export-cancel",
                        tooltip="Close without exporting; during an export, cancel it (nothing is left behind)")]
    DEFAULT_CSS = """
    ExportDialog .dialog { padding: 0 2; max-height: 100%; }
    ExportDialog OptionList { height: auto; max-height: 6; }
    ExportDialog ProgressBar { display: none; }
    ExportDialog.exporting ProgressBar { display: block; }
    """

    def __init__(self, run_dir: Path, step: int | None) -> None:
        super().__init__()
        self.run_dir, self.step = Path(run_dir), step
        self.fmt = "gguf"
        self.quant = next(iter(QUANTS[self.fmt]))
        self.exporting = False
        self._cancel = threading.Event()

    def compose(self) -> ComposeResult:
        what = "the final adapter" if self.step is None else f"checkpoint {self.step}"
        with Vertical(classes="dialog"):
            yield Label(f"Export {self.run_dir.name}, {what}", markup=False)
            yield Label("as (up/down, then enter):")
            yield OptionList(*(f"{fmt:<9} {text}" for fmt, text in FORMATS.items()), id="export-format")
            yield Label("precision (up/down, then enter):")
            yield OptionList(*self._quant_options(), id="export-quant")
            yield Label("to (enter starts; an existing path is refused):")
            yield OrderedInput(self._default_path(), id="export-path")
            yield Label("", id="export-note", markup=False)
            yield ProgressBar(total=1.0, show_eta=False, id="export-progress")

    def on_mount(self) -> None:
        options = self.query_one("#export-format", OptionList)
        options.highlighted = list(FORMATS).index(self.fmt)
        self.query_one("#export-quant", OptionList).highlighted = 0
        options.focus()

    def _quant_options(self) -> list[str]:
        return [f"{quant:<10} {text}" + (" (default)" if i == 0 else "")
                for i, (quant, text) in enumerate(QUANTS[self.fmt].items())]

    def _default_path(self) -> str:
        return default_output(self.run_dir, self.step, self.fmt, self.quant)

    def on_option_list_option_highlighted(self, message: OptionList.OptionHighlighted) -> None:
        """A new format (its precisions replace the last one's) or precision: the default path
        follows, unless the path was typed."""
        field = self.query_one("#export-path", OrderedInput)
        was_default = field.value == self._default_path()
        if message.option_list.id == "export-format":
            fmt = list(FORMATS)[message.option_index]
            if fmt != self.fmt:
                self.fmt, self.quant = fmt, next(iter(QUANTS[fmt]))
                quants = self.query_one("#export-quant", OptionList)
                quants.clear_options().add_options(self._quant_options())
                quants.highlighted = 0
        else:
            self.quant = list(QUANTS[self.fmt])[message.option_index]
        if was_default:
            field.value = self._default_path()

    def on_option_list_option_selected(self, message: OptionList.OptionSelected) -> None:
        """enter on the format moves on to its precision, on the precision to the path."""
        after = "#export-quant" if message.option_list.id == "export-format" else "#export-path"
        self.query_one(after).focus()

    def on_input_submitted(self, message: Input.Submitted) -> None:
        if self.exporting:
            return
        out = Path(message.value.strip()).expanduser()
        if not message.value.strip():
            self._note("give the path to write")
        elif out.exists() or out.is_symlink():
            self._note(f"{out} exists: choose another path (nothing is overwritten)")
        else:
            self.exporting = True
            self.add_class("exporting")
            self._note(f"exporting to {out} …")
            self.export(self.fmt, export_quant(self.quant), out)

    @work(thread=True, exclusive=True, group="export")
    def export(self, fmt: str, quant: str | None, out: Path) -> None:
        from engine.export import check_exportable, export_run  # loads MLX: on the worker

        def progress(stage: str, fraction: float) -> None:
            if self._cancel.is_set():
                raise Cancelled  # export_run stops and removes what it had written
            self.post_message(ExportProgress(stage, fraction))

        try:
            check_exportable(self.run_dir, fmt, self.step)
            written = export_run(self.run_dir, fmt, out, checkpoint=self.step, quant=quant, progress=progress)
        except Cancelled:
            self.post_message(ExportEnded(None, CANCELLED))
            return
        except (UserError, OSError) as e:
            self.post_message(ExportEnded(None, str(e)))
            return
        except Exception as e:  # a bug: one line, the app goes on
            self.post_message(ExportEnded(None, f"export failed: {type(e).__name__}: {e}"))
            return
        self.post_message(ExportEnded(Path(written)))

    def on_export_progress(self, message: ExportProgress) -> None:
        self.query_one(ProgressBar).update(progress=max(0.0, min(1.0, message.fraction)))
        self._note(f"{message.stage} … {message.fraction:.0%}")

    def on_export_ended(self, message: ExportEnded) -> None:
        self.exporting = False
        self.remove_class("exporting")
        if message.error == CANCELLED:
            self.notify(CANCELLED, severity="warning")
            self.dismiss(None)
        elif message.error is not None:
            self._note(message.error)  # stays open: another format or path may work
            self.notify(message.error, severity="error", timeout=10)
        else:
            self.notify(f"exported: {message.path}", timeout=10)
            self.dismiss(message.path)

    def _note(self, text: str) -> None:
        self.query_one("#export-note", Label).update(text)

    def action_cancel(self) -> None:
        if self.exporting:
            self._cancel.set()
            self._note("cancelling at the export's next step …")
        else:
            self.dismiss(None)
