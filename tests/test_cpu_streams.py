"""A batch's rows split over CPU streams: the whole batch's loss and gradients, a split only where
it can pay, the BLAS threads shared out while a step runs and given back after."""

import dataclasses
import json
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.levers import cpu_streams
from engine import events as ev
from engine.config import load_stages
from engine.levers.cpu_streams import UNBOUNDED_WIDTH, WIDTH_VARIABLE, BlasThreads, RowStreams
from engine.training.chain import run_chain
from engine.training.distributed import World
from engine.training.loss_path import choose_loss
from engine.training.prepare import prepare_stage
from engine.training.step import compile_step
from tests.conftest import REPO, planned, write_config

ON_CPU = mx.default_device() == mx.cpu


class FakeBlas:
    """OpenBLAS's thread count as a number, every change recorded."""

    def __init__(self, threads: int):
        self.threads, self.history = threads, []

    def get(self) -> int:
        return self.threads

    def set(self, n: int) -> None:
        self.threads = n
        self.history.append(n)


def two_streams(blas=None) -> RowStreams:
    return RowStreams(2, blas, 1, [mx.new_stream(mx.cpu) for _ in range(2)])


@pytest.fixture
def splittable(monkeypatch):
    """A machine where the plan splits: two cores, OpenBLAS (a fake one), MLX's wide order."""
    blas = FakeBlas(2)
    monkeypatch.setattr(BlasThreads, "find", staticmethod(lambda: BlasThreads(blas.get, blas.set)))
    monkeypatch.setattr(cpu_streams, "available_cores", lambda: 2)
    monkeypatch.setenv(WIDTH_VARIABLE, str(UNBOUNDED_WIDTH))
    return blas


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
def test_split_rows_give_the_whole_batch_loss_and_gradients(tmp_path, plw, sparse):
    stage = load_stages([write_config(tmp_path, prompt_loss_weight=plw, sparse_logits=sparse, batch_size=4,
                                      val_batches=0)])[0]
    cfg, world = stage.config, World()
    prepared = prepare_stage(stage, world)
    batch = prepared.stream.next()
    seen = {}
    for name, rows in (("whole", RowStreams()), ("split", two_streams())):
        loss_path = choose_loss(cfg.plw, world.size, dataclasses.replace(prepared.levers, row_streams=rows))
        step = compile_step(prepared.model, prepared.optimizer, loss_path, world, cfg.grad_accumulation_steps,
                            cfg.max_grad_norm)
        parts = loss_path.inputs(batch)
        loss, aux, grad, norm = step.compute(parts, None, True)
        seen[name] = len(parts), loss.item(), np.array(aux), dict(tree_flatten(grad))
    (n_whole, loss_whole, aux_whole, grad_whole), (n_split, loss_split, aux_split, grad_split) = seen.values()
    assert (n_whole, n_split) == (1, 2)
    assert loss_split == pytest.approx(loss_whole, rel=1e-5)
    np.testing.assert_allclose(aux_split, aux_whole, rtol=1e-5)  # weight sum, prompt and completion CE sums and counts
    assert sorted(grad_split) == sorted(grad_whole)
    assert max(mx.abs(g).max().item() for g in grad_whole.values()) > 0
    for key, g in grad_whole.items():
        np.testing.assert_allclose(np.array(grad_split[key]), np.array(g), rtol=1e-3, atol=1e-6, err_msg=key)


