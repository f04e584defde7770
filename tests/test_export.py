"""Export to GGUF (and mlx, LM Studio): round trips on a tiny LoRA run.

The references share no code with engine/export: the ``gguf`` package reads the file back (names,
shapes, types, metadata, dequantized values), mlx-lm's fuse gives the fused model the file must
hold, tuner's importer (engine/model/gguf.py) turns the file back into an mlx-lm folder, and
test_gguf's numpy Llama runs the file's tensors as llama.cpp lays them out (q/k rows permuted,
RoPE on adjacent pairs), so the permutation is checked against llama.cpp's convention itself.
"""

from __future__ import annotations

import json
import os

import gguf
import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from engine.errors import UserError
from engine.export import check_exportable, export_run
from engine.model.demo import CHAT_TEMPLATE
from engine.model.gguf import import_gguf

from .conftest import write_config
from .test_gguf import mlx_logits, reference_logits

PROMPTS = ["<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
           "The quick brown fox jumps over the lazy dog.", "12 + 30 = 42"]
LAYER_KINDS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_model_dir):
    """A finished tiny LoRA run with checkpoints at steps 2 and 4, its adapter clearly non-zero."""
    from engine.config import load_stages
    from engine.training.chain import run_chain

    folder = tmp_path_factory.mktemp("export-run")
    config = write_config(folder, iters=4, save_every=2, steps_per_eval=100, val_batches=1, batch_size=4,
                          learning_rate=1e-2, lora_parameters={"rank": 4, "scale": 2.0, "dropout": 0.0})
    [result] = run_chain(load_stages([config]), lambda event: None)
    assert result.status == "completed"
    return result.run_dir


@pytest.fixture(scope="module")
def fused_dir(run, demo_model_dir, tmp_path_factory):
    """mlx-lm's fuse of the run's final adapter, the model every export must reproduce."""
    from engine.model.load import fuse

    return fuse(str(demo_model_dir), run / "adapters", tmp_path_factory.mktemp("fused") / "model")


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """The run's final adapter as GGUF files of each type, with the progress each export reported."""
    folder = tmp_path_factory.mktemp("gguf")
    files, progress = {}, {}
    for quant in ("f16", "q8_0", "f32"):
        seen = []
        files[quant] = export_run(run, "gguf", folder / f"model-{quant}.gguf", quant=quant,
                                  progress=lambda what, fraction: seen.append((what, fraction)))
        progress[quant] = seen
    return files, progress


def token_ids(folder, text: str) -> list[int]:
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(folder).encode(text, add_special_tokens=False)


def fused_weights(fused_dir) -> dict[str, np.ndarray]:
    return {name: np.array(array.astype(mx.float32)) for name, array in mx.load(str(fused_dir / "model.safetensors")).items()}


