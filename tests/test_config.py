"""Config loading: mlx-lm compatibility, one-line errors at the right line, stages and provenance."""

import textwrap
from pathlib import Path

import pytest
import yaml

from engine.config import (
    ConfigError,
    Source,
    TrainConfig,
    check_chain,
    config_to_dict,
    format_resolved,
    load_config,
    load_stages,
)
from engine.config.checks import check_ranks
from engine.config.help import help_for
from engine.config.reference import TABLE_END, TABLE_START, reference_rows, reference_table
from engine.config.schema import submodel

from .conftest import REPO

# mlx-lm's own example (mlx_lm/examples/lora_config.yaml), comments trimmed: must load as is.
MLX_LM_EXAMPLE = """\
model: "mlx_model"
train: true
fine_tune_type: lora
training_mode: normal
optimizer: adamw
data: "/path/to/training/data"
seed: 0
num_layers: 16
batch_size: 4
iters: 1000
val_batches: 25
learning_rate: 1e-5
steps_per_report: 10
steps_per_eval: 200
resume_adapter_file: null
adapter_path: "adapters"
save_every: 100
test: false
test_batches: 100
max_seq_length: 2048
grad_checkpoint: false
lora_parameters:
  keys: ["self_attn.q_proj", "self_attn.v_proj"]
  rank: 8
  scale: 20.0
  dropout: 0.0
lr_schedule:
  name: cosine_decay
  warmup: 100
  warmup_init: 1e-7
  arguments: [1e-5, 1000, 1e-7]
hf_dataset:
  name: "billsum"
  train_split: "train[:1000]"
  valid_split: "train[-100:]"
  prompt_feature: "text"
  completion_feature: "summary"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_stages(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_mlx_lm_example_loads_unchanged(tmp_path):
    cfg = load_config(write(tmp_path, "mlx.yaml", MLX_LM_EXAMPLE)).config
    assert cfg.model == "mlx_model"
    assert cfg.optimizer == "adamw"
    assert cfg.learning_rate == 1e-5 and isinstance(cfg.learning_rate, float)
    assert cfg.lora_parameters.keys == ["self_attn.q_proj", "self_attn.v_proj"]
    assert cfg.lora_parameters.scale == 20.0
    assert cfg.lr_schedule.name == "cosine_decay"
    assert cfg.lr_schedule.arguments == [1e-5, 1000, 1e-7]
    assert cfg.lr_schedule.warmup_init == 1e-7
    assert [d.path for d in cfg.hf_dataset] == ["billsum"]  # mlx-tuning-fork's `name` becomes `path`
    assert cfg.hf_dataset[0].completion_feature == "summary"
    assert cfg.test_batches == 100 and cfg.iters == 1000 and cfg.epochs is None


def test_exponent_floats_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "c.yaml", "model: m\nlearning_rate: 2e-4\nmax_grad_norm: 1\n")).config
    assert cfg.learning_rate == 2e-4
    assert cfg.max_grad_norm == 1.0
    assert cfg.iters == 1000  # mlx-lm's default length
    assert cfg.lora_parameters.rank == 8 and cfg.batch_size == 4
    # the loader is a subclass: the global SafeLoader is not changed behind other code's back
    assert yaml.safe_load("x: 1e-5")["x"] == "1e-5"


def test_unknown_key_suggests_and_names_line(tmp_path):
    path = write(tmp_path, "demo.yaml", "model: m\nbatch_size: 2\n\n\nlearnig_rate: 1e-4\n")
    assert error_of([path]) == f"{path}:5: learnig_rate: unknown key (did you mean 'learning_rate'?)"


def test_unknown_nested_key_suggests_from_its_own_level(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nlora_parameters:\n  rank: 4\n  rnak: 8\n")
    assert error_of([path]) == f"{path}:4: lora_parameters.rnak: unknown key (did you mean 'rank'?)"


def test_wrong_type_names_key_line_expected_and_got(tmp_path):
    path = write(tmp_path, "demo.yaml", "model: m\nlearning_rate: abc\n")
    assert error_of([path]) == f"{path}:2: learning_rate: expected a number, got 'abc'"


@pytest.mark.parametrize("text", ["grad_checkpoint: 1", "grad_checkpoint: 'yes'", "batch_size: '4'", "batch_size: 2.5"])
def test_types_are_strict(tmp_path, text):
    path = write(tmp_path, "c.yaml", f"model: m\n{text}\n")
    key = text.split(":")[0]
    assert error_of([path]).startswith(f"{path}:2: {key}: expected")


def test_plw_out_of_range(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nmask_prompt: true\nprompt_loss_weight: 1.5\n")
    assert error_of([path]) == f"{path}:3: prompt_loss_weight: expected a value <= 1, got 1.5"


def test_nested_value_error_points_at_nested_line(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nlora_parameters:\n  scale: 2.0\n  rank: -1\n")
    assert error_of([path]) == f"{path}:4: lora_parameters.rank: expected a value >= 1, got -1"


def test_alpha_gets_a_scale_hint(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nlora_parameters:\n  rank: 8\n  alpha: 16\n")
    assert error_of([path]) == (
        f"{path}:4: lora_parameters.alpha: mlx-lm uses 'scale', not 'alpha' "
        "(scale = alpha / rank; for alpha=16, rank=8 write scale: 2.0)"
    )


def test_yaml_syntax_error_has_line(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nbatch_size: 4\nlora_parameters: [1, 2\nseed: 1\n")
    text = error_of([path])
    assert text.startswith(f"{path}:4: invalid YAML")


def test_missing_file_non_mapping_and_missing_model(tmp_path):
    assert error_of([tmp_path / "nope.yaml"]) == f"{tmp_path / 'nope.yaml'}: config file not found"
    listing = write(tmp_path, "list.yaml", "- a\n- b\n")
    assert error_of([listing]).startswith(f"{listing}:1: expected a mapping")
    no_model = write(tmp_path, "c.yaml", "batch_size: 2\n")
    assert error_of([no_model]) == f"{no_model}: model: required key is missing"


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nseed: 1\nseed: 2\n")
    assert error_of([path]) == f"{path}:3: seed: duplicate key (first set on line 2)"


def test_mask_prompt_sets_plw_and_explicit_plw_wins(tmp_path):
    masked = load_config(write(tmp_path, "a.yaml", "model: m\nmask_prompt: true\n"))
    assert masked.config.plw == 0.0
    assert str(masked.sources["prompt_loss_weight"]) == f"from mask_prompt ({tmp_path / 'a.yaml'}:2)"
    plain = load_config(write(tmp_path, "b.yaml", "model: m\n"))
    assert plain.config.plw == 1.0
    assert str(plain.sources["prompt_loss_weight"]) == "default (mask_prompt: false)"
    explicit = load_config(write(tmp_path, "c.yaml", "model: m\nmask_prompt: true\nprompt_loss_weight: 0.1\n"))
    assert explicit.config.plw == 0.1
    assert explicit.sources["prompt_loss_weight"] == Source("file", str(tmp_path / "c.yaml"), 3)


def test_stages_inherit_with_provenance(tmp_path):
    first = write(tmp_path, "a.yaml", "model: m\nbatch_size: 2\niters: 50\nlearning_rate: 1e-4\n")
    second = write(tmp_path, "b.yaml", "learning_rate: 5e-5\nepochs: 2\n")
    one, two = load_stages([first, second])
    assert (one.config.iters, one.config.epochs) == (50, None)
    assert two.config.batch_size == 2 and two.config.model == "m"
    assert two.config.learning_rate == 5e-5
    assert (two.config.iters, two.config.epochs) == (None, 2.0)  # stage 2's epochs drops inherited iters
    assert str(two.sources["batch_size"]) == f"stage 1 ({first}:2)"
    assert str(two.sources["learning_rate"]) == f"{second}:1"
    assert str(two.sources["seed"]) == "default"
    assert two.explicit == {"learning_rate", "epochs"}
    assert two.index == 1 and two.path == second


def test_iters_and_epochs_in_one_file(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\niters: 10\nepochs: 1\n")
    assert error_of([path]) == f"{path}:3: epochs: set iters or epochs, not both"


def test_overrides_apply_to_every_stage(tmp_path):
    first = write(tmp_path, "a.yaml", "model: m\nlora_parameters:\n  rank: 4\n  scale: 3\n")
    second = write(tmp_path, "b.yaml", "learning_rate: 1e-3\n")
    stages = load_stages([first, second], ["learning_rate=2e-4", "lora_parameters.rank=16"])
    for stage in stages:
        assert stage.config.learning_rate == 2e-4
        assert stage.config.lora_parameters.rank == 16
        assert stage.config.lora_parameters.scale == 3.0  # the rest of the mapping is kept
        assert str(stage.sources["learning_rate"]) == "--set"
        assert {"learning_rate", "lora_parameters"} <= stage.explicit


@pytest.mark.parametrize(
    "override, expected",
    [
        ("lerning_rate=1", "--set: lerning_rate: unknown key (did you mean 'learning_rate'?)"),
        ("lora_parameters.rank=abc", "--set: lora_parameters.rank: expected an integer, got 'abc'"),
        ("batch_size", "--set: expected key=value, got 'batch_size'"),
    ],
)
def test_bad_overrides(tmp_path, override, expected):
    path = write(tmp_path, "c.yaml", "model: m\nlora_parameters:\n  rank: 4\n")
    assert error_of([path], [override]) == expected


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "data").mkdir(parents=True)
    write(folder, "c.yaml", "model: builtin:tiny-llama\ndata: data\nresume_adapter_file: missing.safetensors\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("configs/c.yaml").config
    assert cfg.data == str((folder / "data").resolve())
    assert cfg.model == "builtin:tiny-llama"
    assert cfg.resume_adapter_file == "missing.safetensors"  # not there: left for the cwd or the Hub


def test_where_and_error_locate_later_problems(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\ndata: nowhere/else.jsonl\n")
    stage = load_config(path)
    assert stage.where("data") == f"{path}:2: data"
    assert str(stage.error("data", "no such file")) == f"{path}:2: data: no such file"
    assert stage.where("hf_dataset") == f"{path}: hf_dataset"  # a default: the stage's file, no line


def test_format_resolved_shows_values_and_sources(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nmask_prompt: true\nlora_parameters:\n  rank: 4\n")
    lines = format_resolved(load_config(path, ["seed=7"])).splitlines()
    rows = {line.split()[0]: line for line in lines}
    assert len(rows) == len(TrainConfig.model_fields)
    assert rows["model"].endswith(f"{path}:1")
    assert rows["seed"].split()[1] == "7" and rows["seed"].endswith("--set")
    assert rows["batch_size"].endswith("default")
    assert "0.0" in rows["prompt_loss_weight"] and "from mask_prompt" in rows["prompt_loss_weight"]
    assert "{rank: 4" in rows["lora_parameters"]


def test_resolved_dict_round_trips(tmp_path):
    stage = load_config(write(tmp_path, "mlx.yaml", MLX_LM_EXAMPLE), ["mask_prompt=true"])
    dumped = write(tmp_path, "resolved.yaml", yaml.safe_dump(config_to_dict(stage.config)))
    again = load_config(dumped).config
    assert again == stage.config.model_copy(update={"prompt_loss_weight": 0.0})
    assert config_to_dict(again)["prompt_loss_weight"] == 0.0


def test_explicit_null_iters_does_not_hide_epochs(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\niters: null\nepochs: 2\n")
    stage = load_config(path)
    assert stage.config.epochs == 2 and stage.config.iters is None


def test_unsaved_text_stands_in_for_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nbatch_size: 2\n")
    stage = load_stages([path], texts={str(path): "model: m\nbatch_size: 5\n"})[0]
    assert stage.config.batch_size == 5
    with pytest.raises(ConfigError) as err:
        load_stages([path], texts={str(path): "model: m\nbatch_size: x\n"})
    assert str(err.value).startswith(f"{path}:2: batch_size")


# --------------------------------------------------------------------------- checks across keys, stages, ranks


def check_error(stages, ranks: int = 1) -> str:
    with pytest.raises(ConfigError) as info:
        check_chain(stages, ranks)
    return str(info.value)


def test_early_stopping_needs_validation_and_is_refused_at_its_line(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nval_batches: 0\nearly_stopping_patience: 3\n")
    assert check_error(load_stages([path])) == (
        f"{path}:3: early_stopping_patience: needs validation, and val_batches is 0 (no validation)"
    )
    check_chain(load_stages([path], ["val_batches=1"]))
    check_chain(load_stages([path], ["early_stopping_patience=null"]))


def test_a_later_stage_must_continue_the_same_layers(tmp_path):
    first = write(tmp_path, "a.yaml", "model: m\nlora_parameters:\n  rank: 8\n")
    second = write(tmp_path, "b.yaml", "# stage 2\nnum_layers: 4\n")
    assert check_error(load_stages([first, second])).startswith(f"{second}:2: num_layers: 4 differs from stage 1's 16")
    own_start = write(tmp_path, "c.yaml", "num_layers: 4\nresume_adapter_file: x.safetensors\n")
    check_chain(load_stages([first, own_start]))


def test_batches_must_split_evenly_over_the_ranks(tmp_path):
    path = write(tmp_path, "c.yaml", "model: m\nbatch_size: 6\n")
    stages = load_stages([path])
    check_chain(stages, ranks=3)
    assert check_error(stages, ranks=4) == f"{path}:2: batch_size: 6 does not split evenly over 4 ranks; use a multiple of 4"
    with pytest.raises(ConfigError, match="over the 4 hosts of hosts.json; use a multiple of 4"):
        check_ranks(stages, 4, over="the 4 hosts of hosts.json")


# --------------------------------------------------------------------------- help from the schema


def every_field():
    for name, field in TrainConfig.model_fields.items():
        yield name, field
        inner = submodel(field.annotation)
        for key, sub in (inner.model_fields.items() if inner else ()):
            yield f"{name}.{key}", sub


def test_every_key_has_one_line_of_help():
    for key, field in every_field():
        assert field.description and "\n" not in field.description, key
        assert help_for(key) == field.description
    assert "NOT alpha" in help_for("lora_parameters") and "alpha / rank" in help_for("lora_parameters.scale")
    assert help_for("no_such_key") == "" and help_for("model.rank") == ""


def test_readme_table_of_keys_is_the_schemas():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    assert readme[start:end] == reference_table(), "run: python -m engine.config.reference README.md"
    rows = {key: (default, meaning) for key, default, meaning in reference_rows()}
    assert len(rows) == len(list(every_field()))
    assert rows["model"][0] == "required" and rows["batch_size"][0] == "`4`" and rows["data"][0] == "—"
    assert rows["lora_parameters"][0] == "rank 8, scale 20, dropout 0"
    assert rows["prompt_loss_weight"][0] == "from mask_prompt"


def test_validate_explain_puts_each_keys_help_under_it(tmp_path):
    lines = format_resolved(load_config(write(tmp_path, "c.yaml", "model: m\n")), explain=True).splitlines()
    assert len(lines) == 2 * len(TrainConfig.model_fields)
    at = next(i for i, line in enumerate(lines) if line.startswith("batch_size "))
    assert lines[at + 1].strip() == help_for("batch_size")
