"""The compute plan: every lever decided in one place, with on/off and a reason a person can act on."""

import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from engine.config import load_stages
from engine.events import LeverChoice, RunStarted, event_from_dict
from engine.levers.device import on_cpu
from engine.levers.plan import plan_compute, shared_length
from engine.levers.platform_check import openblas_path
from engine.levers.swap import is_switched
from tests.conftest import REPO, write_config
from tests.switched_models import assert_trains_like, load_demo, lora

LEVERS = ["fast BLAS", "denormals flushed", "fast SiLU", "fast attention", "fast LoRA", "sparse logits",
          "sparse last block", "CPU streams", "shared prefix", "gradient checkpointing"]
PREFIXED = [np.array([7] * 10 + [i, i + 1]) for i in range(4)]  # ten shared leading tokens


def plan_for(demo_model_dir, tmp_path, ranks=1, ids=PREFIXED, **keys):
    cfg = load_stages([write_config(tmp_path, **keys)])[0].config
    model = lora(load_demo(demo_model_dir))
    return model, plan_compute(model, cfg, ranks, ids)


def choice(plan, name) -> LeverChoice:
    return next(c for c in plan.choices if c.name == name)


def test_every_lever_is_listed_once_with_a_reason(demo_model_dir, tmp_path):
    _, plan = plan_for(demo_model_dir, tmp_path, prompt_loss_weight=0.0)
    assert [c.name for c in plan.choices] == LEVERS
    assert all(c.reason for c in plan.choices)


def test_on_the_cpu_the_layer_levers_switch_the_model_after_lora(demo_model_dir, tmp_path):
    """The layer levers take a model whose adapters are already added, as the trainer prepares it."""
    model, plan = plan_for(demo_model_dir, tmp_path, prompt_loss_weight=0.0)
    layers = len(model.layers)
    if not on_cpu():  # Metal, CUDA: the CPU levers stay off
        assert choice(plan, "fast SiLU") == LeverChoice("fast SiLU", False, "for the CPU backend only")
        return
    assert choice(plan, "fast SiLU").on and choice(plan, "fast SiLU").reason.startswith(f"{layers} MLPs")
    assert choice(plan, "fast attention").on and choice(plan, "fast attention").reason.startswith(f"{layers} attention")
    assert choice(plan, "fast LoRA").on
    assert all(is_switched(layer.mlp, "FastSiLU") and is_switched(layer.self_attn, "FastSoftmax") for layer in model.layers)
    assert plan.sparse_logits and choice(plan, "sparse last block").on
    assert is_switched(model.layers[-1], "SparseTail")


@pytest.mark.parametrize("plw", [0.0, 0.1])
def test_a_model_the_plan_switched_trains_like_the_plain_one(demo_model_dir, tmp_path, plw):
    """Same logits, losses and gradients (both loss paths) as the unswitched LoRA model."""
    fast, plan = plan_for(demo_model_dir, tmp_path, prompt_loss_weight=plw)
    assert choice(plan, "fast SiLU").on == on_cpu() and choice(plan, "sparse last block").on == (plw == 0)
    assert_trains_like(lora(load_demo(demo_model_dir)), fast, plw, flowing=".mlp.")


def test_each_switch_in_the_config_turns_its_lever_off_and_says_so(demo_model_dir, tmp_path):
    model, plan = plan_for(demo_model_dir, tmp_path, fast_silu=False, fast_attention=False, fast_lora=False,
                           sparse_logits=False, cpu_streams=1, shared_prefix=False)
    for name, reason in [("fast SiLU", "fast_silu: false"), ("fast attention", "fast_attention: false"),
                         ("fast LoRA", "fast_lora: false"), ("sparse logits", "sparse_logits: false"),
                         ("CPU streams", "cpu_streams: 1"), ("shared prefix", "shared_prefix: false"),
                         ("sparse last block", "needs sparse logits")]:
        assert choice(plan, name) == LeverChoice(name, False, reason)
    assert not plan.sparse_logits and plan.shared_prefix == 0 and not plan.row_streams.split
    assert not any(is_switched(layer.mlp, "FastSiLU") for layer in model.layers)


def test_plw_above_zero_keeps_the_full_last_block(demo_model_dir, tmp_path):
    model, plan = plan_for(demo_model_dir, tmp_path, prompt_loss_weight=0.1)
    assert choice(plan, "sparse last block") == LeverChoice("sparse last block", False, "PLW > 0 reads every real position")
    assert not is_switched(model.layers[-1], "SparseTail")


