"""Saving a file keeps its permissions; a new file gets the umask's, as any editor would leave it."""

import asyncio
import os
import stat

import pytest
from textual.widgets import TextArea

from engine.files import atomic_write_bytes, atomic_write_text
from engine.runs.checkpoints import Checkpoints

from .conftest import wait_until, write_config


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process' umask for a test, and put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("kept", [0o644, 0o640, 0o664, 0o600, 0o755])
def test_rewriting_a_file_keeps_its_mode(tmp_path, umask, kept):
    umask(0o077)  # the mode must come from the file, not from the umask
    path = tmp_path / "config.yaml"
    path.write_text("iters: 1\n")
    os.chmod(path, kept)
    atomic_write_text(path, "iters: 2\n")
    assert path.read_text() == "iters: 2\n"
    assert mode(path) == kept


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_a_new_file_gets_the_umasks_mode(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "new.yaml"
    atomic_write_text(path, "iters: 1\n")
    assert mode(path) == 0o666 & ~mask
    assert not [p.name for p in tmp_path.iterdir() if p.name != "new.yaml"]  # no temporary left behind


def test_adapter_config_and_promotion_keep_the_mode(tmp_path, umask):
    from engine.config import load_stages
    from engine.model.load import write_adapter_config

    umask(0o077)
    cfg = load_stages([write_config(tmp_path)])[0].config
    adapters = tmp_path / "run" / "adapters"
    adapters.mkdir(parents=True)
    write_adapter_config(adapters, cfg, "model", {})
    assert mode(adapters / "adapter_config.json") == 0o600  # new: the umask's
    os.chmod(adapters / "adapter_config.json", 0o644)
    write_adapter_config(adapters, cfg, "model", {"config_file": "x.yaml"})
    assert mode(adapters / "adapter_config.json") == 0o644

    checkpoints = Checkpoints(tmp_path / "run")
    step = checkpoints.at(3).folder
    step.mkdir(parents=True)
    (step / "adapters.safetensors").write_bytes(b"weights of step 3")
    atomic_write_bytes(checkpoints.adapter_file, b"latest")
    os.chmod(checkpoints.adapter_file, 0o644)
    checkpoints.promote(3)
    assert checkpoints.adapter_file.read_bytes() == b"weights of step 3"
    assert mode(checkpoints.adapter_file) == 0o644


def test_ctrl_s_in_the_app_keeps_the_config_files_mode(tmp_path, monkeypatch, umask):
    from tui.app import TunerApp

    umask(0o077)
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)
    os.chmod(config, 0o664)

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(80, 24)) as pilot:
            area = app.config_screen.query_one(TextArea)
            assert await wait_until(pilot, lambda: "iters" in area.text, 60)
            area.load_text(area.text.replace("iters: 20", "iters: 21"))
            await pilot.press("ctrl+s")
            assert await wait_until(pilot, lambda: "iters: 21" in config.read_text(), 10)

    asyncio.run(scenario())
    assert mode(config) == 0o664
