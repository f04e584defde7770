"""Data-parallel training: two ranks under ``mlx.launch --backend ring`` on this machine must train
what one process trains on the same global batches, to floating-point noise."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine import events as ev
from engine.config import load_stages
from engine.training.distributed import World
from engine.launch.hosts import read_hostfile
from engine.runs.metrics import read_events
from engine.training.chain import run_chain

from .conftest import DEMO_DATA, write_config

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = str(Path(sys.executable).parent / "mlx.launch")


def small_data(folder: Path) -> Path:
    """17 training examples (batches of 8, 8 and 1: one rank's share of the last is empty) and 5
    validation examples (shares of 3 and 2)."""
    data = folder / "data"
    data.mkdir()
    for split, n in (("train", 17), ("valid", 5)):
        lines = (DEMO_DATA / f"{split}.jsonl").read_text().splitlines()[:n]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return data


def config(folder: Path, **keys) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = dict(data=str(small_data(folder)), batch_size=8, iters=6, grad_accumulation_steps=2, optimizer="sgd",
                learning_rate=0.5, prompt_loss_weight=0.1, steps_per_report=1, steps_per_eval=3, val_batches=-1,
                save_every=3)
    base.update(keys)
    return write_config(folder, **base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), out.get("PYTHONPATH", "")) if p)
    return out


def two_ranks(*train_args, cwd: Path) -> subprocess.CompletedProcess:
    command = [LAUNCH, "-n", "2", "--backend", "ring", "-p", str(free_port()), "--",
               sys.executable, "-m", "engine.cli", "train", *map(str, train_args)]
    launcher = subprocess.Popen(command, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        out, err = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # a hung collective: take the ranks down with the launcher
        os.killpg(launcher.pid, signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(command, launcher.returncode, out, err)


def only_run(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    return run


def events_of(run: Path, kind):
    return [e for e in read_events(run) if isinstance(e, kind)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same config trained by one process and by two ranks."""
    one = tmp_path_factory.mktemp("one-process")
    run_chain(load_stages([config(one)]), lambda e: None)
    two = tmp_path_factory.mktemp("two-ranks")
    done = two_ranks(config(two), cwd=two)
    assert done.returncode == 0, done.stderr
    return only_run(one / "runs"), only_run(two / "runs"), done


def test_two_ranks_train_what_one_process_trains(runs):
    one, two, _ = runs
    a, b = events_of(one, ev.TrainReport), events_of(two, ev.TrainReport)
    assert [r.step for r in a] == [r.step for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert y.loss == pytest.approx(x.loss, rel=1e-5)
        assert y.completion_loss == pytest.approx(x.completion_loss, rel=1e-5)
        assert y.prompt_loss == pytest.approx(x.prompt_loss, rel=1e-5)
        assert y.trained_tokens == x.trained_tokens
        if not np.isnan(x.grad_norm):
            assert y.grad_norm == pytest.approx(x.grad_norm, rel=1e-4)
    wa, wb = (mx.load(str(r / "adapters" / "adapters.safetensors")) for r in (one, two))
    assert wa.keys() == wb.keys()
    moved = max(mx.abs(wa[k]).max().item() for k in wa if "lora_b" in k)
    assert moved > 1e-3  # SGD moved the weights: the comparison below means something
    for k in wa:
        np.testing.assert_allclose(np.array(wb[k]), np.array(wa[k]), atol=1e-5, rtol=1e-4)


def test_two_ranks_evaluate_every_example_once(runs):
    one, two, _ = runs
    a, b = events_of(one, ev.EvalReport), events_of(two, ev.EvalReport)
    assert [e.step for e in a] == [e.step for e in b] == [0, 3, 6]
    for x, y in zip(a, b):
        assert (y.examples, y.prompt_tokens, y.completion_tokens) == (x.examples, x.prompt_tokens, x.completion_tokens) == (5, x.prompt_tokens, x.completion_tokens)
        assert y.completion_loss == pytest.approx(x.completion_loss, rel=1e-5)
        assert y.completion_accuracy == pytest.approx(x.completion_accuracy)
    rows_a = json.loads((one / "eval_examples.json").read_text())["examples"]
    rows_b = json.loads((two / "eval_examples.json").read_text())["examples"]
    assert [Path(r["origin"]).name for r in rows_a] == [Path(r["origin"]).name for r in rows_b]
    for x, y in zip(rows_a, rows_b):
        assert y["completion_loss"] == pytest.approx(x["completion_loss"], rel=1e-5)


def test_pending_gradients_in_a_checkpoint_are_the_whole_batch(runs):
    one, two, _ = runs
    # step 3 is the first step of an accumulation of 2: its gradients wait in the checkpoint
    pa, pb = (mx.load(str(r / "checkpoints" / "step-0000003" / "pending_grad.safetensors")) for r in (one, two))
    for k in pa:
        np.testing.assert_allclose(np.array(pb[k]), np.array(pa[k]), atol=1e-6, rtol=1e-4)


def test_rank_zero_alone_reports_and_says_how_many_ranks(runs):
    one, two, done = runs
    assert done.stdout.count("completed at step 6") == 1  # one printer, not one per rank
    assert events_of(one, ev.RunStarted)[0].world_size == 1
    assert events_of(two, ev.RunStarted)[0].world_size == 2
    report = events_of(two, ev.TrainReport)[-1]
    assert len(report.rank_tokens_per_second) == 2 and min(report.rank_tokens_per_second) > 0
    assert events_of(one, ev.TrainReport)[-1].rank_tokens_per_second == ()


def test_two_ranks_resume_where_they_stopped(runs, tmp_path):
    """Resuming on two ranks from the step-3 checkpoint (mid-accumulation) ends where the straight run did."""
    one, two, _ = runs
    copy = tmp_path / "runs" / two.name
    copy.parent.mkdir()
    subprocess.run(["cp", "-r", str(two), str(copy)], check=True)
    (copy / "checkpoints" / "latest").write_text("step-0000003\n")
    done = two_ranks("--resume", copy, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    straight = mx.load(str(one / "adapters" / "adapters.safetensors"))
    resumed = mx.load(str(copy / "adapters" / "adapters.safetensors"))
    for k in straight:
        np.testing.assert_allclose(np.array(resumed[k]), np.array(straight[k]), atol=1e-5, rtol=1e-4)


def test_every_rank_stops_on_the_same_diverged_step(tmp_path):
    """A learning rate that blows up: the ranks agree on the non-finite loss and all stop there."""
    done = two_ranks(config(tmp_path, learning_rate=1e30, iters=50, grad_accumulation_steps=1), cwd=tmp_path)
    assert "Traceback" not in done.stderr
    run = only_run(tmp_path / "runs")
    (finished,) = events_of(run, ev.RunFinished)
    assert finished.status == "diverged" and finished.step < 50
    assert "non-finite" in finished.message


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    done = two_ranks(config(tmp_path, batch_size=5), cwd=tmp_path)
    assert "batch_size: 5 does not split evenly over 2 ranks" in done.stderr
    assert "Traceback" not in done.stderr


def hostfile(folder: Path, ranks: int = 2) -> Path:
    path = folder / "hosts.json"
    path.write_text(json.dumps([{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}] * ranks))
    return path


def test_hosts_wrapper_stops_every_rank_on_ctrl_c(tmp_path):
    """tuner train --hosts: Ctrl-C asks the run to stop; every rank stops after the same step,
    rank 0 saves, and the exit status says the run was stopped."""
    cfg = config(tmp_path, iters=100000, steps_per_eval=100000, save_every=100000, grad_accumulation_steps=1)
    wrapper = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--hosts", str(hostfile(tmp_path)), str(cfg)],
                               cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    runs = tmp_path / "runs"
    while not _trained(runs):
        assert wrapper.poll() is None and time.time() < deadline, wrapper.communicate()
        time.sleep(0.2)
    wrapper.send_signal(signal.SIGINT)
    out, err = wrapper.communicate(timeout=120)
    assert wrapper.returncode == 130, err
    run = only_run(runs)
    finished = events_of(run, ev.RunFinished)
    assert finished and finished[-1].status == "stopped"
    saved = events_of(run, ev.CheckpointSaved)[-1]
    assert saved.reason == "stopped" and saved.step == finished[-1].step
    assert not (run / "process.json").exists()


def test_a_rank_that_dies_fails_the_run_on_every_rank(tmp_path):
    """Rank 1 killed mid-run: rank 0 records the failure (no traceback), and the wrapper exits 1."""
    import psutil

    cfg = config(tmp_path, iters=100000, steps_per_eval=100000, save_every=4, grad_accumulation_steps=1)
    wrapper = subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--hosts", str(hostfile(tmp_path)), str(cfg)],
                               cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs"
    deadline = time.time() + 120
    while not any(events_of(m.parent, ev.CheckpointSaved) for m in runs.glob("*/metrics.jsonl")):
        assert wrapper.poll() is None and time.time() < deadline, wrapper.communicate()
        time.sleep(0.2)
    ranks = [p for p in psutil.Process(wrapper.pid).children(recursive=True) if p.environ().get("MLX_RANK") == "1"]
    assert len(ranks) == 1
    ranks[0].kill()
    out, err = wrapper.communicate(timeout=120)
    assert wrapper.returncode == 1
    assert "Traceback" not in err and "tuner: error: rank 0 of 2:" in err
    run = only_run(runs)
    assert events_of(run, ev.RunFailed)
    assert (run / "checkpoints" / "latest").exists()  # what was saved stays
    assert not (run / "process.json").exists()


def test_a_sigterm_after_the_failure_does_not_turn_it_into_a_traceback(capsys):
    """The race behind the test above: mlx.launch sends SIGTERM to the surviving rank once a rank
    died, and it may land after the run has failed, while the failure is being reported. It is
    ignored then: the rank still exits 1 with its one line."""
    from types import SimpleNamespace

    from engine.launch.train_command import _train_here

    def start(emit, control):
        emit(ev.RunFailed(step=4, error="[ring] the peer closed the connection"))
        os.kill(os.getpid(), signal.SIGTERM)  # delivered before the next bytecode: inside the failure
        raise RuntimeError("[ring] the peer closed the connection")

    args = SimpleNamespace(quiet=True, announce=None, run_dir_seen=None)
    assert _train_here(args, World(rank=0, size=2), start, sweep=False) == 1
    err = capsys.readouterr().err
    assert "tuner: error: rank 0 of 2: [ring] the peer closed the connection" in err
    assert "interrupted" not in err


# ---------------------------------------------------------------------- a sweep over the hosts


def sweep_over_hosts(tmp_path, *extra, **keys) -> subprocess.Popen:
    cfg = config(tmp_path, prompt_loss_weight=[0, 1], **keys)
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "train", "--hosts", str(hostfile(tmp_path)),
                             *extra, str(cfg)], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_sweep_over_hosts_trains_each_point_on_every_rank(tmp_path):
    """tuner train --hosts SWEEP: one sweep folder, each point's run trained by both ranks, the
    manifest and each run's sweep_point.json as a sweep trained here writes them."""
    from engine.runs.sweeps import read_manifest

    wrapper = sweep_over_hosts(tmp_path)
    out, err = wrapper.communicate(timeout=600)
    assert wrapper.returncode == 0, err
    [sweep_dir] = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    manifest = read_manifest(sweep_dir)
    assert [(e["name"], e["run_dir"], e["status"]) for e in manifest["points"]] == [
        ("plw0", "plw0", "completed"), ("plw1", "plw1", "completed")]
    for name, plw in (("plw0", 0), ("plw1", 1)):
        [started] = events_of(sweep_dir / name, ev.RunStarted)
        assert started.world_size == 2 and started.config["prompt_loss_weight"] == plw
        point = json.loads((sweep_dir / name / "sweep_point.json").read_text())
        assert point == {"sweep": str(sweep_dir), "point": name, "values": {"prompt_loss_weight": plw}}
    assert "run 1 of 2: plw0" in err and "run 2 of 2: plw1" in err


def test_a_sweep_over_hosts_stopped_by_tuner_control_resumes_over_hosts(tmp_path):
    """A stop through the sweep folder reaches the ranks of the run training now and ends the sweep
    (exit 130); --resume SWEEP_DIR over the hosts resumes that run from its checkpoint, then trains the rest."""
    from engine.runs.sweeps import read_manifest

    wrapper = sweep_over_hosts(tmp_path, iters=12, steps_per_eval=100, save_every=3, grad_accumulation_steps=1)
    runs = tmp_path / "runs"
    deadline = time.time() + 180
    while not any(events_of(m.parent, ev.CheckpointSaved) for m in runs.glob("*/*/metrics.jsonl")):
        assert wrapper.poll() is None and time.time() < deadline, wrapper.communicate()
        time.sleep(0.2)
    [sweep_dir] = [p for p in runs.iterdir() if not p.name.startswith(".")]
    stop = subprocess.run([sys.executable, "-m", "engine.cli", "control", str(sweep_dir), "stop"], cwd=tmp_path,
                          env=env(), capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    out, err = wrapper.communicate(timeout=180)
    assert wrapper.returncode == 130, err
    assert [e["status"] for e in read_manifest(sweep_dir)["points"]] == ["stopped", "pending"]
    stopped_at = events_of(sweep_dir / "plw0", ev.RunFinished)[-1].step

    again = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--hosts", str(hostfile(tmp_path)),
                            "--resume", str(sweep_dir)], cwd=tmp_path, env=env(), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    assert [e["status"] for e in read_manifest(sweep_dir)["points"]] == ["completed", "completed"]
    assert [e.resumed_from for e in events_of(sweep_dir / "plw0", ev.RunStarted)] == [0, stopped_at]
    assert all(e.world_size == 2 for e in events_of(sweep_dir / "plw1", ev.RunStarted))


def test_a_detached_sweep_over_hosts_announces_its_sweep_folder(tmp_path):
    from engine.runs.lock import owner_pid
    from engine.runs.sweeps import read_manifest

    cfg = config(tmp_path, prompt_loss_weight=[0, 1])
    started = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--detach", "--hosts",
                              str(hostfile(tmp_path)), str(cfg)], cwd=tmp_path, env=env(), capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    [sweep_dir] = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert "training a sweep in the background" in started.stdout and f"--hosts {tmp_path}" in started.stdout
    deadline = time.time() + 300
    while owner_pid(sweep_dir) is not None or not (sweep_dir / "plw1").exists():
        assert time.time() < deadline
        time.sleep(0.5)
    assert [e["status"] for e in read_manifest(sweep_dir)["points"]] == ["completed", "completed"]
    assert "run 2 of 2: plw1" in (sweep_dir / "console.log").read_text()


def _trained(runs: Path) -> bool:
    return any(events_of(metrics.parent, ev.TrainReport) for metrics in runs.glob("*/metrics.jsonl"))


@pytest.mark.parametrize("content, message", [
    (None, "no such hostfile"),
    ("[{\"ssh\": \"a\"},", "not valid JSON"),
    ("[]", "hosts: expected a non-empty list"),
    ("[{\"ips\": [\"10.0.0.1\"]}]", "hosts[0]: each host needs \"ssh\""),
])
def test_bad_hostfiles_get_one_line(tmp_path, content, message):
    path = tmp_path / "hosts.json"
    if content is not None:
        path.write_text(content)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--hosts", str(path), str(config(tmp_path))],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1 and str(path) in done.stderr


def test_a_hostfile_of_one_host_trains_as_one_process(tmp_path):
    """mlx.launch gives a single rank an empty ring hostfile; that is a world of one, not an error."""
    cfg = config(tmp_path, iters=2)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--hosts", str(hostfile(tmp_path, ranks=1)), str(cfg)],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert events_of(only_run(tmp_path / "runs"), ev.RunStarted)[0].world_size == 1


def test_hosts_wrapper_refuses_a_batch_that_does_not_split(tmp_path):
    cfg = config(tmp_path, batch_size=5)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "train", "--hosts", str(hostfile(tmp_path)), str(cfg)],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "batch_size: 5 does not split evenly over the 2 hosts" in done.stderr and "run.yaml" in done.stderr