def test_the_shared_prefix_is_the_training_sets_common_prefix(demo_model_dir, tmp_path):
    _, plan = plan_for(demo_model_dir, tmp_path, cpu_streams=1)
    assert plan.shared_prefix == 10 and choice(plan, "shared prefix").on
    assert "first 10 tokens" in choice(plan, "shared prefix").reason
    _, plan = plan_for(demo_model_dir, tmp_path, cpu_streams=1, ids=[np.arange(12), np.arange(1, 13)])
    assert plan.shared_prefix == 0 and "fewer than 8" in choice(plan, "shared prefix").reason
    # every row keeps two tokens of its own: 9 of 11 shared, 7 of 9 too few
    assert shared_length([np.arange(11)] * 2) == 9 and shared_length([np.arange(9)] * 2) == 0


def test_ranks_and_run_settings_that_rule_out_the_shared_prefix(demo_model_dir, tmp_path):
    _, plan = plan_for(demo_model_dir, tmp_path, ranks=2)
    assert choice(plan, "shared prefix").reason == "not across data-parallel ranks" and plan.shared_prefix == 0
    assert not plan.can_share_prefix
    assert not choice(plan, "CPU streams").on
    if on_cpu():
        assert choice(plan, "CPU streams").reason == "data-parallel ranks on one machine share its cores"
    _, plan = plan_for(demo_model_dir, tmp_path, cpu_streams=1, grad_checkpoint=True)
    assert choice(plan, "shared prefix").reason == "not with gradient checkpointing"
    assert choice(plan, "gradient checkpointing").on
    _, plan = plan_for(demo_model_dir, tmp_path, cpu_streams=1, lora_parameters={"rank": 8, "scale": 2.0, "dropout": 0.1})
    assert choice(plan, "shared prefix").reason == "not with LoRA dropout"


def test_a_model_whose_logits_are_not_its_head_keeps_full_logits(demo_model_dir, tmp_path):
    cfg = load_stages([write_config(tmp_path)])[0].config
    model = lora(load_demo(demo_model_dir))
    original = type(model).__call__

    class Capped(type(model)):
        def __call__(self, *args, **kwargs):
            return mx.tanh(original(self, *args, **kwargs) / 30.0) * 30.0  # a soft cap after the head

    model.__class__ = Capped
    plan = plan_compute(model, cfg, 1, PREFIXED)
    assert not plan.sparse_logits and "soft cap" in choice(plan, "sparse logits").reason
    assert choice(plan, "shared prefix").reason == "needs sparse logits"


def test_the_plan_travels_in_the_run_started_event_and_reads_back():
    plan = (LeverChoice("fast SiLU", True, "4 MLPs"), LeverChoice("shared prefix", False, "shared_prefix: false"))
    event = RunStarted(run_dir="r", adapter_dir="a", stage=1, stages=1, config_file="c.yaml", model="m",
                       fine_tune_type="lora", prompt_loss_weight=0.0, total_steps=1, steps_per_epoch=1,
                       train_examples=1, valid_examples=0, trainable_params=1, total_params=2, device="CPU",
                       compute_dtype="float32", compute_plan=plan)
    data = event.to_dict()
    assert data["compute_plan"][0] == {"name": "fast SiLU", "on": True, "reason": "4 MLPs"}
    assert event_from_dict(data).compute_plan == plan
    data["compute_plan"][1]["added_later"] = 1  # a field a newer tuner may write: ignored, not fatal
    assert event_from_dict(data).compute_plan == plan


BLAS_PROBE = (
    "import numpy\n"  # numpy maps an OpenBLAS of its own: the check must not take it for MLX's
    "from engine.levers.platform_check import blas_notice, mlx_blas_library\n"
    "print(mlx_blas_library()); print(blas_notice() is None)\n"
)


def test_the_blas_check_reads_the_library_mlx_resolved_not_numpys():
    """On Linux the mlx[cpu] wheel's own BLAS is the reference one (warned about) and a preloaded
    OpenBLAS is what MLX then calls; elsewhere (Accelerate) there is nothing to check."""
    def probe(preload: str) -> list[str]:
        env = dict(os.environ, LD_PRELOAD=preload)
        done = subprocess.run([sys.executable, "-c", BLAS_PROBE], capture_output=True, text=True, cwd=REPO,
                              env=env, check=True)
        return done.stdout.split()

    if not sys.platform.startswith("linux"):
        assert probe("") == ["None", "True"]
        return
    library, fast = probe("")
    assert "mlx_cpu.libs" in library and "openblas" not in library.lower() and fast == "False"
    if openblas_path() is not None:  # CI installs it
        library, fast = probe(openblas_path())
        assert library == openblas_path() and fast == "True"
