"""Detached runs: their own process and session, steered across processes through the run's inbox."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.errors import UserError
from engine.runs.control import Control, send_request
from engine.runs.folder import PROCESS_FILE, clear_process_record, live_pid, write_process_record
from engine.runs.listing import follow_run, unfinished_status
from engine.runs.metrics import read_events

from .conftest import REPO, write_config


def tuner(*args: str, cwd: Path = REPO, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=180, **kwargs)


def wait_for(predicate, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def events_of(run_dir: Path, kind) -> list:
    return [e for e in read_events(run_dir) if isinstance(e, kind)]


# ---------------------------------------------------------------------- the inbox


def test_requests_from_the_inbox_apply_in_the_order_sent(tmp_path):
    control = Control()
    control.watch(tmp_path)
    for action in ("pause", "save", "eval"):
        send_request(tmp_path, action)
    control.poll()
    assert control.paused and control.take_save() and control.take_eval()
    assert not list((tmp_path / "control").iterdir())  # read requests are removed
    send_request(tmp_path, "pause")
    send_request(tmp_path, "resume")
    control.poll()
    assert not control.paused
    send_request(tmp_path, "stop")
    control.wait_for_resume(0.01)  # a paused loop's wait also reads the inbox
    assert control.stopping


def test_requests_left_by_a_dead_process_are_dropped_when_a_run_resumes(tmp_path):
    send_request(tmp_path, "stop")
    control = Control()
    control.watch(tmp_path)
    control.poll()
    assert not control.stopping


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError):
        send_request(Path("."), "explode")


# ---------------------------------------------------------------------- is the run alive?


def test_the_process_record_tells_a_live_run_from_a_dead_one(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    write_process_record(tmp_path)
    assert live_pid(tmp_path) == os.getpid()
    assert unfinished_status(tmp_path) == "running" and unfinished_status(tmp_path, "paused") == "paused"
    record = json.loads((tmp_path / PROCESS_FILE).read_text())
    record["created"] -= 3600  # the pid now belongs to another process than the one recorded
    (tmp_path / PROCESS_FILE).write_text(json.dumps(record))
    assert live_pid(tmp_path) is None and unfinished_status(tmp_path) == "interrupted"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / PROCESS_FILE).write_text(json.dumps({**record, "pid": dead.pid}))
    assert live_pid(tmp_path) is None
    clear_process_record(tmp_path)
    assert unfinished_status(tmp_path) == "running"  # no record: a fresh metrics file means alive


# ---------------------------------------------------------------------- tuner train --detach


def test_a_detached_run_outlives_its_terminal_and_obeys_tuner_control(tmp_path):
    config = write_config(tmp_path, iters=100000, steps_per_eval=100000, save_every=100000, steps_per_report=5)
    # the shell that starts it runs in its own session, like an SSH login; hanging it up later
    # must not reach the run
    shell = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--detach", str(config)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = shell.communicate(timeout=180)
    assert shell.returncode == 0, err
    [run_dir] = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert "training in the background (pid" in out and str(run_dir) in out
    pid = live_pid(run_dir)
    assert pid is not None and os.getsid(pid) != os.getsid(0)
    try:
        os.killpg(shell.pid, signal.SIGHUP)  # the login session ends
    except ProcessLookupError:
        pass
    assert wait_for(lambda: events_of(run_dir, ev.TrainReport))

    assert tuner("control", str(run_dir), "pause", "--wait").returncode == 0
    assert wait_for(lambda: any(e.state == "paused" for e in events_of(run_dir, ev.StateChanged)))
    assert tuner("control", str(run_dir), "save", "--wait").returncode == 0
    assert wait_for(lambda: any(e.reason == "requested" for e in events_of(run_dir, ev.CheckpointSaved)))
    paused_at = max(e.step for e in events_of(run_dir, ev.TrainReport))
    assert tuner("control", str(run_dir), "resume", "--wait").returncode == 0
    assert wait_for(lambda: max(e.step for e in events_of(run_dir, ev.TrainReport)) > paused_at)
    stopped = tuner("control", str(run_dir), "stop", "--wait")
    assert stopped.returncode == 0 and "process has ended" in stopped.stdout
    [finished] = events_of(run_dir, ev.RunFinished)
    assert finished.status == "stopped"
    assert live_pid(run_dir) is None and not (run_dir / PROCESS_FILE).exists()
    assert "stopped at step" in (run_dir / "console.log").read_text()
    again = tuner("control", str(run_dir), "stop")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "no run is training there" in again.stderr


def test_detach_reports_config_mistakes_in_the_foreground(tmp_path):
    config = write_config(tmp_path, batch_size=-3)
    result = tuner("train", "--detach", str(config))
    assert result.returncode == 2 and "batch_size" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_detach_reports_a_run_that_fails_while_starting(tmp_path):
    config = write_config(tmp_path, num_layers=99)  # valid YAML; the model has fewer layers
    result = tuner("train", "--detach", str(config))
    assert result.returncode == 2
    assert "num_layers" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "runs" / ".launch").iterdir())  # its log does not linger


def test_a_resume_that_fails_while_starting_reports_its_own_error_and_keeps_the_earlier_log(tmp_path):
    from engine.launch.detach import start_detached

    earlier = tmp_path / "console.log"
    earlier.write_text("tuner: error: an old error from the first process\n")
    with pytest.raises(UserError) as caught:
        start_detached(["--resume", str(tmp_path / "nowhere")], tmp_path / "runs", earlier_log=earlier)
    assert "old error" not in str(caught.value) and "nowhere" in str(caught.value)
    assert earlier.read_text() == "tuner: error: an old error from the first process\n"


def test_following_a_detached_chain_sees_both_stages_then_ends(tmp_path):
    first = write_config(tmp_path, "a.yaml", iters=10, steps_per_eval=10)
    second = write_config(tmp_path, "b.yaml", iters=10, steps_per_eval=10)
    started = tuner("train", "--detach", str(first), str(second))
    assert started.returncode == 0, started.stderr
    run_dir = Path(started.stdout.split("): ", 1)[1].splitlines()[0])
    seen: list[ev.Event] = []
    assert follow_run(run_dir, seen.append, lambda: False, poll_seconds=0.1) == "finished"
    assert [e.stage for e in seen if isinstance(e, ev.RunStarted)] == [1, 2]
    assert [e.status for e in seen if isinstance(e, ev.RunFinished)] == ["completed", "completed"]


def test_following_a_chain_that_already_finished_replays_every_stage(tmp_path):
    from engine.config import load_stages
    from engine.training.chain import run_chain

    stages = load_stages([write_config(tmp_path, "a.yaml", iters=5), write_config(tmp_path, "b.yaml", iters=5)])
    first, _ = run_chain(stages, lambda e: None)
    seen: list[ev.Event] = []
    assert follow_run(first.run_dir, seen.append, lambda: False, poll_seconds=0.01) == "finished"
    assert [e.stage for e in seen if isinstance(e, ev.RunStarted)] == [1, 2]


def test_following_a_killed_run_ends_even_when_its_pid_was_reused(tmp_path):
    """A trainer killed without finishing leaves its process record; if another process now has
    its pid (here: this test's own), the follower must still see the run as over."""
    from engine.config import load_stages
    from engine.runs.folder import PROCESS_FILE
    from engine.runs.metrics import METRICS_FILE
    from engine.training.chain import run_chain

    [stage] = load_stages([write_config(tmp_path, iters=5)])
    result, = run_chain([stage], lambda e: None)
    metrics = result.run_dir / METRICS_FILE
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(line for line in lines if '"run_finished"' not in line))
    record = {"pid": os.getpid(), "host": socket.gethostname(), "created": 0.0, "argv": []}
    (result.run_dir / PROCESS_FILE).write_text(json.dumps(record))
    deadline = time.monotonic() + 30
    assert follow_run(result.run_dir, lambda e: None, lambda: time.monotonic() > deadline, poll_seconds=0.05) == "process ended"