def test_a_world_of_one_changes_nothing():
    world = World()
    tree = {"a": mx.arange(3)}
    assert world.share([1, 2, 3]) == [1, 2, 3]
    assert world.sum_tree(tree) is tree and world.from_main(tree) is tree
    assert world.agree(True, False, True, False) == (True, False, True, False)
    assert World(rank=1, size=3).share(list(range(8))) == [1, 4, 7]


def test_read_hostfile_accepts_mlx_launch_formats(tmp_path):
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"backend": "ring", "hosts": [{"ssh": "m1", "ips": ["10.0.0.1"]}, {"ssh": "m2"}]}))
    assert [h["ssh"] for h in read_hostfile(path)] == ["m1", "m2"]


def test_the_app_attached_to_a_detached_two_rank_run_shows_the_ranks_and_steers_them(tmp_path, monkeypatch):
    """tuner train --detach --hosts, then the app attaches: it shows the world size and each
    rank's tokens/s, and pause, resume and stop reach every rank through rank 0's inbox."""
    import asyncio

    from engine.launch.detach import detach_chain
    from engine.runs.folder import live_pid
    from tui.app import TunerApp

    from .conftest import wait_until

    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    monkeypatch.chdir(ROOT)
    cfg = config(tmp_path, iters=100000, steps_per_eval=100000, save_every=100000, steps_per_report=2,
                 grad_accumulation_steps=1)
    run = detach_chain([cfg], hosts=hostfile(tmp_path))
    seen: dict = {}

    def text(widget) -> str:
        return str(widget.render())

    async def scenario():
        app = TunerApp(cfg, runs_dir=tmp_path / "runs", poll_memory=False)
        async with app.run_test(size=(120, 40)) as pilot:
            app.attach_run(run.run_dir)
            status = lambda: text(app.train_screen.query_one("#train-status"))  # noqa: E731
            assert await wait_until(pilot, lambda: app.screen is app.train_screen and "on 2 ranks" in status(), 120)
            seen["status"] = status()
            await pilot.press("p")
            assert await wait_until(pilot, lambda: app.run_state == "paused", 60)
            await pilot.press("p")
            assert await wait_until(pilot, lambda: app.run_state == "running", 60)
            await pilot.press("x")
            assert await wait_until(pilot, lambda: any(isinstance(e, ev.RunFinished) for e in app.history), 60)

    try:
        asyncio.run(scenario())
    finally:  # never leave ranks behind, whatever failed
        if live_pid(run.run_dir) is not None and "status" not in seen:
            os.killpg(run.pid, signal.SIGKILL)
    assert "tok/s on 2 ranks (" in seen["status"]
    assert [e.status for e in events_of(run.run_dir, ev.RunFinished)] == ["stopped"]
    assert events_of(run.run_dir, ev.RunStarted)[0].world_size == 2
    deadline = time.time() + 60
    while time.time() < deadline and _alive(run.pid):
        time.sleep(0.2)
    assert not _alive(run.pid)  # mlx.launch and both ranks are gone


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it if it has ended
        return waited == 0
    except ChildProcessError:
        return False
