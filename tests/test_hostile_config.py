"""Hostile configs, round two: values that used to validate and then crash (or silently mislead)
in training, and config-file oddities. Each is refused when the config loads (``tuner validate``,
``tuner train`` and the Config screen alike) or, where only the model can tell, before the run
folder exists: one line naming file, line and key, exit 2.
"""

import asyncio
import inspect
import json

import pytest
from textual.widgets import TextArea

from engine.cli import main
from engine.config import ConfigError, load_stages
from engine.config.signatures import KINDS, OPTIMIZERS, SCHEDULES

from .conftest import wait_until, write_config
from .test_hostile_input import case, error_line, write_files
from .test_layering import run_fresh

MODEL = "model: builtin:tiny-llama\n"
HELLO = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
DATA = "".join(json.dumps(HELLO) + "\n" for _ in range(8))
TRAIN = MODEL + "data: data\nnum_layers: -1\niters: 1\n"  # lines 1-4; line 5 is the case's


def config(name, text, *fragments, argv=()):
    """A config that ``tuner validate`` must refuse."""
    return case(name, {"run.yaml": MODEL + text}, ["validate", "run.yaml", *argv], *fragments)


def lora(name, text, *fragments):
    """LoRA settings (line 5) that only the loaded model shows to be wrong: ``tuner train`` refuses them."""
    return case(name, {"run.yaml": TRAIN + text, "data/train.jsonl": DATA}, ["train", "run.yaml"], *fragments)


LONG = "x" * 4200

