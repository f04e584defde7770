"""Run folders read back: the run view, summaries, the list of runs, following a live file, atomic writes."""

import json
import math
import os
import shutil
import time

from engine import events as ev
from engine.runs import listing as runs
from engine.files import atomic_write_json, atomic_write_text
from engine.runs.listing import LIVE_SECONDS, list_runs, summarize_run
from engine.runs import view as view_module
from engine.runs.metrics import METRICS_FILE, EventTail, MetricsWriter
from engine.runs.view import RunView


def started(**overrides) -> ev.RunStarted:
    fields = dict(
        run_dir="", adapter_dir="", stage=1, stages=2, config_file="a.yaml", model="builtin:tiny-llama",
        fine_tune_type="lora", prompt_loss_weight=0.1, total_steps=100, steps_per_epoch=50,
        train_examples=400, valid_examples=40, trainable_params=10, total_params=100, device="cpu",
        compute_dtype="float32", time=1_700_000_000.0,
    )
    fields.update(overrides)
    return ev.RunStarted(**fields)


def evaluation(step: int, completion_loss: float, split: str = "valid") -> ev.EvalReport:
    return ev.EvalReport(
        step=step, split=split, prompt_loss=3.0, completion_loss=completion_loss, full_loss=2.5,
        weighted_loss=2.0, completion_accuracy=0.5, completion_perplexity=math.exp(min(completion_loss, 50)),
        prompt_tokens=100, completion_tokens=50, examples=8, seconds=0.1,
    )


def write_run(folder, *events):
    folder.mkdir(parents=True, exist_ok=True)
    writer = MetricsWriter(folder)
    for event in events:
        writer(event)
    writer.close()
    return folder


def make_old(folder):
    old = time.time() - LIVE_SECONDS - 60
    os.utime(folder / METRICS_FILE, (old, old))


def test_completed_run_summary_has_best_valid_loss_and_step(tmp_path):
    run = write_run(
        tmp_path / "a",
        started(),
        evaluation(0, 2.0),
        evaluation(50, 1.2),
        evaluation(50, 0.1, split="test"),  # test evaluations never count
        evaluation(80, float("nan")),  # a diverged evaluation never counts either
        evaluation(100, 1.5),
        ev.RunFinished(step=100, status="completed", adapter_dir="x", elapsed=1.0),
    )
    s = summarize_run(run)
    assert (s.name, s.status, s.stage, s.stages, s.step, s.total_steps) == ("a", "completed", 1, 2, 100, 100)
    assert (s.best_completion_loss, s.best_step) == (1.2, 50)
    assert (s.started, s.model, s.plw, s.config_file) == (1_700_000_000.0, "builtin:tiny-llama", 0.1, "a.yaml")


def test_step_zero_evaluation_counts_and_no_evaluation_is_nan(tmp_path):
    only_baseline = summarize_run(write_run(tmp_path / "a", started(), evaluation(0, 2.0)))
    assert (only_baseline.best_completion_loss, only_baseline.best_step) == (2.0, 0)
    none = summarize_run(write_run(tmp_path / "b", started()))
    assert math.isnan(none.best_completion_loss) and none.best_step == -1


def test_status_rules(tmp_path):
    stopped = write_run(tmp_path / "stopped", started(), ev.RunFinished(step=3, status="stopped", adapter_dir="", elapsed=1))
    failed = write_run(tmp_path / "failed", started(), ev.RunFailed(step=2, error="boom"))
    live = write_run(tmp_path / "live", started(), evaluation(0, 2.0))
    dead = write_run(tmp_path / "dead", started(), evaluation(0, 2.0))
    make_old(dead)
    make_old(stopped)  # a finished run stays finished however old its file is
    assert summarize_run(stopped).status == "stopped"
    assert summarize_run(failed).status == "failed"
    assert summarize_run(live).status == "running"
    assert summarize_run(dead).status == "interrupted"


def test_list_runs_newest_first_and_skips_what_is_not_a_run(tmp_path):
    write_run(tmp_path / "old", started(time=1_000.0))
    write_run(tmp_path / "new", started(time=2_000.0))
    write_run(tmp_path / "no-start-yet", ev.Notice(message="loading"))
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "stray.txt").write_text("not a run")
    torn = write_run(tmp_path / "torn", started(time=1_500.0))
    with open(torn / METRICS_FILE, "a") as f:
        f.write('{"event": "eval", "step": 3, "spl')
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / METRICS_FILE).write_bytes(b'\xff\xfe[1, 2]\n"text"\n{"event": "nope"}\n{"event": "run_started"}\n')
    assert [s.name for s in list_runs(tmp_path)] == ["new", "torn", "old"]
    assert list_runs(tmp_path / "missing") == []


