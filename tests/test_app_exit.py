"""Quitting the app during a run stops and saves it, then ends the process cleanly: status 0.

MLX aborted the interpreter's exit (status 134, "terminate called without an active exception")
after training on the app's worker thread; :func:`tui.launch.leave` works around it. Driven in a
real terminal (tmux), as a user would: open the demo, train, quit.
"""

import re
import time

from .terminal import app_in_terminal, demo_config


def test_quitting_during_a_run_saves_it_and_exits_with_status_0(tmp_path):
    with app_in_terminal(tmp_path, demo_config(tmp_path), size=(100, 30)) as term:
        assert term.wait_for(lambda: "valid" in term.screen(), 90), term.screen()
        term.keys("Escape")
        time.sleep(0.5)
        term.keys("t")
        assert term.wait_for(lambda: re.search(r"step (1[2-9]\d|[2-3]\d\d)/400", term.screen()), 90), term.screen()
        term.keys("C-q")
        assert term.wait_for(lambda: "y yes" in term.screen(), 20), term.screen()  # a run is in progress: asked
        term.keys("y")
        assert term.wait_for(term.status.exists, 60), term.screen()
        assert term.status.read_text().strip() == "0"
        assert "terminate called" not in term.screen() and "Aborted" not in term.screen()
    [run_dir] = (tmp_path / "runs").iterdir()
    assert (run_dir / "checkpoints" / "latest").exists()  # stopped with a checkpoint