CONFIGS = [
    # 4. LoRA keys that adapt nothing
    config("lora-keys-empty", "lora_parameters:\n  keys: []\n", "run.yaml:3", "lora_parameters.keys", "adapts no layer"),
    config("lora-key-empty-string", "lora_parameters:\n  keys:\n    - self_attn.q_proj\n    - ''\n",
           "run.yaml:5", "lora_parameters.keys[1]", "empty module path"),
    # 5. seeds outside what numpy and MLX accept
    config("seed-negative", "seed: -1\n", "run.yaml:2", "seed", ">= 0"),
    config("seed-beyond-2**64", f"seed: {2**64 + 1}\n", "run.yaml:2", "seed", "<= 4294967295"),
    config("seed-2**32", f"seed: {2**32}\n", "run.yaml:2", "seed", "<= 4294967295"),
    # 6. schedules: arguments against mlx.optimizers.schedulers' signatures
    config("cosine-decay-one-argument", "lr_schedule:\n  name: cosine_decay\n  arguments: [0.001]\n",
           "run.yaml:4", "lr_schedule.arguments", "cosine_decay takes 2 to 3 arguments", "got 1"),
    config("cosine-decay-four-arguments", "lr_schedule:\n  name: cosine_decay\n  arguments: [0.001, 10, 0, 1]\n",
           "run.yaml:4", "lr_schedule.arguments", "got 4"),
    config("linear-schedule-strings", "lr_schedule:\n  name: linear_schedule\n  arguments: [a, b, c]\n",
           "run.yaml:4", "lr_schedule.arguments[0]", "init", "'a'"),
    config("schedule-steps-a-float", "lr_schedule:\n  name: cosine_decay\n  arguments:\n    - 0.001\n    - 10.5\n",
           "run.yaml:6", "lr_schedule.arguments[1]", "decay_steps", "an integer >= 1"),
    config("schedule-steps-zero", "lr_schedule:\n  name: step_decay\n  arguments: [0.001, 0.5, 0]\n",
           "run.yaml:4", "lr_schedule.arguments[2]", "step_size"),
    config("schedule-nan", "lr_schedule:\n  name: exponential_decay\n  arguments: [.nan, 0.9]\n",
           "run.yaml:4", "lr_schedule.arguments[0]", "finite"),
    config("schedule-negative-decay-rate", "lr_schedule:\n  name: exponential_decay\n  arguments: [0.001, -0.9]\n",
           "run.yaml:4", "lr_schedule.arguments[1]", "decay_rate", "> 0"),
    config("schedule-bool-argument", "lr_schedule:\n  name: cosine_decay\n  arguments: [true, 10]\n",
           "run.yaml:4", "lr_schedule.arguments[0]", "got true"),
    config("warmup-init-negative",
           "lr_schedule:\n  name: cosine_decay\n  arguments: [0.001, 10]\n  warmup: 2\n  warmup_init: -5\n",
           "run.yaml:6", "lr_schedule.warmup_init", ">= 0"),
    # 7. optimizer arguments against mlx.optimizers' signatures
    config("optimizer-config-misspelled-optimizer", "optimizer_config:\n  adamm:\n    eps: 1.0e-8\n",
           "run.yaml:3", "optimizer_config.adamm", "unknown optimizer", "did you mean 'adam'"),
    config("optimizer-unknown-argument", "optimizer: adamw\noptimizer_config:\n  adamw:\n    betaz: [0.9, 0.99]\n",
           "run.yaml:5", "optimizer_config.adamw.betaz", "did you mean 'betas'"),
    config("optimizer-argument-a-word", "optimizer_config:\n  adamw:\n    weight_decay: lots\n",
           "run.yaml:4", "optimizer_config.adamw.weight_decay", "a finite number", "'lots'"),
    config("optimizer-betas-one-number", "optimizer_config:\n  adam:\n    betas: [0.9]\n",
           "run.yaml:4", "optimizer_config.adam.betas", "two finite numbers"),
    config("optimizer-learning-rate-inside", "optimizer_config:\n  sgd:\n    learning_rate: 0.1\n",
           "run.yaml:4", "optimizer_config.sgd.learning_rate", "top-level learning_rate"),
    config("optimizer-bool-is-a-number", "optimizer_config:\n  muon:\n    nesterov: 1\n",
           "run.yaml:4", "optimizer_config.muon.nesterov", "true or false"),
    config("optimizer-count-negative", "optimizer_config:\n  muon:\n    ns_steps: -1\n",
           "run.yaml:4", "optimizer_config.muon.ns_steps", "integer >= 1"),
    config("sgd-nesterov-without-momentum", "optimizer: sgd\noptimizer_config:\n  sgd:\n    nesterov: true\n",
           "run.yaml:5", "optimizer_config.sgd.nesterov", "momentum > 0"),
    config("optimizer-config-set", "", "--set", "optimizer_config.adam.betaz", "no such argument",
           argv=["--set", "optimizer_config.adam.betaz=1"]),
    # 8. run names that are paths, and paths no system accepts
    config("name-with-nul", 'name: "a\\0b"\n', "run.yaml:2", "name", "NUL"),
    config("name-with-lone-surrogate", 'name: "a\\ud800"\n', "run.yaml:2", "name", "lone surrogate"),
    config("name-with-byte-order-mark", "name: \ufeffrun\n", "run.yaml:2", "name", "invisible", "\\ufeff"),
    config("name-with-escape-sequence", 'name: "\\e[31mred"\n', "run.yaml:2", "name", "control character"),
    config("name-300-characters", f"name: {'n' * 300}\n", "run.yaml:2", "name", "300 bytes", "at most 200"),
    config("name-escapes-runs-dir", "name: ../elsewhere\n", "run.yaml:2", "name", "is a path"),
    config("name-absolute", "name: /tmp/run\n", "run.yaml:2", "name", "is a path"),
    config("name-dot-dot", "name: '..'\n", "run.yaml:2", "name", "is a path"),
    config("runs-dir-nul", 'runs_dir: "r\\0uns"\n', "run.yaml:2", "runs_dir", "NUL"),
    case("runs-dir-is-a-file", {"run.yaml": MODEL + "runs_dir: notes.txt\n", "notes.txt": "hi\n"},
         ["validate", "run.yaml"], "run.yaml:2", "runs_dir", "notes.txt is not a folder"),
    case("adapter-path-is-a-file", {"run.yaml": MODEL + "adapter_path: notes.txt\n", "notes.txt": "hi\n"},
         ["validate", "run.yaml"], "run.yaml:2", "adapter_path", "notes.txt is not a folder"),
    case("adapter-path-under-a-file", {"run.yaml": MODEL + "adapter_path: notes.txt/adapters\n", "notes.txt": "hi\n"},
         ["validate", "run.yaml"], "run.yaml:2", "adapter_path", "cannot be one"),
    config("runs-dir-name-too-long", f"runs_dir: runs/{'r' * 300}\n", "run.yaml:2", "runs_dir", "longer than 255 bytes"),
    # 11. YAML 1.1's surprises
    config("iters-base-60", "iters: 1:30\n", "run.yaml:2", "iters", "base-60", "(90)"),
    config("float-base-60", "learning_rate: 1:30.5\n", "run.yaml:2", "learning_rate", "base-60"),
    config("name-base-60", "name: 12:30\n", "run.yaml:2", "name", "quote '12:30'"),
    config("nested-base-60", "lora_parameters:\n  rank: 1:04\n", "run.yaml:3", "lora_parameters.rank", "base-60"),
    config("iters-octal", "iters: 010\n", "run.yaml:2", "iters", "octal", "(8)"),
    config("set-base-60", "", "--set", "iters", "base-60", argv=["--set", "iters=1:30"]),
    config("name-no", "name: no\n", "run.yaml:2", "name", "got false", "quote it"),
    config("data-on", "data: on\n", "run.yaml:2", "data", "got true", "boolean"),
    config("name-a-date", "name: 2024-05-01\n", "run.yaml:2", "name", "date"),
    # 12. invisible characters, empty paths, long paths
    config("bom-mid-file", "\ufeffiters: 2\n", "run.yaml:2", "\\ufeffiters", "byte-order mark"),
    config("zero-width-space-in-key", "lora_parameters:\n  ra\u200bnk: 4\n", "run.yaml:3",
           "lora_parameters.ra\\u200bnk", "invisible character (U+200B)"),
    config("data-empty", 'data: ""\n', "run.yaml:2", "data", "empty path"),
    config("data-blank", 'data: "  "\n', "run.yaml:2", "data", "empty path"),
    config("adapter-path-empty", "adapter_path: ''\n", "run.yaml:2", "adapter_path", "empty path"),
    config("tab-in-unknown-key", '"ba\\ttch_size": 2\n', "run.yaml:2", "ba\\ttch_size", "character (U+0009)"),
    # 21 (the sibling that must still be refused): other keys, not another order
    case("second-stage-other-keys",
         {"a.yaml": MODEL + "lora_parameters:\n  keys: [self_attn.q_proj, self_attn.v_proj]\n",
          "b.yaml": "lora_parameters:\n  keys: [self_attn.q_proj]\n"},
         ["validate", "a.yaml", "b.yaml"], "b.yaml:1", "lora_parameters", "differs"),
]

