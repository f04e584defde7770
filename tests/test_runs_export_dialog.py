"""The Runs screen's export key: a dialog asks the format, its precision (the quant) and a path
that does not exist yet, runs the export (``engine.export.export_run``, faked here) on a worker with its progress shown,
and the Runs screen says where it wrote; what cannot be exported stays one line in the dialog."""

import asyncio
import sys
import threading
import types
from pathlib import Path

import pytest
from textual.widgets import DataTable, Label, OptionList, ProgressBar

from engine.errors import UserError
from tui.app import TunerApp
from tui.screens.export_dialog import QUANTS, ExportDialog, default_output

from .conftest import wait_until
from .test_runs_screen import make_runs
from .test_screens_snapshot import CONFIG


class FakeExport:
    """export_run and check_exportable as engine.export offers them, recording their calls; the
    export waits at half way until the test lets it finish."""

    def __init__(self, refuse: str | None = None):
        self.calls, self.refuse = [], refuse
        self.halfway, self.go_on = threading.Event(), threading.Event()

    def check_exportable(self, run_dir, to, checkpoint=None):
        if self.refuse:
            raise UserError(self.refuse)

    def export_run(self, run_dir, to, out, checkpoint=None, quant=None, progress=None):
        self.calls.append((Path(run_dir), to, Path(out), checkpoint, quant))
        progress("writing tensors", 0.5)
        self.halfway.set()
        assert self.go_on.wait(30)
        progress("done", 1.0)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("exported")
        return out

    def module(self) -> types.ModuleType:
        fake = types.ModuleType("engine.export")
        fake.export_run, fake.check_exportable = self.export_run, self.check_exportable
        return fake


def make_app(tmp_path, monkeypatch, fake: FakeExport):
    monkeypatch.setitem(sys.modules, "engine.export", fake.module())
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo.yaml").write_text(CONFIG)
    make_runs(tmp_path / "runs")
    app = TunerApp("demo.yaml", runs_dir=tmp_path / "runs", poll_memory=False)
    notes = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append((message, kw.get("severity"))))
    return app, notes


async def open_dialog(app, pilot, rows_down: int) -> ExportDialog:
    app.switch_mode("runs")
    assert await wait_until(pilot, lambda: app.screen.query("#runs") and app.screen.query_one(
        "#runs", DataTable).row_count == 3, 20)
    await pilot.press(*["down"] * rows_down, "e")
    assert await wait_until(pilot, lambda: isinstance(app.screen, ExportDialog), 10)
    return app.screen


def note(dialog) -> str:
    return str(dialog.query_one("#export-note", Label).content)


def test_export_asks_format_and_a_new_path_and_shows_progress(tmp_path, monkeypatch):
    fake = FakeExport()
    app, notes = make_app(tmp_path, monkeypatch, fake)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await open_dialog(app, pilot, 2)  # plw-0.1, the completed run
            run_dir = tmp_path / "runs" / "plw-0.1"
            field = dialog.query_one("#export-path")
            assert field.value == default_output(run_dir, None, "gguf") == "exports/plw-0.1-final-gguf.gguf"
            await pilot.press("down")  # ollama: the default path follows the format
            assert dialog.fmt == "ollama" and field.value == "exports/plw-0.1-final-ollama"

            (tmp_path / "taken").mkdir()
            field.value = "taken"
            field.focus()
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: "exists" in note(dialog), 5)
            assert fake.calls == [] and isinstance(app.screen, ExportDialog)

            field.value = "out/model"
            await pilot.press("enter")
            assert await wait_until(pilot, fake.halfway.is_set, 10)
            bar = dialog.query_one(ProgressBar)
            assert await wait_until(pilot, lambda: bar.progress == 0.5 and "writing tensors" in note(dialog), 10)
            assert bar.display
            fake.go_on.set()
            assert await wait_until(pilot, lambda: not isinstance(app.screen, ExportDialog), 10)
            assert fake.calls == [(run_dir, "ollama", Path("out/model"), None, "f16")]
            assert (tmp_path / "out" / "model").read_text() == "exported"
            assert ("exported: out/model", "information") in notes

    asyncio.run(scenario())


def test_a_run_that_cannot_be_exported_says_so_in_one_line(tmp_path, monkeypatch):
    fake = FakeExport(refuse="gguf: the model's architecture 'phi3' cannot be written as GGUF")
    app, notes = make_app(tmp_path, monkeypatch, fake)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await open_dialog(app, pilot, 0)
            dialog.query_one(OptionList).focus()
            await pilot.press("enter")  # the format chosen: on to its precision
            assert app.focused is dialog.query_one("#export-quant")
            await pilot.press("enter")  # the precision chosen: on to the path
            assert app.focused is dialog.query_one("#export-path")
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: "cannot be written as GGUF" in note(dialog), 10)
            assert fake.calls == [] and isinstance(app.screen, ExportDialog)
            assert any("phi3" in message and severity == "error" for message, severity in notes)
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: not isinstance(app.screen, ExportDialog), 5)

    asyncio.run(scenario())


