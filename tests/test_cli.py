"""The tuner command as a user meets it: one clear line and exit code 2 for bad input."""

import subprocess
import sys

import pytest

from .conftest import DEMO_DATA, REPO, write_config


def tuner(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd or REPO, timeout=300,
    )


def assert_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_typo_names_file_line_key_and_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model: builtin:tiny-llama\ndata: x\nlearnig_rate: 0.001\n")
    assert_user_error(tuner("train", path), "typo.yaml:3", "learnig_rate", "did you mean 'learning_rate'")


def test_wrong_type(tmp_path):
    path = tmp_path / "type.yaml"
    path.write_text("model: builtin:tiny-llama\nbatch_size: lots\n")
    assert_user_error(tuner("train", path), "type.yaml:2", "batch_size")


def test_out_of_range_plw(tmp_path):
    path = tmp_path / "plw.yaml"
    path.write_text("model: builtin:tiny-llama\ndata: x\n\nprompt_loss_weight: 1.5\n")
    assert_user_error(tuner("validate", path), "plw.yaml:4", "prompt_loss_weight")


def test_missing_data_folder(tmp_path):
    path = tmp_path / "nodata.yaml"
    path.write_text("model: builtin:tiny-llama\ndata: ./not/here\n")
    assert_user_error(tuner("train", path), "nodata.yaml:2", "data", "no such file or folder")


def test_jsonl_line_that_is_not_json(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = (DEMO_DATA / "train.jsonl").read_text().splitlines()[:20]
    (data / "train.jsonl").write_text("\n".join(good[:5] + ["{not json"] + good[5:]) + "\n")
    path = write_config(tmp_path, data=str(data))
    assert_user_error(tuner("train", path), "train.jsonl:6", "not valid JSON")


def test_unrecognised_record_names_its_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "a", "completion": "b"}\n{"question": "a"}\n')
    path = write_config(tmp_path, data=str(data))
    assert_user_error(tuner("train", path), "data.jsonl:2", "unrecognised record")


def test_validate_prints_sources(tmp_path):
    path = write_config(tmp_path, prompt_loss_weight=0.25)
    result = tuner("validate", path, "--set", "iters=7")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "0.25" in lines["prompt_loss_weight"] and "run.yaml" in lines["prompt_loss_weight"]
    assert "7" in lines["iters"] and "--set" in lines["iters"]
    assert "default" in lines["optimizer"]


def test_validate_explains_each_key_from_the_schema(tmp_path):
    from engine.config.help import help_for

    result = tuner("validate", write_config(tmp_path), "--explain")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("prompt_loss_weight "))
    assert lines[at + 1].strip() == help_for("prompt_loss_weight")


def test_train_prints_one_line_per_report_and_saves(tmp_path):
    path = write_config(tmp_path, iters=6, steps_per_report=2, steps_per_eval=6, save_every=100)
    result = tuner("train", path)
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert sum(line.startswith("step ") for line in out) == 3
    assert any("completion loss" in line for line in out)
    assert out[-1].startswith("completed at step 6")
    assert list((tmp_path / "runs").glob("*/adapters/adapters.safetensors"))


def test_chain_with_mismatched_lora_rank_fails_before_training(tmp_path):
    first = write_config(tmp_path, "a.yaml")
    second = tmp_path / "b.yaml"
    second.write_text("lora_parameters:\n  rank: 4\n  scale: 2.0\n")
    result = tuner("train", first, second)
    assert_user_error(result, "b.yaml:1", "rank")
    assert not (tmp_path / "runs").exists()


def test_resume_a_stopped_run_from_the_command_line(tmp_path):
    import json

    from engine.config import load_stages
    from engine.runs.control import Control
    from engine.training.chain import run_chain

    control = Control()
    control.stop()  # stops before the first step: the checkpoint is step 0
    [stopped] = run_chain(load_stages([write_config(tmp_path, iters=4, steps_per_eval=100, val_batches=1)]),
                          lambda e: None, control)
    result = tuner("train", "--resume", stopped.run_dir)
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout and result.stdout.splitlines()[-1].startswith("completed at step 4")
    state = json.loads((stopped.run_dir / "checkpoints" / "step-0000004" / "state.json").read_text())
    assert state["step"] == 4


