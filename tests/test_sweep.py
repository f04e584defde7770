"""Sweeps: lists of values expand into a grid of validated configs, trained one after another in
one sweep folder, resumable after a stop; and runs trained again with a value changed, linked."""

import json
import shutil
import subprocess
import sys

import pytest

from engine import events as ev
from engine.cli import main
from engine.config import ConfigError, load_stages
from engine.config.load import load_sweep
from engine.errors import UserError
from engine.runs.control import Control
from engine.runs.lock import owner_pid
from engine.runs.metrics import read_events
from engine.runs.sweeps import read_manifest
from engine.training.chain import run_chain
from engine.training.sweep import resume_sweep, rerun, run_sweep

from .conftest import REPO, write_config
from .test_detach import wait_for

TINY = dict(iters=4, steps_per_report=1, steps_per_eval=1000, val_batches=0, save_every=1000, batch_size=4,
            max_seq_length=128)


def sweep_file(folder, lists: str, **keys):
    """A tiny demo config with the sweep's lists written as YAML at its end (so their lines are known)."""
    path = write_config(folder, "sweep.yaml", **{**TINY, **keys})
    path.write_text(path.read_text() + lists)
    return path


def line_of(path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def losses(events):
    return {e.step: e.loss for e in events if isinstance(e, ev.TrainReport)}


# ---------------------------------------------------------------------- expansion and validation


def test_lists_expand_into_the_grid_each_point_an_ordinary_config(tmp_path):
    path = sweep_file(tmp_path, "prompt_loss_weight: [0, 0.01, 0.1, 1]\nseed: [1, 2]\n")
    sweep = load_sweep([path])
    # the seed varies slowest: every PLW once before any repeats, so a sweep cut short compares them all
    assert [p.name for p in sweep.points] == [
        "plw0-seed1", "plw0.01-seed1", "plw0.1-seed1", "plw1-seed1",
        "plw0-seed2", "plw0.01-seed2", "plw0.1-seed2", "plw1-seed2"]
    point = sweep.points[5]
    assert point.stage.config.prompt_loss_weight == 0.01 and point.stage.config.seed == 2
    assert point.stage.config.batch_size == 4  # the rest as written
    assert point.point.as_dict() == {"prompt_loss_weight": 0.01, "seed": 2}
    assert load_sweep([write_config(tmp_path, "plain.yaml")]) is None  # no lists: no sweep


def test_the_learning_rate_and_the_lora_rank_sweep_too(tmp_path):
    path = sweep_file(tmp_path, "", learning_rate=[1e-3, 2e-4],
                      lora_parameters={"rank": [4, 8], "scale": 2.0, "dropout": 0.0})
    sweep = load_sweep([path])
    assert [p.name for p in sweep.points] == ["lr0.001-rank4", "lr0.001-rank8", "lr0.0002-rank4", "lr0.0002-rank8"]
    assert [p.stage.config.lora_parameters.rank for p in sweep.points] == [4, 8, 4, 8]


def test_a_bad_value_inside_a_list_names_its_own_line(tmp_path):
    path = sweep_file(tmp_path, "prompt_loss_weight:\n  - 0\n  - 0.1\n  - 1.5\n")
    with pytest.raises(ConfigError) as caught:
        load_sweep([path])
    assert str(caught.value) == f"{path}:{line_of(path, '1.5')}: prompt_loss_weight: expected a value <= 1, got 1.5"
    ranks = write_config(tmp_path, "ranks.yaml", **TINY)
    ranks.write_text(ranks.read_text().replace("rank: 8", "rank: [4,\n    0]"))
    with pytest.raises(ConfigError) as caught:
        load_sweep([ranks])
    assert str(caught.value) == f"{ranks}:{line_of(ranks, '    0]')}: lora_parameters.rank: expected a value >= 1, got 0"


def test_a_list_for_any_other_key_stays_the_ordinary_type_error(tmp_path):
    path = sweep_file(tmp_path, "", batch_size=[4, 8])
    assert load_sweep([path]) is None  # no sweep: loaded as the ordinary config it is not
    with pytest.raises(ConfigError) as caught:
        load_stages([path])
    assert str(caught.value).startswith(f"{path}:{line_of(path, 'batch_size')}: batch_size: ")
    assert str(caught.value).endswith("batch_size: expected an integer, got [4, 8]")
    assert main(["validate", str(path)]) == 2


def test_empty_lists_repeated_values_and_too_big_grids_are_refused_in_one_line(tmp_path):
    cases = {
        "seed: []\n": "seed: an empty list",
        "seed: [1, 2, 1]\n": "seed: 1 is listed twice in the sweep",
        "prompt_loss_weight: [1, 0.5, 1.0]\n": "prompt_loss_weight: 1.0 is listed twice in the sweep",
        f"prompt_loss_weight: {[i / 10 for i in range(8)]}\nseed: {list(range(9))}\n":
            "the sweep has 72 runs (8 prompt_loss_weight x 9 seed); at most 64 fit one sweep",
    }
    for lists, expected in cases.items():
        path = sweep_file(tmp_path, lists)
        with pytest.raises(ConfigError) as caught:
            load_sweep([path])
        assert expected in str(caught.value) and "\n" not in str(caught.value)
        assert str(caught.value).startswith(f"{path}:")


def test_a_chain_with_lists_and_a_plain_load_of_a_sweep_are_refused_in_one_line(tmp_path):
    first = write_config(tmp_path, "a.yaml", **TINY)
    second = tmp_path / "b.yaml"
    second.write_text("iters: 2\nprompt_loss_weight: [0, 1]\n")
    for load in (load_sweep, load_stages):
        with pytest.raises(ConfigError) as caught:
            load([first, second])
        assert str(caught.value).startswith(f"{second}:2: prompt_loss_weight: a list of values (a sweep) works "
                                            "in a single config file, not in a chain of 2")
    alone = sweep_file(tmp_path, "prompt_loss_weight: [0, 1]\n")
    with pytest.raises(ConfigError) as caught:
        load_stages([alone])
    assert str(caught.value) == (f"{alone}:{line_of(alone, '[0, 1]')}: prompt_loss_weight: a list of values makes "
                                 "a sweep of 2 runs, which tuner train and tuner validate run and list; "
                                 "here one value is expected")


def test_the_seed_varies_slowest_and_the_other_axes_last_fastest(tmp_path):
    path = sweep_file(tmp_path, "seed: [1, 2]\nprompt_loss_weight: [0, 1]\n")
    names = [p.name for p in load_sweep([path], ["learning_rate=[1.0e-3, 1.0e-4]"]).points]
    assert names[:4] == ["plw0-seed1-lr0.001", "plw0-seed1-lr0.0001", "plw1-seed1-lr0.001", "plw1-seed1-lr0.0001"]
    assert names[4:] == [name.replace("seed1", "seed2") for name in names[:4]]


def test_a_set_override_can_sweep_and_replace_a_list(tmp_path):
    path = sweep_file(tmp_path, "seed: [1, 2]\n")
    assert [p.name for p in load_sweep([path], ["prompt_loss_weight=[0, 1]"]).points] == [
        "plw0-seed1", "plw1-seed1", "plw0-seed2", "plw1-seed2"]
    assert load_sweep([path], ["seed=3"]) is None


# ---------------------------------------------------------------------- tuner validate


def test_validate_lists_the_points_then_the_first_resolved_config(tmp_path, capsys):
    path = sweep_file(tmp_path, "prompt_loss_weight: [0, 0.1]\nseed: [1, 2]\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# sweep of 4 runs (2 prompt_loss_weight x 2 seed), one after another:"
    assert out[1].split() == ["plw0-seed1", "prompt_loss_weight:", "0", "seed:", "1"]
    assert out[4].split() == ["plw0.1-seed2", "prompt_loss_weight:", "0.1", "seed:", "2"]
    assert any(line.startswith("batch_size") for line in out[5:])


def test_inspect_counts_a_sweeps_data_once(tmp_path, capsys):
    """The points differ in PLW, seed, learning rate or rank, never in data: inspect counts the first's."""
    path = sweep_file(tmp_path, "prompt_loss_weight: [0, 1]\nseed: [1, 2]\n")
    assert main(["inspect", str(path), "--json", "--no-cache"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["splits"]["train"]["count"] > 0 and data["prompt_loss_weight"] == 0
    assert data["guidance"].endswith("This sweep tries PLW 0 and 1.")  # not the first point's alone


def test_validate_reports_a_bad_point_in_one_line_and_exit_2(tmp_path, capsys):
    path = sweep_file(tmp_path, "prompt_loss_weight: [0, -1]\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"tuner: error: {path}:{line_of(path, '[0, -1]')}: prompt_loss_weight: expected a value >= 0, got -1\n"


# ---------------------------------------------------------------------- training a sweep


def test_tuner_train_runs_the_grid_in_one_sweep_folder(tmp_path, capsys):
    path = sweep_file(tmp_path, "prompt_loss_weight: [0, 1]\nseed: [1, 2]\n")
    assert main(["train", str(path), "--quiet"]) == 0
    [sweep_dir] = (tmp_path / "runs").iterdir()
    assert sweep_dir.name.startswith("sweep-2")
    manifest = read_manifest(sweep_dir)
    assert [(e["name"], e["run_dir"], e["status"]) for e in manifest["points"]] == [
        (name, name, "completed") for name in ("plw0-seed1", "plw1-seed1", "plw0-seed2", "plw1-seed2")]
    assert manifest["axes"] == {"prompt_loss_weight": [0, 1], "seed": [1, 2]}
    run = sweep_dir / "plw1-seed2"
    assert json.loads((run / "sweep_point.json").read_text()) == {
        "sweep": str(sweep_dir), "point": "plw1-seed2", "values": {"prompt_loss_weight": 1, "seed": 2}}
    config = (run / "config.yaml").read_text()
    assert "prompt_loss_weight: 1" in config and "seed: 2" in config
    assert (run / "adapters" / "adapters.safetensors").exists()
    out = capsys.readouterr().out
    assert out.count("completed at step 4") == 4 and "run 4 of 4: plw1-seed2" in out


def test_a_sweep_tokenises_its_data_once_and_each_run_trains_as_it_would_alone(tmp_path, monkeypatch):
    import engine.data.tokenize as tokenize

    encoded = []
    real = tokenize.encode_with_answers

    def counting(tokenizer, records):
        encoded.append(len(records))
        return real(tokenizer, records)

    monkeypatch.setattr(tokenize, "encode_with_answers", counting)
    events = []
    run_sweep(load_sweep([sweep_file(tmp_path, "seed: [1, 2, 3]\n", val_batches=2, steps_per_eval=2)]), events.append)
    assert len(encoded) == 2  # train and valid, for the first point only
    alone = []
    (tmp_path / "alone").mkdir()
    run_chain(load_stages([write_config(tmp_path / "alone", **{**TINY, "val_batches": 2, "steps_per_eval": 2, "seed": 3})]),
              alone.append)
    assert len(encoded) == 4  # outside a sweep, nothing is remembered
    third = events[max(i for i, e in enumerate(events) if isinstance(e, ev.RunStarted)):]
    assert losses(third) == losses(alone)
    valid = [(e.step, e.completion_loss) for e in third if isinstance(e, ev.EvalReport)]
    assert valid == [(e.step, e.completion_loss) for e in alone if isinstance(e, ev.EvalReport)]


def test_a_stopped_sweep_resumes_keeping_finished_runs_and_the_interrupted_one_exactly(tmp_path):
    lists = "seed: [1, 2, 3]\n"
    (tmp_path / "straight").mkdir()
    straight = []
    run_sweep(load_sweep([sweep_file(tmp_path / "straight", lists, iters=6)]), straight.append)

    control, first = Control(), []

    def stop_in_the_second_run(event):
        first.append(event)
        runs = sum(isinstance(e, ev.RunStarted) for e in first)
        if runs == 2 and isinstance(event, ev.TrainReport) and event.step == 3:
            control.stop()

    results = run_sweep(load_sweep([sweep_file(tmp_path, lists, iters=6)]), stop_in_the_second_run, control)
    assert [r.status for r in results] == ["completed", "stopped"]
    sweep_dir = results[0].run_dir.parent
    assert [e["status"] for e in read_manifest(sweep_dir)["points"]] == ["completed", "stopped", "pending"]
    kept = (sweep_dir / "seed1" / "metrics.jsonl").read_bytes()

    second = []
    resumed = resume_sweep(sweep_dir, second.append)
    assert [(r.run_dir.name, r.status) for r in resumed] == [("seed2", "completed"), ("seed3", "completed")]
    assert [e.resumed_from for e in second if isinstance(e, ev.RunStarted)] == [3, 0]
    assert (sweep_dir / "seed1" / "metrics.jsonl").read_bytes() == kept
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["seed1", "seed2", "seed3"]
    assert [e["status"] for e in read_manifest(sweep_dir)["points"]] == ["completed"] * 3
    # the interrupted run's trajectory is the one it would have had without the stop
    def of_run(events, n):
        starts = [i for i, e in enumerate(events) if isinstance(e, ev.RunStarted)] + [len(events)]
        return losses(events[starts[n]:starts[n + 1]])

    expected, got = of_run(straight, 1), {**of_run(first, 1), **of_run(second, 0)}
    assert sorted(got) == list(range(1, 7))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    assert main(["train", "--resume", str(sweep_dir)]) == 2  # nothing left to resume: one line


def test_a_resume_finishes_the_run_cut_short_first_whatever_order_the_manifest_has(tmp_path):
    """The run cut short goes first, then the rest in the grid's order. A manifest that lists the
    points in another order (written by a tuner that varied the seed fastest) still resumes."""
    control, events = Control(), []

    def stop_in_the_third_run(event):
        events.append(event)
        if sum(isinstance(e, ev.RunStarted) for e in events) == 3 and isinstance(event, ev.TrainReport):
            control.stop()

    path = sweep_file(tmp_path, "prompt_loss_weight: [0, 1]\nseed: [1, 2]\n", iters=6)
    results = run_sweep(load_sweep([path]), stop_in_the_third_run, control)
    assert [(r.run_dir.name, r.status) for r in results] == [
        ("plw0-seed1", "completed"), ("plw1-seed1", "completed"), ("plw0-seed2", "stopped")]
    sweep_dir = results[0].run_dir.parent
    manifest = read_manifest(sweep_dir)
    entries = {e["name"]: e for e in manifest["points"]}
    shutil.rmtree(sweep_dir / "plw1-seed1")  # as if it had not run yet
    entries["plw1-seed1"].update(status="pending", run_dir=None)
    manifest["points"] = [entries[n] for n in ("plw0-seed1", "plw0-seed2", "plw1-seed1", "plw1-seed2")]
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest))

    resumed_events = []
    resumed = resume_sweep(sweep_dir, resumed_events.append)
    assert [(r.run_dir.name, r.status) for r in resumed] == [
        ("plw0-seed2", "completed"), ("plw1-seed1", "completed"), ("plw1-seed2", "completed")]
    assert [e.resumed_from for e in resumed_events if isinstance(e, ev.RunStarted)][1:] == [0, 0]
    notes = [e.message for e in resumed_events if isinstance(e, ev.Notice) and "run " in e.message]
    assert [n.split(": ", 1)[1] for n in notes] == ["run 2 of 4: plw0-seed2", "run 3 of 4: plw1-seed1",
                                                   "run 4 of 4: plw1-seed2"]


def test_a_sweep_killed_before_its_first_checkpoint_starts_that_run_again(tmp_path):
    path = sweep_file(tmp_path, "seed: [1, 2]\n")
    [result] = run_sweep(load_sweep([path]), lambda e: None, _stopping_at_once())
    sweep_dir = result.run_dir.parent
    shutil.rmtree(result.run_dir / "checkpoints")  # killed before it saved anything
    manifest = read_manifest(sweep_dir)
    manifest["points"][0]["status"] = "running"  # as a kill -9 leaves it
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest))
    results = resume_sweep(sweep_dir, lambda e: None)
    assert [(r.run_dir.name, r.status, r.step) for r in results] == [("seed1-2", "completed", 4),
                                                                     ("seed2", "completed", 4)]
    assert [e["run_dir"] for e in read_manifest(sweep_dir)["points"]] == ["seed1-2", "seed2"]
    assert main(["train", "--resume", str(sweep_dir), "--more", "5"]) == 2  # --more is for one run


def _stopping_at_once() -> Control:
    control = Control()
    control.stop()
    return control


# ---------------------------------------------------------------------- detached, and --hosts


def tuner(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=180)


def test_a_detached_sweep_is_checked_here_then_trains_in_the_background(tmp_path):
    bad = sweep_file(tmp_path, "prompt_loss_weight: [0, 2]\n")
    refused = tuner("train", "--detach", str(bad))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert f"{bad}:{line_of(bad, '[0, 2]')}: prompt_loss_weight" in refused.stderr
    assert not (tmp_path / "runs").exists()

    good = sweep_file(tmp_path, "prompt_loss_weight: [0, 1]\n")
    started = tuner("train", "--detach", str(good))
    assert started.returncode == 0, started.stderr
    [sweep_dir] = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert "training a sweep in the background (pid" in started.stdout and str(sweep_dir) in started.stdout
    assert wait_for(lambda: all(e["status"] == "completed" for e in read_manifest(sweep_dir)["points"]))
    assert "run 2 of 2: plw1" in (sweep_dir / "console.log").read_text()


def test_tuner_control_stops_a_detached_sweep_and_a_detached_resume_goes_on(tmp_path):
    path = sweep_file(tmp_path, "seed: [1, 2]\n", iters=100000, save_every=100000)
    assert tuner("train", "--detach", str(path)).returncode == 0
    [sweep_dir] = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert wait_for(lambda: (sweep_dir / "seed1" / "metrics.jsonl").exists()
                    and any(isinstance(e, ev.TrainReport) for e in read_events(sweep_dir / "seed1")))
    stopped = tuner("control", str(sweep_dir), "stop", "--wait")
    assert stopped.returncode == 0 and str(sweep_dir / "seed1") in stopped.stdout
    assert wait_for(lambda: [e["status"] for e in read_manifest(sweep_dir)["points"]] == ["stopped", "pending"])
    at = max(e.step for e in read_events(sweep_dir / "seed1") if isinstance(e, ev.TrainReport))

    again = tuner("train", "--detach", "--resume", str(sweep_dir))
    assert again.returncode == 0, again.stderr
    assert wait_for(lambda: [e.resumed_from for e in read_events(sweep_dir / "seed1")
                             if isinstance(e, ev.RunStarted)][1:] == [at])
    assert tuner("control", str(sweep_dir), "stop", "--wait").returncode == 0
    assert wait_for(lambda: owner_pid(sweep_dir) is None)  # the sweep's process has ended
    assert [e["status"] for e in read_manifest(sweep_dir)["points"]] == ["stopped", "pending"]
    assert not (sweep_dir / "seed2").exists()
    log = (sweep_dir / "console.log").read_text()  # both processes' output, in order
    assert log.count("run 1 of 2: seed1") == 2 and "--- resumed " in log


def test_a_sweep_over_hosts_checks_every_point_against_the_hosts_first(tmp_path, capsys):
    path = sweep_file(tmp_path, "seed: [1, 2]\n", batch_size=3)
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text('[{"ssh": "localhost"}, {"ssh": "localhost"}]')
    assert main(["train", "--hosts", str(hostfile), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tuner: error: ") and "batch_size" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # refused before the sweep folder is made


def test_a_typed_plw_is_a_number_from_0_to_1():
    from engine.runs.sweeps import parse_plw

    assert (parse_plw("0"), parse_plw(" 0.01 "), parse_plw("1")) == (0.0, 0.01, 1.0)
    for bad in ("1.5", "-0.1", "nan", "a lot", ""):
        with pytest.raises(UserError, match="prompt_loss_weight must be a number from 0 to 1"):
            parse_plw(bad)


# ---------------------------------------------------------------------- trained again, linked


def test_rerun_trains_the_config_again_with_a_value_changed_and_links_the_original(tmp_path):
    [original] = run_chain(load_stages([write_config(tmp_path, **TINY, prompt_loss_weight=0.0)]), lambda e: None)
    events = []
    result = rerun(original.run_dir, {"prompt_loss_weight": 0.1}, events.append)
    assert result.status == "completed" and result.run_dir.parent == original.run_dir.parent
    assert result.run_dir.name == f"{original.run_dir.name}-plw0.1"
    assert json.loads((result.run_dir / "derived_from.json").read_text()) == {
        "run": str(original.run_dir.resolve()), "overrides": {"prompt_loss_weight": 0.1}}
    [started] = [e for e in events if isinstance(e, ev.RunStarted)]
    assert started.prompt_loss_weight == 0.1 and started.config["batch_size"] == 4
    with pytest.raises(ConfigError, match="prompt_loss_weight: expected a value <= 1, got 2"):
        rerun(original.run_dir, {"prompt_loss_weight": 2}, events.append)


def test_rerun_of_a_sweep_run_lands_beside_the_sweep(tmp_path):
    [result] = run_sweep(load_sweep([sweep_file(tmp_path, "seed: [1]\n")]), lambda e: None)
    again = rerun(result.run_dir, {"prompt_loss_weight": 1.0}, lambda e: None)
    assert again.run_dir.parent == tmp_path / "runs" and again.run_dir.name == "seed1-plw1"
    assert not (again.run_dir / "sweep_point.json").exists()