def test_escape_cancels_an_export_at_its_next_step(tmp_path, monkeypatch):
    fake = FakeExport()
    app, notes = make_app(tmp_path, monkeypatch, fake)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await open_dialog(app, pilot, 2)
            field = dialog.query_one("#export-path")
            field.focus()
            await pilot.press("enter")
            assert await wait_until(pilot, fake.halfway.is_set, 10)
            await pilot.press("escape")
            assert await wait_until(pilot, lambda: "cancelling" in note(dialog), 5)
            fake.go_on.set()  # its next progress report raises: the export stops there
            assert await wait_until(pilot, lambda: not isinstance(app.screen, ExportDialog), 10)
            assert not (tmp_path / field.value).exists()
            assert ("export cancelled; nothing was left behind", "warning") in notes

    asyncio.run(scenario())


@pytest.mark.parametrize("step", [None, 20])
def test_default_output_names_the_run_and_the_checkpoint(step):
    name = "r-final-mlx" if step is None else "r-step20-mlx"
    assert default_output(Path("/x/r"), step, "mlx") == str(Path("exports") / name)


def shown_options(dialog) -> list[str]:
    quants = dialog.query_one("#export-quant", OptionList)
    return [str(quants.get_option_at_index(i).prompt).split()[0] for i in range(quants.option_count)]


@pytest.mark.parametrize("fmt, downs, quant, path", [
    ("gguf", 1, "q8_0", "exports/plw-0.1-final-gguf-q8_0.gguf"),
    ("gguf", 2, "f32", "exports/plw-0.1-final-gguf-f32.gguf"),
    ("lmstudio", 1, "q8_0", "exports/plw-0.1-final-lmstudio-q8_0"),
    ("mlx", 0, None, "exports/plw-0.1-final-mlx"),  # keep: export_run's default
    ("mlx", 1, "dequantize", "exports/plw-0.1-final-mlx-dequantize"),
])
def test_the_precision_goes_to_the_export_and_names_the_default_path(tmp_path, monkeypatch, fmt, downs, quant, path):
    fake = FakeExport()
    app, notes = make_app(tmp_path, monkeypatch, fake)

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await open_dialog(app, pilot, 2)
            formats = list(QUANTS)
            await pilot.press(*(["down"] * (formats.index(fmt) - formats.index("gguf"))
                                if formats.index(fmt) >= 1 else ["up"]))
            assert dialog.fmt == fmt
            assert shown_options(dialog) == (["keep", "dequantize"] if fmt == "mlx" else ["f16", "q8_0", "f32"])
            await pilot.press("enter", *["down"] * downs, "enter")  # the precision, then on to the path
            field = dialog.query_one("#export-path")
            assert app.focused is field and field.value == path
            for widget in (field, dialog.query_one("#export-quant"), dialog.query_one("#export-note")):
                assert widget.region.bottom <= 24 and widget.region.height > 0  # the dialog fits 80x24
            fake.go_on.set()
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: not isinstance(app.screen, ExportDialog), 10)
            assert fake.calls == [(tmp_path / "runs" / "plw-0.1", fmt, Path(path), None, quant)]

    asyncio.run(scenario())


def test_a_typed_path_stays_when_the_precision_changes(tmp_path, monkeypatch):
    app, notes = make_app(tmp_path, monkeypatch, FakeExport())

    async def scenario():
        async with app.run_test(size=(80, 24)) as pilot:
            dialog = await open_dialog(app, pilot, 2)
            field = dialog.query_one("#export-path")
            field.value = "mine.gguf"
            await pilot.press("enter", "down")  # q8_0
            assert dialog.quant == "q8_0" and field.value == "mine.gguf"
            dialog.query_one("#export-format").focus()
            await pilot.press("up")  # mlx: its precisions replace GGUF's, the default first
            assert dialog.fmt == "mlx" and dialog.quant == "keep" and field.value == "mine.gguf"

    asyncio.run(scenario())


def test_the_dialogs_precisions_are_the_ones_export_run_takes():
    from engine.export import GGUF_QUANTS, MLX_QUANTS, TARGETS

    assert set(QUANTS) == set(TARGETS)
    for fmt, choices in QUANTS.items():
        assert list(choices) == (["keep", *MLX_QUANTS] if fmt == "mlx" else list(GGUF_QUANTS))
