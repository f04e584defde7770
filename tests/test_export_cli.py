"""``tuner export`` on the command line: progress lines and the result, one-line refusals, exit code 2."""

from __future__ import annotations

import gguf
import pytest

from engine.cli import main as tuner
from engine.errors import EXIT_USER_ERROR

from .conftest import write_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_model_dir):
    from engine.config import load_stages
    from engine.training.chain import run_chain

    folder = tmp_path_factory.mktemp("cli-run")
    config = write_config(folder, iters=4, save_every=2, steps_per_eval=100, val_batches=1, batch_size=4,
                          lora_parameters={"rank": 4, "scale": 2.0, "dropout": 0.0})
    [result] = run_chain(load_stages([config]), lambda event: None)
    return result.run_dir


def test_export_prints_progress_and_where_it_went(run, tmp_path, capsys):
    out = tmp_path / "model.gguf"
    assert tuner(["export", str(run), "--checkpoint", "2", "--to", "gguf", "--quant", "q8_0", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("fusing the adapter into the base model") and lines[0].lstrip().startswith("0%")
    assert any("writing the GGUF file (Q8_0)" in line for line in lines)
    assert lines[-3].strip() == "100%  done"
    assert lines[-2] == f"exported {run} -> {out}" and lines[-1] == f"run it with llama.cpp: llama-cli -m {out}"
    assert len(lines) <= 14  # at most one line per tenth of the way
    assert gguf.GGUFReader(out).fields["general.name"].contents() == f"{run.name}-step2"


@pytest.mark.parametrize("arguments, message", [
    (["--to", "gguf", "--checkpoint", "7"], "no checkpoint at step 7 (saved steps: 2, 4)"),
    (["--to", "mlx", "--quant", "q8_0"], "--quant 'q8_0' does not go with --to mlx; choose one of dequantize"),
    (["--to", "ollama"], "already exists; tuner never overwrites"),
])
def test_refusals_are_one_line_and_exit_code_2(run, tmp_path, capsys, arguments, message):
    out = tmp_path / "taken"
    if "ollama" in arguments:
        out.mkdir()
    assert tuner(["export", str(run), *arguments, str(out)]) == EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tuner: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["taken"] if "ollama" in arguments else [])


def test_an_unsupported_architecture_exits_2(run, tmp_path, capsys):
    import json
    import shutil

    base = tmp_path / "phi-base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    folder = tmp_path / "run"
    shutil.copytree(run / "adapters", folder / "adapters")
    settings = json.loads((folder / "adapters" / "adapter_config.json").read_text())
    (folder / "adapters" / "adapter_config.json").write_text(json.dumps({**settings, "model": str(base)}))
    assert tuner(["export", str(folder), "--to", "gguf", str(tmp_path / "out.gguf")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "model type 'phi3' cannot be exported to GGUF; tuner exports the Llama family" in err
    assert err.count("\n") == 1 and not (tmp_path / "out.gguf").exists()