def test_detached_resume_continues_where_the_run_stopped(tmp_path):
    from engine.config import load_stages
    from engine.training.chain import run_chain

    config = write_config(tmp_path, iters=30, steps_per_eval=100, save_every=10, steps_per_report=1)
    control = Control()

    def stop_at_10(event):
        if isinstance(event, ev.TrainReport) and event.step == 10:
            control.stop()

    [stopped] = run_chain(load_stages([config]), stop_at_10, control)
    assert stopped.status == "stopped" and stopped.step == 10
    run_dir = stopped.run_dir
    (run_dir / "console.log").write_text("step 10 of the first process, cut off mid-li")  # as a kill leaves it
    resumed = tuner("train", "--detach", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert follow_run(run_dir, lambda e: None, lambda: False, poll_seconds=0.1) == "finished"
    finished = events_of(run_dir, ev.RunFinished)
    assert [f.step for f in finished] == [10, 30]
    assert [e.resumed_from for e in events_of(run_dir, ev.RunStarted)] == [0, 10]
    # the earlier output stays at the top of the log the resume writes
    log = wait_for_text(run_dir / "console.log", "completed at step 30")
    assert log.startswith("step 10 of the first process, cut off mid-li\n--- resumed ")


def wait_for_text(path, text: str, seconds: float = 30) -> str:
    """The file's text once it holds ``text`` (the process may still be flushing its last lines)."""
    deadline = time.monotonic() + seconds
    while text not in (content := path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return content


# ---------------------------------------------------------------------- the app, attached


def test_the_app_starts_a_detached_run_steers_it_and_quitting_leaves_it_training(tmp_path, monkeypatch):
    import asyncio

    from tui.app import TunerApp

    from .conftest import wait_until

    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.chdir(REPO)  # the child runs `python -m engine.cli` from here
    config = write_config(tmp_path, iters=100000, steps_per_eval=100000, save_every=100000, steps_per_report=5)
    shown: dict = {}

    async def scenario():
        app = TunerApp(config, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3", "d")
            assert await wait_until(pilot, lambda: app.attached is not None, 120)
            run_dir = shown["run_dir"] = app.attached
            screen = app.train_screen
            assert await wait_until(pilot, lambda: any(isinstance(e, ev.TrainReport) for e in app.history), 60)
            assert app.attached_pid == live_pid(run_dir) and app.attached_pid != os.getpid()
            assert any(isinstance(e, ev.RunStarted) and e.run_dir == str(run_dir) for e in app.history)
            assert screen.query_one("#train-progress").progress > 0
            await pilot.press("p")
            assert await wait_until(pilot, lambda: app.run_state == "paused", 30)
            await pilot.press("s")
            assert await wait_until(pilot, lambda: any(
                isinstance(e, ev.CheckpointSaved) and e.reason == "requested" for e in app.history), 30)
            await pilot.press("p")
            assert await wait_until(pilot, lambda: app.run_state == "running", 30)
            await pilot.press("ctrl+q")  # no question: the run is not this app's to stop
        shown["pid_after_quit"] = live_pid(run_dir)

    try:
        asyncio.run(scenario())
    finally:  # never leave a trainer behind, whatever failed
        for record in (tmp_path / "runs").glob(f"*/{PROCESS_FILE}"):
            if (pid := live_pid(record.parent)) is not None and "pid_after_quit" not in shown:
                os.kill(pid, signal.SIGKILL)
    run_dir = shown["run_dir"]
    assert shown["pid_after_quit"] is not None  # still training after the app has gone
    assert tuner("control", str(run_dir), "stop", "--wait").returncode == 0
    assert [e.status for e in events_of(run_dir, ev.RunFinished)] == ["stopped"]


def test_requests_to_a_chain_reach_the_stage_training_now(tmp_path):
    """Ctrl-C through --hosts, tuner control and an attached app all hold the first stage's
    folder; once the chain has moved on, its requests belong in the later stage's inbox."""
    from engine.runs.folder import current_stage_dir, link_next_stage

    first, second = tmp_path / "stage-1", tmp_path / "stage-2"
    first.mkdir()
    second.mkdir()
    assert current_stage_dir(first) == first
    link_next_stage(first, second)
    assert current_stage_dir(first) == second.resolve()
    control = Control()
    control.watch(second)
    send_request(first, "stop")
    control.poll()
    assert control.stopping
    assert not (first / "control").exists()
