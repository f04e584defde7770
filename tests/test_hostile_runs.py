"""Hostile run folders: two processes on one run, debris of killed saves, damaged checkpoints,
broken chain links and process records, and control requests nobody reads.

Each case does what a person would (``tuner train --resume``, ``tuner control``, a resume from
the public functions) and expects one line and exit code 2, or a resume that falls back to the
last whole checkpoint and says so.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine import events as ev
from engine.cli import main
from engine.config import load_stages
from engine.errors import UserError
from engine.runs.checkpoints import Checkpoints
from engine.runs.control import Control, steer
from engine.runs.folder import PROCESS_FILE, clear_process_record, live_pid, write_process_record
from engine.runs.lock import LOCK_FILE, RunBusy, RunLock, owner_pid
from engine.training.chain import resume_run, run_chain

from .conftest import REPO, write_config

KEYS = dict(iters=6, steps_per_report=1, steps_per_eval=1000, val_batches=1, save_every=2,
            grad_accumulation_steps=2, batch_size=4)


def tuner(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit 2 and exactly one stderr line, ``tuner: error: ...``, holding every fragment (after
    the progress line a detached start prints first)."""
    assert code == 2, err
    err = err.removeprefix("starting a detached run (loading the model and data) ...\n")
    assert err.count("\n") == 1 and err.startswith("tuner: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def snapshot(run_dir: Path) -> dict:
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    """A pid no process has now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A run of 6 steps stopped at step 3: checkpoints at step 2 (periodic, right after an update)
    and step 3 (half an accumulation: with pending gradients)."""
    folder = tmp_path_factory.mktemp("stopped")
    control = Control()

    def stop_at_3(event):
        if isinstance(event, ev.TrainReport) and event.step == 3:
            control.stop()

    [result] = run_chain(load_stages([write_config(folder, **KEYS)]), stop_at_3, control)
    assert result.status == "stopped" and result.step == 3
    assert [c.step for c in Checkpoints(result.run_dir).all()] == [2, 3]
    assert (result.run_dir / "checkpoints" / "step-0000003" / "pending_grad.safetensors").exists()
    return result.run_dir


@pytest.fixture
def run(stopped_run, tmp_path) -> Path:
    """A fresh copy of the stopped run, to damage."""
    return Path(shutil.copytree(stopped_run, tmp_path / stopped_run.name))


def resume_cli(run_dir: Path, capsys) -> tuple[int, str, str]:
    code = main(["train", "--resume", str(run_dir), "--quiet"])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------- 1. one owner per run folder


def test_resume_and_more_while_the_run_trains_elsewhere_are_refused_naming_its_process(tmp_path):
    config = write_config(tmp_path, iters=100000, steps_per_eval=100000, save_every=100000, steps_per_report=5)
    trainer = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", str(config)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(tmp_path.glob("runs/*/metrics.jsonl")):
            time.sleep(0.1)
        [run_dir] = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
        assert owner_pid(run_dir) == trainer.pid and live_pid(run_dir) == trainer.pid
        before = (run_dir / PROCESS_FILE).read_bytes()
        for argv in (["--resume", str(run_dir)], ["--resume", str(run_dir), "--more", "5"],
                     ["--resume", str(run_dir), "--detach"]):
            done = tuner("train", *argv)
            one_line_error(done.returncode, done.stderr, str(run_dir), f"still training in process {trainer.pid}")
        assert (run_dir / PROCESS_FILE).read_bytes() == before  # the owner's record is untouched
        # the lock, not the record, decides: without process.json the folder is still owned
        (run_dir / PROCESS_FILE).unlink()
        with pytest.raises(RunBusy, match="still training in"):
            RunLock.take(run_dir)
        done = tuner("train", "--resume", str(run_dir))
        one_line_error(done.returncode, done.stderr, str(run_dir), "still training in")
    finally:
        trainer.kill()
        trainer.wait()
    assert owner_pid(run_dir) is None  # a killed owner's lock is gone with it


def test_two_resumes_racing_past_the_early_check_meet_the_lock(run):
    """The early check runs before the model loads; the trainer takes the lock when it opens the
    folder, so the second of two resumes started together is refused and changes nothing."""
    from engine.training.trainer import Trainer

    checkpoint = Checkpoints(run).resumable()  # both passed the early check
    owner = RunLock.take(run)  # the first resume owns the folder now
    try:
        before = snapshot(run)
        stage = load_stages([run / "config.yaml"])[0]
        with pytest.raises(RunBusy, match=f"still training in process {os.getpid()}"):
            Trainer(stage, lambda e: None, resume=checkpoint).run()
        assert snapshot(run) == before
    finally:
        owner.release()
    assert not (run / PROCESS_FILE).exists() and owner_pid(run) is None


def test_a_lock_and_record_left_by_a_dead_process_are_taken_over(run, capsys):
    gone = dead_pid()
    (run / LOCK_FILE).write_text(json.dumps({"pid": gone, "created": time.time()}))
    (run / PROCESS_FILE).write_text(json.dumps({"pid": gone, "host": socket.gethostname(), "created": 1.0}))
    code, out, err = resume_cli(run, capsys)
    assert code == 0, err
    assert not (run / PROCESS_FILE).exists() and owner_pid(run) is None


def test_the_app_resuming_a_run_it_trains_itself_is_refused(run):
    """Two opens of the lock in one process conflict too: the app cannot resume a run it trains."""
    owner = RunLock.take(run)
    try:
        with pytest.raises(RunBusy, match=f"{run}: still training in process {os.getpid()}"):
            resume_run(run, lambda e: None)
        with pytest.raises(RunBusy):
            RunLock.take(run)
    finally:
        owner.release()
    again = RunLock.take(run)  # released: free for the next owner
    again.release()


# ---------------------------------------------------------------------- 3. debris of killed saves


def test_temporary_files_of_a_killed_save_are_removed_when_the_run_is_resumed(run, capsys):
    gone, ckpt = dead_pid(), run / "checkpoints" / "step-0000003"
    debris = [ckpt / f".optimizer.{gone}.tmp.safetensors", run / "adapters" / f".adapters.{gone}.tmp.safetensors",
              run / "checkpoints" / f".latest.{gone}.tmp", run / f".config.{gone}.tmp.yaml"]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        kept = [run / "notes.1955.tmp.txt", run / ".notes.tmp", ckpt / f".optimizer.{sleeper.pid}.tmp.safetensors"]
        for path in debris + kept:
            path.write_bytes(b"half a save")
        code, out, err = resume_cli(run, capsys)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 0, err
    assert not any(p.exists() for p in debris)
    assert all(p.exists() for p in kept)  # not our pattern, or a writer still alive
    assert "removed 4 temporary file(s) an interrupted save left" in out


def test_temporary_files_stay_when_another_process_owns_the_run(run):
    debris = run / "checkpoints" / f".optimizer.{dead_pid()}.tmp.safetensors"
    debris.write_bytes(b"x")
    owner = RunLock.take(run)
    try:
        with pytest.raises(RunBusy):
            RunLock.take(run)
        assert not debris.exists()  # the owner cleared it when it took the folder
        debris.write_bytes(b"x")
        with pytest.raises(RunBusy):
            RunLock.take(run)
        assert debris.exists()  # a refused process touches nothing
    finally:
        owner.release()


# ---------------------------------------------------------------------- 14. resume on a damaged run


def cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01garbage" * 3)


def state_without(key: str):
    def damage(path: Path) -> None:
        data = json.loads(path.read_text())
        del data[key]
        path.write_text(json.dumps(data))
    return damage


DAMAGED_LATEST = [
    pytest.param("adapters.safetensors", cut, "cut off", id="adapters-truncated"),
    pytest.param("adapters.safetensors", empty, "empty", id="adapters-empty"),
    pytest.param("optimizer.safetensors", cut, "cut off", id="optimizer-truncated"),
    pytest.param("optimizer.safetensors", empty, "empty", id="optimizer-empty"),
    pytest.param("optimizer.safetensors", garbage, "not a safetensors file", id="optimizer-garbage"),
    pytest.param("pending_grad.safetensors", cut, "cut off", id="pending-truncated"),
    pytest.param("pending_grad.safetensors", empty, "empty", id="pending-empty"),
    pytest.param("state.json", cut, "cut off or not JSON", id="state-truncated"),
    pytest.param("state.json", empty, "cut off or not JSON", id="state-empty"),
    pytest.param("state.json", state_without("batch_index"), "lacks the key 'batch_index'", id="state-missing-key"),
    pytest.param("state.json", lambda p: p.write_text("[1, 2]"), "damaged", id="state-not-an-object"),
    pytest.param("state.json", lambda p: p.write_text(p.read_text().replace('"step": 3', '"step": "three"')),
                 "not whole numbers", id="state-step-not-a-number"),
    pytest.param("optimizer.safetensors", lambda p: (p.unlink(), p.mkdir()), "a folder", id="optimizer-a-folder"),
    pytest.param("adapters.safetensors", lambda p: p.unlink(), "missing", id="adapters-missing"),
]


@pytest.mark.parametrize("name, damage, why", DAMAGED_LATEST)
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before_and_says_so(run, capsys, name, damage, why):
    damaged = run / "checkpoints" / "step-0000003" / name
    damage(damaged)
    code, out, err = resume_cli(run, capsys)
    assert code == 0, err
    notice = next(line for line in out.splitlines() if str(damaged) in line)
    assert why in notice and "resuming from the last whole checkpoint, checkpoints/step-0000002, instead" in notice
    started = [e for e in _events(run) if isinstance(e, ev.RunStarted)]
    assert started[-1].resumed_from == 2
    assert [e for e in _events(run) if isinstance(e, ev.RunFinished)][-1].status == "completed"


@pytest.mark.parametrize("name, damage, why", DAMAGED_LATEST[:3] + DAMAGED_LATEST[7:10])
def test_a_damaged_only_checkpoint_is_one_line_and_exit_2(run, capsys, name, damage, why):
    shutil.rmtree(run / "checkpoints" / "step-0000002")
    damaged = run / "checkpoints" / "step-0000003" / name
    damage(damaged)
    before = snapshot(run)
    code, out, err = resume_cli(run, capsys)
    one_line_error(code, err, str(damaged), why, "cannot be resumed")
    assert snapshot(run) == before


@pytest.mark.parametrize("content, why", [
    pytest.param("", "empty", id="empty"),
    pytest.param("step-0000009\n", "'step-0000009', which is no checkpoint here", id="missing-checkpoint"),
    pytest.param("../../etc\n", "which is no checkpoint here", id="outside"),
    pytest.param(b"\xff\xfe\n", "damaged", id="not-utf8"),
])
def test_a_broken_latest_pointer_resumes_from_the_newest_whole_checkpoint(run, capsys, content, why):
    pointer = run / "checkpoints" / "latest"
    pointer.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, out, err = resume_cli(run, capsys)
    assert code == 0, err
    notice = next(line for line in out.splitlines() if str(pointer) in line)
    assert why in notice and "resuming from the last whole checkpoint, checkpoints/step-0000003, instead" in notice
    assert [e for e in _events(run) if isinstance(e, ev.RunStarted)][-1].resumed_from == 3


def test_a_broken_latest_pointer_and_no_checkpoint_left_is_one_line(run, capsys):
    for step in (2, 3):
        shutil.rmtree(run / "checkpoints" / f"step-000000{step}")
    code, out, err = resume_cli(run, capsys)
    one_line_error(code, err, str(run / "checkpoints" / "latest"), "no checkpoint here", "cannot be resumed")


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: p.mkdir(), id="a-folder"),
    pytest.param(lambda p: os.mkfifo(p), id="a-fifo"),
])
def test_metrics_that_is_not_a_file_is_one_line_and_exit_2(run, capsys, make):
    metrics = run / "metrics.jsonl"
    metrics.unlink()
    make(metrics)
    code, out, err = resume_cli(run, capsys)
    one_line_error(code, err, str(metrics), "not a file")
    done = tuner("train", "--resume", str(run), "--detach", timeout=60)  # the detached parent checks first
    one_line_error(done.returncode, done.stderr, str(metrics), "not a file")


def _events(run_dir: Path) -> list:
    from engine.runs.metrics import read_events

    return list(read_events(run_dir))


# ---------------------------------------------------------------------- 15. resume_adapter_file


@pytest.mark.parametrize("make, why", [
    pytest.param(lambda p: p.write_bytes(b"this is not an adapter\n" * 10), "not a safetensors file", id="garbage"),
    pytest.param(lambda p: p.mkdir(), "a folder, not a file", id="a-folder"),
    pytest.param(lambda p: p.write_bytes(b""), "empty", id="empty"),
    pytest.param(lambda p: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}"), "cut off", id="truncated-header"),
    pytest.param(lambda p: os.mkfifo(p), "not a regular file", id="a-fifo"),
])
def test_a_resume_adapter_file_that_holds_no_weights_is_one_line(tmp_path, make, why):
    adapter = tmp_path / "old.safetensors"
    make(adapter)
    config = write_config(tmp_path, iters=2, resume_adapter_file=str(adapter))
    done = tuner("train", str(config), timeout=120)
    one_line_error(done.returncode, done.stderr, "run.yaml:", "resume_adapter_file", str(adapter), why)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_truncated_checkpoint_copy_as_resume_adapter_file_is_one_line(tmp_path, stopped_run, capsys):
    adapter = tmp_path / "copy.safetensors"
    adapter.write_bytes((stopped_run / "adapters" / "adapters.safetensors").read_bytes()[:-100])
    config = write_config(tmp_path, iters=2, resume_adapter_file=str(adapter))
    code = main(["train", str(config), "--quiet"])
    one_line_error(code, capsys.readouterr().err, "resume_adapter_file", str(adapter), "cut off")


# ---------------------------------------------------------------------- 17. chain links, records, inbox


@pytest.fixture
def live(run):
    """``run`` with this process recorded as training it, as a detached trainer would be."""
    write_process_record(run)
    yield run
    clear_process_record(run)


def control(capsys, *argv) -> tuple[int, str, str]:
    code = main(["control", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("content, why", [
    pytest.param(b"\xff\xfe/tmp\n", "not UTF-8 text", id="not-utf8"),
    pytest.param(b"\n", "empty", id="empty"),
    pytest.param(b"/tmp/a\x00b\n", "not one folder name", id="nul-byte"),
])
def test_an_unreadable_next_stage_link_is_one_line(live, capsys, content, why):
    (live / "next_stage").write_bytes(content)
    code, out, err = control(capsys, live, "pause")
    one_line_error(code, err, str(live / "next_stage"), why)


def test_a_next_stage_link_to_itself_or_round_a_loop_ends_with_one_line(live, tmp_path):
    (live / "next_stage").write_text(f"{live}\n")
    done = tuner("control", str(live), "pause", timeout=60)  # loops forever without cycle detection
    one_line_error(done.returncode, done.stderr, str(live / "next_stage"), "links back")
    other = tmp_path / "other"
    other.mkdir()
    (live / "next_stage").write_text(f"{other}\n")
    (other / "next_stage").write_text(f"{live}\n")
    done = tuner("control", str(live), "pause", timeout=60)
    one_line_error(done.returncode, done.stderr, str(other / "next_stage"), "links back")


def test_following_a_chain_whose_link_loops_back_ends(tmp_path):
    """The app follows a finished stage into the next one's folder; a link back would replay the
    same stages forever."""
    from engine.runs.listing import follow_run
    from engine.runs.metrics import MetricsWriter

    first, second = tmp_path / "first", tmp_path / "second"
    for folder, stage in ((first, 1), (second, 2)):
        folder.mkdir()
        writer = MetricsWriter(folder)
        writer(_stage_started(folder, stage, stages=3))  # both claim another stage follows
        writer(ev.RunFinished(step=2, status="completed", adapter_dir="", elapsed=1.0))
        writer.close()
    (first / "next_stage").write_text(f"{second}\n")
    (second / "next_stage").write_text(f"{first}\n")
    seen = []
    assert follow_run(first, seen.append, lambda: False, poll_seconds=0.01) == "process ended"
    assert [e.run_dir for e in seen if isinstance(e, ev.RunStarted)] == [str(first), str(second)]


def _stage_started(folder: Path, stage: int, stages: int) -> ev.RunStarted:
    return ev.RunStarted(
        run_dir=str(folder), adapter_dir="", stage=stage, stages=stages, config_file="a.yaml",
        model="builtin:tiny-llama", fine_tune_type="lora", prompt_loss_weight=0.1, total_steps=2,
        steps_per_epoch=2, train_examples=4, valid_examples=1, trainable_params=10, total_params=100,
        device="cpu", compute_dtype="float32", time=1_700_000_000.0,
    )


@pytest.mark.parametrize("pid", [-1, 0, "abc", 2**80, None, 1.5e30])
def test_a_process_record_with_an_impossible_pid_means_nothing_trains_there(run, capsys, pid):
    (run / PROCESS_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "created": 1.0}))
    code, out, err = control(capsys, run, "stop")
    one_line_error(code, err, str(run), "no run is training there now")
    from tui.launch import attach

    assert attach([str(run)], lambda *a, **k: 0) == 2
    assert "no run is training there now" in capsys.readouterr().err


def test_a_control_inbox_that_is_a_file_is_one_line(live, capsys):
    shutil.rmtree(live / "control")
    (live / "control").write_text("not a folder")
    code, out, err = control(capsys, live, "save")
    one_line_error(code, err, str(live / "control"), "not a folder")


def test_resuming_a_run_whose_control_inbox_is_a_file_is_one_line(run, capsys):
    shutil.rmtree(run / "control")
    (run / "control").write_text("not a folder")
    code, out, err = resume_cli(run, capsys)
    one_line_error(code, err, str(run / "control"), "not a folder")
    assert owner_pid(run) is None and not (run / PROCESS_FILE).exists()  # the lock was let go


@pytest.mark.parametrize("make, why", [
    pytest.param(lambda p: None, "no such run folder", id="missing"),
    pytest.param(lambda p: p.write_text("x"), "not a run folder (it is a file)", id="a-file"),
])
def test_control_on_a_missing_folder_or_a_file_says_so(tmp_path, capsys, make, why):
    target = tmp_path / "nope"
    make(target)
    code, out, err = control(capsys, target, "pause")
    one_line_error(code, err, str(target), why)
    assert not (tmp_path / "nope" / "control").exists()


@pytest.mark.parametrize("make, why", [
    pytest.param(lambda p: None, "no such run folder", id="missing"),
    pytest.param(lambda p: p.write_text("x"), "not a run folder", id="a-file"),
])
def test_resume_of_a_missing_folder_or_a_file_says_so(tmp_path, capsys, make, why):
    target = tmp_path / "nope"
    make(target)
    code, out, err = resume_cli(target, capsys)
    one_line_error(code, err, str(target), why)


# ---------------------------------------------------------------------- 18. requests nobody takes


def _record_for(run_dir: Path, pid: int) -> None:
    import psutil

    (run_dir / PROCESS_FILE).write_text(json.dumps(
        {"pid": pid, "host": socket.gethostname(), "created": psutil.Process(pid).create_time()}))


def test_waiting_on_a_request_the_process_ended_without_reading_is_an_error(run):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    try:
        _record_for(run, sleeper.pid)
        with pytest.raises(UserError, match=f"process {sleeper.pid} ended without taking the save request"):
            steer(run, "save", wait=True, poll_seconds=0.05)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not list((run / "control").glob("*.request"))  # nobody would ever read it


def test_waiting_on_a_request_the_run_takes_says_so(live):
    control = Control()
    control.watch(live)

    def loop():
        while not control.take_save():
            control.poll()
            time.sleep(0.02)

    taker = threading.Thread(target=loop)
    taker.start()
    line = steer(live, "save", wait=True, poll_seconds=0.02)
    taker.join(10)
    assert line == f"save: sent to process {os.getpid()} training {live}; the run has taken it"


# ---------------------------------------------------------------------- the app's resume


def test_the_app_resuming_a_run_another_process_trains_shows_one_line_and_changes_nothing(run, tmp_path, monkeypatch):
    import asyncio

    from tui.app import TunerApp

    from .conftest import wait_until

    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom engine.runs.lock import RunLock\n"
                               f"RunLock.take({str(run)!r}); print('held', flush=True); time.sleep(60)"],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)

        async def scenario():
            app = TunerApp(run / "config.yaml", runs_dir=run.parent)
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause(0.3)
                app.resume_run(run)
                failed = lambda: [e for e in app.history if isinstance(e, ev.RunFailed)]  # noqa: E731
                assert await wait_until(pilot, failed, 60)
                assert failed()[-1].error == f"{run}: still training in process {holder.pid}"
                assert await wait_until(pilot, lambda: app.control is None, 10)

        asyncio.run(scenario())
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("make, why", [
    pytest.param(lambda p: None, "no such run folder", id="missing"),
    pytest.param(lambda p: p.write_text("x"), "not a run folder", id="a-file"),
])
def test_attach_to_a_missing_folder_or_a_file_says_so(tmp_path, capsys, make, why):
    from tui.launch import attach

    target = tmp_path / "nope"
    make(target)
    opened = []
    assert attach([str(target)], lambda *args, **kwargs: opened.append(args)) == 2
    one_line_error(2, capsys.readouterr().err, str(target), why)
    assert not opened