def test_a_split_run_trains_as_a_whole_one(tmp_path, monkeypatch, splittable):
    """Two steps over seven examples, batch 4: the first batch splits, the last one's three rows run
    whole; losses and adapters as with ``cpu_streams: 1``, the BLAS threads back at the end."""
    data = tmp_path / "seven"
    data.mkdir()
    chats = [{"messages": [{"role": "user", "content": f"Count to {n}."},
                           {"role": "assistant", "content": " ".join(str(i) for i in range(1, n + 1))}]}
             for n in range(2, 9)]
    (data / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    runs = {}
    for streams in (1, 2):
        folder = tmp_path / f"streams-{streams}"
        folder.mkdir()
        seen = []
        config = write_config(folder, data=str(data), iters=None, epochs=1, batch_size=4, val_batches=0,
                              steps_per_report=1, cpu_streams=streams, prompt_loss_weight=0.1,
                              optimizer="sgd", learning_rate=0.5)  # updates linear in the gradients
        [result] = run_chain(load_stages([config]), seen.append)
        adapters = mx.load(str(result.adapter_dir / "adapters.safetensors"))
        runs[streams] = seen, adapters
    (seen_whole, adapters_whole), (seen_split, adapters_split) = runs[1], runs[2]
    assert not planned(seen_whole, "CPU streams").on and planned(seen_whole, "CPU streams").reason == "cpu_streams: 1"
    assert planned(seen_split, "CPU streams").on == ON_CPU
    losses = [[e.loss for e in seen if isinstance(e, ev.TrainReport)] for seen in (seen_whole, seen_split)]
    assert len(losses[0]) == 2
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert sorted(adapters_split) == sorted(adapters_whole)
    assert max(mx.abs(v).max().item() for k, v in adapters_whole.items() if "lora_b" in k) > 1e-3  # B starts at 0
    for key, value in adapters_whole.items():
        np.testing.assert_allclose(np.array(adapters_split[key]), np.array(value), rtol=1e-3, atol=1e-6, err_msg=key)
    assert splittable.threads == 2
    assert splittable.history == ([1, 2, 1, 2] if ON_CPU else [])  # one split step, one whole; both given back


def test_the_plan_splits_only_where_it_can_pay(monkeypatch, splittable):
    assert RowStreams.plan(2, 4).count == (2 if ON_CPU else 1)
    assert RowStreams.plan(2, 3).count == 1  # rows that do not split evenly
    assert RowStreams.plan(1, 4).count == 1  # cpu_streams: 1
    monkeypatch.setattr(cpu_streams, "available_cores", lambda: 8)
    assert RowStreams.plan(2, 4).threads_each == (4 if ON_CPU else 0)
    monkeypatch.setattr(cpu_streams, "available_cores", lambda: 1)
    assert RowStreams.plan(2, 4).count == 1
    monkeypatch.setattr(cpu_streams, "available_cores", lambda: 2)
    monkeypatch.setattr(BlasThreads, "find", staticmethod(lambda: None))  # no OpenBLAS to share out
    assert RowStreams.plan(2, 4).count == 1
    monkeypatch.setattr(BlasThreads, "find", staticmethod(lambda: BlasThreads(splittable.get, splittable.set)))
    monkeypatch.setenv(WIDTH_VARIABLE, "20")  # MLX's default order: the streams would take turns
    assert RowStreams.plan(2, 4).count == 1
    monkeypatch.setenv(WIDTH_VARIABLE, "wide")  # not a number: no split, and no crash
    assert RowStreams.plan(2, 4).count == 1


def test_parts_are_contiguous_rows_or_the_whole_batch():
    rows = two_streams()
    assert rows.parts(4) == [slice(0, 2), slice(2, 4)]
    assert rows.parts(3) == [slice(0, 3)]
    assert RowStreams().parts(4) == [slice(0, 4)]


def test_running_shares_the_blas_threads_out_and_gives_them_back():
    blas = FakeBlas(2)
    rows = two_streams(BlasThreads(blas.get, blas.set))
    with rows.running():
        assert blas.threads == 1
    assert blas.threads == 2
    with pytest.raises(RuntimeError), rows.running():
        raise RuntimeError("a step failed")
    assert blas.threads == 2 and blas.history == [1, 2, 1, 2]
    with RowStreams().running():  # no split: the count is not touched
        pass
    assert blas.history == [1, 2, 1, 2]


def test_adding_up_runs_each_part_on_its_own_stream():
    rows = two_streams()
    streams = []

    def part(x):
        streams.append(mx.default_stream(mx.default_device()))
        y = x * 2.0
        return {"sum": y.sum(), "rows": [y[:, 0]]}

    total = rows.add_up(part, [mx.ones((2, 3)), mx.full((2, 3), 3.0)])
    assert streams == rows.streams
    assert total["sum"].item() == pytest.approx(2 * 6 + 6 * 6)
    np.testing.assert_array_equal(np.array(total["rows"][0]), [8.0, 8.0])


@pytest.mark.parametrize("preset, expected", [(None, str(UNBOUNDED_WIDTH) if ON_CPU else "None"), ("7", "7")])
def test_preparing_the_process_widens_the_eval_order_on_the_cpu(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != WIDTH_VARIABLE}
    if preset is not None:
        env[WIDTH_VARIABLE] = preset
    code = ("import os; from engine.levers.process import prepare_process; prepare_process(); "
            f"print(os.environ.get({WIDTH_VARIABLE!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