MODEL_CASES = [
    # 4. and 8.: what only the loaded model can tell, before any run folder exists
    lora("lora-key-matches-no-layer", "lora_parameters:\n  keys: [self_attn.nope_proj]\n",
         "run.yaml:5", "lora_parameters.keys", "self_attn.nope_proj names no layer", "self_attn.q_proj"),
    lora("lora-key-is-a-norm", "lora_parameters:\n  keys: [input_layernorm]\n",
         "run.yaml:5", "lora_parameters.keys", "RMSNorm", "cannot wrap", "mlp.down_proj"),
    lora("lora-key-is-a-block", "lora_parameters:\n  keys: [self_attn.q_proj, mlp]\n",
         "run.yaml:5", "lora_parameters.keys", "mlp is a MLP"),
    lora("lora-rank-above-the-layers", "lora_parameters:\n  rank: 100000\n",
         "run.yaml:5", "lora_parameters.rank", "100000 is more than", "use at most 64"),
    lora("dora-rank-above-the-layers", "fine_tune_type: dora\nlora_parameters:\n  rank: 65\n",
         "run.yaml:6", "lora_parameters.rank", "use at most 64"),
    lora("lora-rank-above-a-top-level-layer", "lora_parameters:\n  keys: [lm_head]\n  rank: 129\n",
         "run.yaml:5", "lora_parameters.rank", "lm_head", "at most 128"),
]