def llama_cpp_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for a q/k projection, written out index by index: in head h, HF row i
    of the first half goes to row 2i, row i of the second half to row 2i + 1."""
    head_dim = weight.shape[0] // heads
    out = np.empty_like(weight)
    for h in range(heads):
        for i in range(head_dim // 2):
            out[h * head_dim + 2 * i] = weight[h * head_dim + i]
            out[h * head_dim + 2 * i + 1] = weight[h * head_dim + head_dim // 2 + i]
    return out


# --- the file, read by the gguf package ---------------------------------------------------------


def test_the_adapter_changes_the_model(fused_dir, demo_model_dir):
    """Otherwise every comparison below could pass on the base model alone."""
    ids = token_ids(demo_model_dir, PROMPTS[0])
    assert np.abs(mlx_logits(fused_dir, ids) - mlx_logits(demo_model_dir, ids)).max() > 0.05


def test_gguf_holds_the_fused_tensors_in_llama_cpp_layout(exported, fused_dir):
    files, _ = exported
    reader = gguf.GGUFReader(files["f16"])
    config = json.loads((fused_dir / "config.json").read_text())
    expected = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{kind}.weight" for i in range(config["num_hidden_layers"]) for kind in LAYER_KINDS}
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == expected
    for name, tensor in tensors.items():
        assert tensor.tensor_type == (Q.F32 if name.endswith("norm.weight") else Q.F16), name
    fused = fused_weights(fused_dir)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    for i in range(config["num_hidden_layers"]):
        for kind, mlx_name in (("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
                               ("ffn_down", "mlp.down_proj")):
            want = fused[f"model.layers.{i}.{mlx_name}.weight"]
            if kind in heads:
                want = llama_cpp_rows(want, heads[kind])
            got = np.array(tensors[f"blk.{i}.{kind}.weight"].data, dtype=np.float32)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want.astype(np.float16).astype(np.float32), rtol=0, atol=0)
    np.testing.assert_array_equal(np.array(tensors["output_norm.weight"].data), fused["model.norm.weight"])


def test_gguf_metadata_carries_the_tokenizer_and_chat_template(exported, demo_tokenizer, run):
    files, _ = exported
    fields = {name: field.contents() for name, field in gguf.GGUFReader(files["q8_0"]).fields.items()}
    hf = demo_tokenizer._tokenizer
    assert fields["general.architecture"] == "llama"
    assert fields["general.name"] == f"{run.name}-step4"
    assert fields["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert fields["tokenizer.ggml.tokens"] == [hf.convert_ids_to_tokens(i) for i in range(len(hf))]
    assert fields["tokenizer.ggml.eos_token_id"] == hf.convert_tokens_to_ids("<|im_end|>")
    assert fields["tokenizer.ggml.padding_token_id"] == hf.convert_tokens_to_ids("<|endoftext|>")
    assert "tokenizer.ggml.bos_token_id" not in fields and fields["tokenizer.ggml.add_bos_token"] is False
    specials = {hf.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert {i for i, kind in enumerate(fields["tokenizer.ggml.token_type"]) if kind == gguf.TokenType.CONTROL} == specials
    merges = json.loads(hf.backend_tokenizer.to_str())["model"]["merges"]
    assert fields["tokenizer.ggml.merges"] == [" ".join(m) for m in merges]
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert fields["llama.context_length"] == 1024 and fields["llama.attention.head_count_kv"] == 2


def test_q8_0_blocks_hold_the_weights_to_int8_precision(exported, fused_dir):
    files, _ = exported
    tensors = {t.name: t for t in gguf.GGUFReader(files["q8_0"]).tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == Q.Q8_0
    assert tensors["token_embd.weight"].tensor_type == Q.Q8_0
    got = gguf.quants.dequantize(tensors["blk.0.ffn_up.weight"].data, Q.Q8_0).reshape(-1, 32)
    want = fused_weights(fused_dir)["model.layers.0.mlp.up_proj.weight"].reshape(-1, 32)
    # Q8_0 by its definition: per block of 32, scale d = max|x| / 127 stored as float16, q = round(x / d)
    d = np.abs(want).max(-1, keepdims=True) / 127
    reference = np.round(want / d) * d.astype(np.float16).astype(np.float32)
    step = d.astype(np.float16).astype(np.float32)
    assert (np.abs(got - reference) <= step * 1.001).all()  # a tie may round the other way
    assert (np.abs(got - reference) < step * 1e-3).mean() > 0.999


# --- the file, run: tuner's importer and a numpy Llama ------------------------------------------


@pytest.mark.parametrize("quant, tolerance", [("f32", 1e-4), ("f16", 2e-2), ("q8_0", 0.15)])
def test_importer_reads_back_the_fused_logits(exported, fused_dir, tmp_path, quant, tolerance):
    files, _ = exported
    imported = import_gguf(files[quant], tmp_path / "imported")
    for prompt in PROMPTS:
        ids = token_ids(fused_dir, prompt)
        assert token_ids(imported, prompt) == ids  # the tokenizer survives the trip too
        ours, want = mlx_logits(imported, ids), mlx_logits(fused_dir, ids)
        assert np.abs(ours - want).max() < tolerance * np.abs(want).max(), prompt
        assert (ours.argmax(-1) == want.argmax(-1)).mean() >= (1.0 if quant != "q8_0" else 0.9)


def test_llama_cpp_layout_computes_the_fused_logits(exported, fused_dir):
    """The numpy Llama reads the file as llama.cpp does: a wrong q/k permutation breaks this."""
    files, _ = exported
    for prompt in PROMPTS:
        ids = token_ids(fused_dir, prompt)
        want, ref = mlx_logits(fused_dir, ids), reference_logits(files["f32"], ids)
        np.testing.assert_allclose(ref, want, atol=2e-3 * np.abs(want).max())


def test_progress_runs_from_start_to_done(exported):
    _, progress = exported
    fractions = [fraction for _, fraction in progress["f16"]]
    assert fractions[0] == 0.0 and progress["f16"][-1] == ("done", 1.0)
    assert fractions == sorted(fractions) and len(fractions) > 10  # one step per tensor written
    assert any("GGUF" in what for what, _ in progress["f16"])


# --- checkpoints, mlx and LM Studio -------------------------------------------------------------


def test_a_checkpoint_exports_its_own_weights(run, exported, tmp_path):
    files, _ = exported
    step2 = export_run(run, "gguf", tmp_path / "step2.gguf", checkpoint=2, quant="f32")
    ours = {t.name: np.array(t.data) for t in gguf.GGUFReader(step2).tensors}
    final = {t.name: np.array(t.data) for t in gguf.GGUFReader(files["f32"]).tensors}
    assert not np.array_equal(ours["blk.0.attn_q.weight"], final["blk.0.attn_q.weight"])
    step4 = export_run(run, "gguf", tmp_path / "step4.gguf", checkpoint=4, quant="f32")
    same = {t.name: np.array(t.data) for t in gguf.GGUFReader(step4).tensors}
    assert all(np.array_equal(same[name], final[name]) for name in final)  # the final adapter is step 4's


def test_mlx_export_is_the_fused_folder(run, fused_dir, tmp_path):
    out = export_run(run, "mlx", tmp_path / "fused")
    ids = token_ids(fused_dir, PROMPTS[1])
    np.testing.assert_array_equal(mlx_logits(out, ids), mlx_logits(fused_dir, ids))
    assert (out / "tokenizer_config.json").is_file() and (out / "config.json").is_file()


def test_lmstudio_layout(run, tmp_path):
    out = export_run(run, "lmstudio", tmp_path / "models", quant="q8_0")
    [file] = list(out.rglob("*.gguf"))
    assert file.relative_to(out).parts == ("tuner", f"{run.name}-step4", f"{run.name}-step4-Q8_0.gguf")
    assert gguf.GGUFReader(file).fields["tokenizer.chat_template"].contents() == CHAT_TEMPLATE


def test_a_quantized_base_exports_dequantized(run, demo_model_dir, tmp_path):
    """QLoRA: the adapter trained on a 4-bit base; the GGUF holds dequantize(base) + the update."""
    from mlx.utils import tree_map
    from mlx_lm.utils import load, quantize_model, save

    from engine.config import load_stages
    from engine.model.load import cast_model
    from engine.training.chain import run_chain

    model, tokenizer, config = load(str(demo_model_dir), return_config=True)
    model.update(tree_map(lambda v: v.astype(mx.bfloat16), model.parameters()))
    model, config = quantize_model(model, config, 32, 4)
    save(tmp_path / "q4", str(demo_model_dir), model, tokenizer, config)
    yaml = write_config(tmp_path, model=str(tmp_path / "q4"), iters=2, steps_per_eval=100, val_batches=1,
                        batch_size=4, learning_rate=1e-2, lora_parameters={"rank": 4, "scale": 2.0, "dropout": 0.0})
    [result] = run_chain(load_stages([yaml]), lambda event: None)
    out = export_run(result.run_dir, "gguf", tmp_path / "q4.gguf", quant="f32")
    imported = import_gguf(out, tmp_path / "imported")
    adapted, _ = load(str(tmp_path / "q4"), adapter_path=str(result.run_dir / "adapters"))
    cast_model(adapted, mx.float32)  # what training computed: the dequantized base plus the adapter
    ids = token_ids(imported, PROMPTS[0])
    want = np.array(adapted(mx.array([ids]))[0])
    np.testing.assert_allclose(mlx_logits(imported, ids), want, atol=2e-3 * np.abs(want).max())
    assert "quantization" not in json.loads((imported / "config.json").read_text())
    folder = export_run(result.run_dir, "mlx", tmp_path / "dequantized", quant="dequantize")
    assert "quantization" not in json.loads((folder / "config.json").read_text())
    assert {a.dtype for a in mx.load(str(folder / "model.safetensors")).values()} == {mx.bfloat16}  # the base's
    np.testing.assert_allclose(mlx_logits(folder, ids), want, atol=3e-2 * np.abs(want).max())


# --- refusals: one line, before any work, nothing left behind -----------------------------------


def test_existing_out_is_never_overwritten(run, tmp_path):
    for existing in (tmp_path / "taken.gguf", tmp_path / "taken-folder"):
        if existing.suffix:
            existing.write_text("mine")
        else:
            existing.mkdir()
        with pytest.raises(UserError, match="already exists") as error:
            export_run(run, "gguf", existing)
        assert str(existing) in str(error.value) and "\n" not in str(error.value)
    assert (tmp_path / "taken.gguf").read_text() == "mine" and not any((tmp_path / "taken-folder").iterdir())


def test_unknown_checkpoint_lists_the_saved_ones(run, tmp_path):
    with pytest.raises(UserError, match=r"no checkpoint at step 3 \(saved steps: 2, 4\)"):
        check_exportable(run, "gguf", checkpoint=3)
    with pytest.raises(UserError, match="saved steps: 2, 4"):
        export_run(run, "ollama", tmp_path / "out", checkpoint=3)
    assert not (tmp_path / "out").exists()


def fake_run(tmp_path, run, config: dict):
    """A run folder whose adapter names a base with this ``config.json`` (and the tiny tokenizer)."""
    import shutil

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(config))
    folder = tmp_path / "run"
    shutil.copytree(run / "adapters", folder / "adapters")
    settings = json.loads((folder / "adapters" / "adapter_config.json").read_text())
    (folder / "adapters" / "adapter_config.json").write_text(json.dumps({**settings, "model": str(base)}))
    return folder


@pytest.mark.parametrize("config, message", [
    ({"model_type": "qwen2"}, "model type 'qwen2' cannot be exported to GGUF; tuner exports the Llama family"),
    ({"model_type": "llama", "num_attention_heads": 4, "hidden_size": 128,
      "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "RoPE scaling"),
])
def test_an_unsupported_base_is_refused_before_any_work(run, tmp_path, monkeypatch, config, message):
    folder = fake_run(tmp_path, run, config)
    monkeypatch.setattr("engine.export.fused.fused_float32", lambda *a: pytest.fail("worked before refusing"))
    for to in ("gguf", "ollama", "lmstudio"):
        with pytest.raises(UserError, match=message) as error:
            export_run(folder, to, tmp_path / "out")
        assert "\n" not in str(error.value)
    check_exportable(folder, "mlx")  # fusing into an mlx-lm folder works for any base mlx-lm loads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "run"]


def test_a_run_without_an_adapter_is_refused(tmp_path):
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(UserError, match="no trained adapter to export"):
        check_exportable(tmp_path / "empty-run", "gguf")
    with pytest.raises(UserError, match="no such run folder"):
        check_exportable(tmp_path / "missing", "mlx")


def test_a_failure_midway_leaves_nothing(run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("engine.export.gguf_writer.write_gguf", broken)
    with pytest.raises(OSError):
        export_run(run, "ollama", tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_progress_can_cancel_and_leaves_nothing(run, tmp_path):
    class Cancelled(Exception):
        pass

    def cancel_halfway(what, fraction):
        if fraction > 0.5:
            raise Cancelled

    with pytest.raises(Cancelled):
        export_run(run, "lmstudio", tmp_path / "models", progress=cancel_halfway)
    assert os.listdir(tmp_path) == []


def test_wrong_quant_and_target_are_one_line(run, tmp_path):
    with pytest.raises(UserError, match="--quant 'q4_0' does not go with --to gguf; choose one of f16, q8_0, f32"):
        export_run(run, "gguf", tmp_path / "x.gguf", quant="q4_0")
    with pytest.raises(UserError, match="--quant 'f16' does not go with --to mlx"):
        export_run(run, "mlx", tmp_path / "x", quant="f16")
    with pytest.raises(UserError, match="unknown target 'onnx'"):
        check_exportable(run, "onnx")


@pytest.mark.parametrize("pre", ["gpt-2", "smollm", "llama-bpe"])
def test_the_split_named_is_the_one_the_importer_rebuilds(pre, tmp_path):
    """Each tokenizer.ggml.pre the export writes, read back by the importer, is the same split."""
    from tokenizers import Tokenizer, decoders, models

    from engine.export.gguf_vocab import pre_tokenizer_name
    from engine.model.gguf_tokenizer import _pre_tokenizer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = _pre_tokenizer(tmp_path, pre)
    tokenizer.decoder = decoders.ByteLevel()
    assert pre_tokenizer_name(json.loads(tokenizer.to_str())) == pre


def test_a_sentencepiece_tokenizer_is_refused(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from engine.export.gguf_vocab import check_tokenizer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    with pytest.raises(UserError, match="tokenizer is not one tuner can export to GGUF; supported: byte-level BPE"):
        check_tokenizer(json.loads(tokenizer.to_str()), "base")