def test_train_needs_configs_or_resume(tmp_path):
    assert_user_error(tuner("train"), "--resume")


def test_output_piped_into_a_closed_reader_ends_quietly(tmp_path, monkeypatch):
    """`tuner validate x | head -1`: the reader has gone, so writing raises BrokenPipeError."""
    import os

    from engine.cli import main

    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", closed)
    assert main(["validate", str(write_config(tmp_path))]) == 0


def test_the_app_refuses_options_after_its_config_files_in_one_line():
    """``tuner run.yaml --set iters=5`` would have opened the app with "--set" as a stage."""
    done = subprocess.run([sys.executable, "-m", "tui.launch", "sample_configs/demo.yaml", "--set", "iters=5"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tuner: error: --set:") and "tuner train" in lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize(("loss", "prompt", "expected"), [
    (0.5, float("nan"), "loss 0.500 (completion 0.500)"),  # PLW 0: no prompt logits were computed
    (1.5, 2.0, "loss 1.500 (prompt 2.000, completion 0.500)"),
    (float("nan"), float("nan"), "loss nan (prompt nan, completion 0.500)"),  # diverged: every NaN shown
])
def test_train_lines_leave_out_a_prompt_loss_that_was_not_measured(loss, prompt, expected):
    from engine import events as ev
    from engine.printer import format_event

    report = ev.TrainReport(step=2, total_steps=4, epoch=0.1, loss=loss, prompt_loss=prompt, completion_loss=0.5,
                            learning_rate=1e-4, grad_norm=1.0, update_norm=0.1, tokens_per_second=100.0,
                            trained_tokens=200, peak_memory_gb=1.0, active_memory_gb=1.0, cache_memory_gb=0.0,
                            elapsed=2.0)
    assert expected in format_event(report)


def test_the_printer_prints_the_compute_plan_as_one_block_after_the_start_line():
    import io

    from engine import events as ev
    from engine.printer import Printer

    from .test_runs import started

    plan = (ev.LeverChoice("sparse logits", True, "loss reads 12% of positions"),
            ev.LeverChoice("shared prefix", False, "no common prefix"))
    out = io.StringIO()
    printer = Printer(out)
    printer(started(run_dir="runs/a", compute_plan=plan))
    printer(started(run_dir="runs/b"))  # a run that carries no plan prints no block
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("run runs/a (stage 1/2)")
    assert lines[1:4] == [
        "compute plan:",
        "  on   sparse logits — loss reads 12% of positions",
        "  off  shared prefix — no common prefix",
    ]
    assert len(lines) == 5 and lines[4].startswith("run runs/b")
    quiet = io.StringIO()
    Printer(quiet, quiet=True)(started(compute_plan=plan))
    assert quiet.getvalue() == ""


def test_worst_validation_examples_as_text():
    from engine.printer import format_worst

    rows = [{"completion_loss": 2.5, "completion_accuracy": 0.25, "prompt_tokens": 40, "completion_tokens": 10,
             "rg": 0.25, "origin": "valid.jsonl:3"},
            {"completion_loss": None, "completion_accuracy": None, "prompt_tokens": 0, "completion_tokens": 5,
             "rg": None, "origin": "valid.jsonl:7"}]
    text = format_worst("runs/a", 20, rows).splitlines()
    assert text[0] == "" and text[1] == "worst validation examples of runs/a at step 20 (by completion loss):"
    assert text[2] == "    2.500  acc  25.0%  prompt    40  completion    10  Rg   0.25  valid.jsonl:3"
    assert text[3] == "        —  acc   0.0%  prompt     0  completion     5  Rg      —  valid.jsonl:7"