@pytest.mark.parametrize("files, argv, fragments", CONFIGS + MODEL_CASES)
def test_bad_input_is_one_line_and_exit_2(files, argv, fragments, in_tmp, capsys):
    write_files(in_tmp, files)
    code = main(argv)
    line = error_line(capsys.readouterr().err)
    assert code == 2
    for fragment in fragments:
        assert fragment in line, line
    assert not (in_tmp / "runs").exists()  # refused before a run folder was made


def test_valid_neighbours_still_load(in_tmp):
    """The values just inside each new limit, and the quoted spellings the errors advise."""
    text = MODEL + (
        f"seed: {2**32 - 1}\nname: '12:30'\n"
        + "lr_schedule:\n  name: cosine_decay\n  arguments: [0.001, 10]\n  warmup: 2\n  warmup_init: 0\n"
        + "optimizer_config:\n  adamw: {betas: [0.9, 0.99], weight_decay: 0, bias_correction: true}\n"
        + "  adafactor: {beta_1: null, eps: [1.0e-30, 0.001]}\n  sgd: {nesterov: true, momentum: 0.9}\n"
        + "lora_parameters:\n  keys: [self_attn.q_proj]\n"
    )
    write_files(in_tmp, {"run.yaml": text})
    cfg = load_stages(["run.yaml"])[0].config
    assert (cfg.seed, cfg.name, cfg.optimizer_config["adamw"]["betas"]) == (2**32 - 1, "12:30", [0.9, 0.99])