def test_list_runs_with_a_cache_rereads_only_changed_files(tmp_path, monkeypatch):
    run = write_run(tmp_path / "a", started(), evaluation(0, 2.0))
    write_run(tmp_path / "b", started())
    cache = {}
    assert [s.status for s in list_runs(tmp_path, cache)] == ["running", "running"]

    def must_not_reread(run_dir):
        raise AssertionError(f"{run_dir} did not change")

    with monkeypatch.context() as m:
        m.setattr(runs, "summarize_run", must_not_reread)
        m.setattr(runs, "LIVE_SECONDS", 0)
        assert [s.status for s in list_runs(tmp_path, cache)] == ["interrupted"] * 2  # the clock still counts

    write_run(run, evaluation(10, 1.5))
    shutil.rmtree(tmp_path / "b")
    (summary,) = list_runs(tmp_path, cache)
    assert (summary.best_completion_loss, summary.best_step) == (1.5, 10)
    assert list(cache) == [run]


def test_event_tail_reads_only_new_events_and_waits_for_a_whole_line(tmp_path):
    tail = EventTail(tmp_path)
    assert tail.read_new() == []  # no file yet
    write_run(tmp_path, started())
    assert [type(e) for e in tail.read_new()] == [ev.RunStarted]
    assert tail.read_new() == []
    line = json.dumps(evaluation(10, 1.5).to_dict()) + "\n"
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write(line[:20])
        f.flush()
        assert tail.read_new() == []
        f.write(line[20:])
        f.flush()
    (event,) = tail.read_new()
    assert isinstance(event, ev.EvalReport) and (event.step, event.completion_loss) == (10, 1.5)
    assert tail.read_new() == []


def test_atomic_writes_replace_the_file_and_leave_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "config.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["config.json"]


# ---------------------------------------------------------------------- the run view


def fold(*events) -> RunView:
    view = RunView()
    for event in events:
        view = view.apply(event)
    return view


def test_run_view_folds_a_run_and_never_changes_the_view_it_was_given():
    empty = RunView()
    first = started(run_dir="runs/a", compute_plan=(ev.LeverChoice("sparse logits", True, "reads 12%"),))
    view = fold(
        first, ev.StateChanged(state="paused", step=3), evaluation(0, 2.0), evaluation(10, 1.5),
        evaluation(10, 0.5, split="test"), evaluation(20, float("nan")),
        ev.CheckpointSaved(step=10, path="x", reason="best"), ev.CheckpointSaved(step=10, path="x", reason="periodic"),
        ev.SampleGenerated(step=10, prompt="p", completion="c", reference="r"),
        ev.RunFinished(step=20, status="stopped", adapter_dir="x", elapsed=1.0),
    )
    assert empty == RunView() and empty.apply(first) is not empty
    assert view.started is first and view.total_steps == 100 and view.step == 20
    assert view.compute_plan == first.compute_plan
    assert (view.best_completion_loss, view.best_step) == (1.5, 10)  # test splits and NaN never count
    assert [e.step for e in view.evals] == [0, 10, 20] and view.latest_eval.step == 20
    assert view.checkpoint_reasons() == {10: "periodic"} and view.evals_by_step()[10].completion_loss == 1.5
    assert view.loop_state == "paused" and [s.completion for s in view.samples] == ["c"]
    assert (view.status, view.finished, view.error, view.more_stages) == ("stopped", True, "", False)
    assert fold(ev.RunFailed(step=0, error="boom")).status == "failed"  # a failure before any start
    assert fold(ev.RunFailed(step=0, error="boom")).error == "boom"
    assert fold(started(stage=1, stages=2), ev.RunFinished(step=1, status="completed", adapter_dir="",
                                                            elapsed=1)).more_stages


def test_a_resume_continues_the_run_and_another_run_starts_a_new_view():
    before = fold(
        started(run_dir="runs/a"), evaluation(10, 1.5), ev.CheckpointSaved(step=10, path="x", reason="periodic"),
        ev.SampleGenerated(step=10, prompt="p", completion="c", reference="r"),
        ev.StateChanged(state="paused", step=10), ev.RunFinished(step=10, status="stopped", adapter_dir="", elapsed=1),
    )
    resumed = before.apply(started(run_dir="/abs/runs/a", resumed_from=10))  # the same folder, spelled otherwise
    assert (resumed.best_step, resumed.step, len(resumed.evals), len(resumed.checkpoints)) == (10, 10, 1, 1)
    assert (resumed.status, resumed.loop_state, resumed.samples, resumed.last_train) == ("", "running", (), None)
    other = before.apply(started(run_dir="runs/b"))
    assert (other.best_step, other.evals, other.checkpoints, other.step) == (-1, (), (), 0)


def test_run_view_buffers_are_bounded():
    view = fold(started(), *(evaluation(step, 1.0) for step in range(view_module.EVALS_KEPT + 5)),
                *(ev.SampleGenerated(step=s, prompt="p", completion=str(s), reference="r") for s in range(20)))
    assert len(view.evals) == view_module.EVALS_KEPT and view.evals[-1].step == view_module.EVALS_KEPT + 4
    assert [s.completion for s in view.samples] == [str(s) for s in range(20 - view_module.SAMPLES_KEPT, 20)]
    assert view.best_step == 0  # the first of equal losses stays the best, whatever was dropped
