"""The app in a real terminal (tmux), for what Pilot cannot show: Textual's own input parser
reading keys sent in one burst, and the process' exit after the app closes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .conftest import DEMO_DATA, REPO


def demo_config(folder: Path) -> Path:
    """The README's demo config, copied into ``folder`` (so no bundled file is ever edited)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "demo.yaml"
    config.write_text((REPO / "sample_configs" / "demo.yaml").read_text()
                      .replace("data: data/demo-reviews ", f"data: {DEMO_DATA.parent / 'demo-reviews'} "))
    return config


class Terminal:
    """One tmux server running the app; ``status`` gets the app's exit status once it ends."""

    def __init__(self, session: str, status: Path):
        self.tmux = ["tmux", "-L", session]
        self.session = session
        self.status = status

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-p", "-t", self.session],
                              capture_output=True, text=True).stdout

    def keys(self, *names: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", self.session, *names], check=True)

    def wait_for(self, predicate, seconds: float = 60) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.2)
        return False


@contextmanager
def app_in_terminal(tmp_path: Path, config: Path, size: tuple[int, int] = (80, 24)):
    """``tuner CONFIG`` in a fresh tmux server of ``size``, run from ``tmp_path``; killed on exit."""
    session = f"tuner-test-{os.getpid()}-{time.monotonic_ns()}"
    status = tmp_path / "exit-status"
    env = f"TUNER_CONFIG_DIR={tmp_path / 'settings'} TUNER_CACHE={os.environ.get('TUNER_CACHE', '')}"
    app = (f"cd {tmp_path} && {env} {sys.executable} -c 'import sys; sys.path.insert(0, \"{REPO}\"); "
           f"from tui.launch import main; main()' {config}; echo $? > {status}; sleep 60")
    terminal = Terminal(session, status)
    subprocess.run([*terminal.tmux, "new", "-d", "-s", session, "-x", str(size[0]), "-y", str(size[1]), app],
                   check=True)
    try:
        yield terminal
    finally:
        subprocess.run([*terminal.tmux, "kill-server"], capture_output=True)