def test_a_long_path_is_shortened_and_said_once(in_tmp, capsys):
    """A 4,200-character path used to fill an 8,488-character line, twice."""
    write_files(in_tmp, {"run.yaml": MODEL + f"runs_dir: {LONG}/{LONG}\n"})
    assert main(["validate", "run.yaml"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "run.yaml:2: runs_dir:" in line and "…" in line and len(line) < 300, line


def test_a_path_said_twice_is_shown_once():
    """Whatever message a check builds, its one line stays short: the path once, cut in the middle."""
    path = f"/data/{LONG}/train.jsonl"
    line = str(ConfigError(f"cannot read {path}: {path} is not a file", "run.yaml", 2, "data"))
    assert line.startswith("run.yaml:2: data: cannot read /data/xxx") and line.count("…") == 1, line
    assert "(the same)" in line and len(line) < 250, line


def test_lora_keys_in_another_order_continue_the_previous_stage(in_tmp, capsys):
    write_files(in_tmp, {
        "a.yaml": MODEL + "data: data\nlora_parameters:\n  keys: [self_attn.q_proj, self_attn.v_proj]\n",
        "b.yaml": "data: data\nlora_parameters:\n  keys: [self_attn.v_proj, self_attn.q_proj]\n",
        "data/train.jsonl": DATA,
    })
    assert main(["validate", "a.yaml", "b.yaml"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("second, fragments", [
    ("data: gone/\n", ("b.yaml:1", "data", "no such file or folder")),
    ("data: empty\n", ("b.yaml:1", "data", "no train file")),
])
def test_a_chain_checks_every_stage_s_data_before_training_any(second, fragments, in_tmp, capsys):
    write_files(in_tmp, {"a.yaml": TRAIN, "b.yaml": second, "data/train.jsonl": DATA, "empty/notes.txt": "x\n"})
    assert main(["train", "a.yaml", "b.yaml"]) == 2
    line = error_line(capsys.readouterr().err)
    for fragment in fragments:
        assert fragment in line, line
    assert not (in_tmp / "runs").exists()  # stage 1 did not train first


def _kind_of(annotation) -> set[str]:
    """Our kinds that fit an MLX parameter annotation."""
    text = str(annotation).replace("typing.", "")
    kinds = {"float": {"number", "nonneg", "positive"}, "int": {"count"}, "bool": {"bool"},
             "List[float]": {"pair"}, "Tuple[float, float]": {"pair"}, "Optional[float]": {"number?"}}
    return kinds.get(getattr(annotation, "__name__", text), kinds.get(text, set()))


def test_the_signature_table_matches_mlx_optimizers():
    """The table the config checks use (engine/config/signatures.py, kept so that validating loads
    no MLX) against the real functions: names, order, required or not, and types."""
    import mlx.optimizers as optim
    from mlx.optimizers import schedulers

    real = {name for name, fn in vars(schedulers).items()
            if inspect.isfunction(fn) and fn.__module__ == schedulers.__name__ and not name.startswith("_")}
    assert set(SCHEDULES) == real - {"join_schedules"}
    classes = {"adam": optim.Adam, "adamw": optim.AdamW, "muon": optim.Muon, "sgd": optim.SGD,
               "adafactor": optim.Adafactor}
    assert set(OPTIMIZERS) == set(classes)
    signatures = {name: (getattr(schedulers, name), SCHEDULES[name]) for name in SCHEDULES}
    signatures |= {name: (cls.__init__, OPTIMIZERS[name]) for name, cls in classes.items()}
    for name, (fn, table) in signatures.items():
        params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("self", "learning_rate")]
        assert [p.name for p in params] == [p for p, _, _ in table], name
        for param, (_, kind, required) in zip(params, table):
            assert required == (param.default is inspect.Parameter.empty), (name, param.name)
            assert kind in KINDS and kind in _kind_of(param.annotation), (name, param.name, param.annotation)
            if not required:  # the defaults themselves pass the table's checks
                default = list(param.default) if isinstance(param.default, tuple) else param.default
                assert KINDS[kind][1](default), (name, param.name)


def test_validating_schedules_and_optimizer_arguments_loads_no_mlx(tmp_path):
    """The Config screen validates as the user types: the table stands in for MLX's signatures."""
    path = tmp_path / "run.yaml"
    path.write_text(MODEL + "lr_schedule:\n  name: cosine_decay\n  arguments: [0.001, 10]\n"
                    "optimizer_config:\n  adamw: {weight_decay: 0.1}\n")
    code = f"import sys\nfrom engine.config import load_stages\nload_stages([{str(path)!r}])\nprint('mlx' in sys.modules)"
    assert run_fresh(code) == "False"


def test_the_config_screen_shows_these_errors_at_their_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_CONFIG_DIR", str(tmp_path / "settings"))
    config = write_config(tmp_path)

    async def scenario():
        from tui.app import TunerApp

        app = TunerApp(config, runs_dir=tmp_path / "runs")
        async with app.run_test(size=(160, 40)) as pilot:
            screen = app.config_screen
            check = screen.query_one("#config-check")
            assert await wait_until(pilot, lambda: "✓" in str(check.render()), 60)
            area = screen.query_one(TextArea)
            area.load_text(area.text + "seed: -3\nlr_schedule:\n  name: cosine_decay\n  arguments: [0.001]\n"
                           "optimizer_config:\n  adamm: {}\n")
            assert await wait_until(pilot, lambda: "optimizer_config.adamm" in str(check.render()), 30)
            shown = str(check.render())
            assert "✗" in shown and "seed" in shown and "lr_schedule.arguments" in shown, shown

    asyncio.run(scenario())
