"""GGUF import: a tiny synthetic file with every supported tensor type, and SmolLM2-135M for real.

The references here share no code with engine/model/gguf*.py: the ``gguf`` package (llama.cpp's
own Python reader) reads and dequantizes the raw bytes, a numpy Llama runs on the tensors
in llama.cpp's layout (q/k rows as stored, RoPE rotating adjacent pairs), so it checks the
row unpermutation independently, and a plain-Python BPE splits text the way llama.cpp does.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
import regex
from gguf import GGMLQuantizationType as Q

from engine.errors import UserError
from engine.model.gguf import ensure_imported, fetch_smollm2, import_gguf

# --- references -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def gguf_reader(path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(path)  # parsing SmolLM2's header takes seconds in pure Python


def read_metadata(path: Path) -> dict:
    return {name: field.contents() for name, field in gguf_reader(path).fields.items()}


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """float32 tensors, dequantized from the raw bytes by the gguf package."""
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32) for t in gguf_reader(path).tensors}


def reference_logits(path: Path, ids: list[int]) -> np.ndarray:
    """Llama forward pass in numpy, on the weights exactly as llama.cpp stores and uses them."""
    meta, w = read_metadata(path), read_tensors(path)
    heads, kv_heads = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    eps, base = meta["llama.attention.layer_norm_rms_epsilon"], meta.get("llama.rope.freq_base", 10000.0)
    x = w["token_embd.weight"][ids]
    steps, hidden = x.shape
    head_dim = hidden // heads
    angles = np.arange(steps)[:, None, None] * base ** (-np.arange(0, head_dim, 2) / head_dim)
    cos, sin = np.cos(angles), np.sin(angles)

    def rope(t):  # llama.cpp's "normal" RoPE: dimensions 2i and 2i+1 rotate together
        even, odd = t[..., 0::2], t[..., 1::2]
        out = np.empty_like(t)
        out[..., 0::2], out[..., 1::2] = even * cos - odd * sin, even * sin + odd * cos
        return out

    def norm(v, weight):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * weight

    causal = np.triu(np.full((steps, steps), -np.inf), 1)
    for i in range(meta["llama.block_count"]):
        p = {kind: w[f"blk.{i}.{kind}.weight"] for kind in (
            "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
        h = norm(x, p["attn_norm"])
        q = rope((h @ p["attn_q"].T).reshape(steps, heads, head_dim))
        k = rope((h @ p["attn_k"].T).reshape(steps, kv_heads, head_dim))
        v = (h @ p["attn_v"].T).reshape(steps, kv_heads, head_dim)
        k, v = (np.repeat(t, heads // kv_heads, axis=1) for t in (k, v))  # query head j reads kv head j // group
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(head_dim) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", probs, v).reshape(steps, hidden) @ p["attn_output"].T
        h = norm(x, p["ffn_norm"])
        gate = h @ p["ffn_gate"].T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ p["ffn_up"].T)) @ p["ffn_down"].T
    return norm(x, w["output_norm.weight"]) @ w.get("output.weight", w["token_embd.weight"]).T


def mlx_logits(folder: Path, ids: list[int]) -> np.ndarray:
    """Logits of the imported folder as tuner runs it on the CPU: loaded by mlx-lm, in float32."""
    from mlx_lm.utils import load

    from engine.model.load import cast_model

    model, _ = load(str(folder))
    cast_model(model, mx.float32)
    return np.array(model(mx.array([ids]))[0], dtype=np.float64)


def assert_logits_match(folder: Path, path: Path, ids: list[int]) -> None:
    ours, ref = mlx_logits(folder, ids), reference_logits(path, ids)
    assert ours.shape == ref.shape
    # float16 rounding of the weights is the only difference allowed
    assert np.abs(ours - ref).max() < 1e-2 * np.abs(ref).max()
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def gpt2_byte_chars() -> list[str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest move to 256+."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# llama.cpp applies these one after another; each splits the pieces of the previous one
LLAMA_CPP_SPLITS = {"gpt-2": [GPT2_REGEX], "smollm": [r"\p{N}", GPT2_REGEX]}


class ReferenceBPE:
    """Byte-level BPE straight from the file's tokens and merges, split as llama.cpp splits."""

    def __init__(self, path: Path):
        meta = read_metadata(path)
        tokens = meta["tokenizer.ggml.tokens"]
        self.ids = {token: i for i, token in enumerate(tokens)}
        self.ranks = {tuple(m.split(" ")): rank for rank, m in enumerate(meta["tokenizer.ggml.merges"])}
        specials = [t for t, kind in zip(tokens, meta["tokenizer.ggml.token_type"]) if kind in (3, 4)]
        self.special = regex.compile("(" + "|".join(map(regex.escape, sorted(specials, key=len, reverse=True))) + ")")
        self.patterns = LLAMA_CPP_SPLITS[meta["tokenizer.ggml.pre"]]
        self.chars = gpt2_byte_chars()

    def encode(self, text: str) -> list[int]:
        ids = []
        for i, part in enumerate(self.special.split(text)):
            if i % 2:  # a special token, matched before any splitting
                ids.append(self.ids[part])
                continue
            for piece in self.split(part):
                ids += [self.ids[t] for t in self.merge([self.chars[b] for b in piece.encode()])]
        return ids

    def split(self, text: str) -> list[str]:
        pieces = [text]
        for pattern in self.patterns:
            out = []
            for piece in pieces:
                end = 0
                for match in regex.finditer(pattern, piece):
                    out += [piece[end : match.start()]] if match.start() > end else []
                    out.append(match.group())
                    end = match.end()
                out += [piece[end:]] if end < len(piece) else []
            pieces = out
        return pieces

    def merge(self, parts: list[str]) -> list[str]:
        while len(parts) > 1:
            rank, i = min((self.ranks.get(pair, float("inf")), i) for i, pair in enumerate(zip(parts, parts[1:])))
            if rank == float("inf"):
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        return parts


# --- a tiny synthetic GGUF ------------------------------------------------------------------

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "Ġ t", "Ġt he", "Ġ w", "o r", "Ġw or"]
TOKENS = SPECIALS + gpt2_byte_chars() + [m.replace(" ", "") for m in MERGES]
HIDDEN, FFN, HEADS, KV_HEADS = 64, 96, 4, 2
LAYER_SHAPES = {
    "attn_q": (HIDDEN, HIDDEN), "attn_k": (KV_HEADS * 16, HIDDEN), "attn_v": (KV_HEADS * 16, HIDDEN),
    "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN),
    "attn_norm": (HIDDEN,), "ffn_norm": (HIDDEN,),
}
# Every supported type, mixed: 8 Q4 modules and 5 Q8 ones (the default bits are then 4).
TINY_TYPES = {
    "token_embd": Q.F16, "output": Q.Q8_0, "output_norm": Q.F32,
    **{f"blk.{i}.{kind}": Q.F32 for i in range(2) for kind in ("attn_norm", "ffn_norm")},
    "blk.0.attn_q": Q.Q4_0, "blk.0.attn_k": Q.Q8_0, "blk.0.attn_v": Q.Q4_1, "blk.0.attn_output": Q.F16,
    "blk.0.ffn_gate": Q.Q4_0, "blk.0.ffn_up": Q.Q8_0, "blk.0.ffn_down": Q.Q4_1,
    "blk.1.attn_q": Q.Q8_0, "blk.1.attn_k": Q.Q4_1, "blk.1.attn_v": Q.Q4_0, "blk.1.attn_output": Q.Q8_0,
    "blk.1.ffn_gate": Q.F32, "blk.1.ffn_up": Q.Q4_1, "blk.1.ffn_down": Q.Q4_0,
}
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def write_tiny_gguf(path: Path, arch: str = "llama", tokenizer: str = "gpt2", add_bos: bool = False, **types) -> Path:
    """A 2-layer Llama GGUF with random weights; ``types`` overrides TINY_TYPES (None drops a tensor)."""
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(500.0)
    writer.add_tokenizer_model(tokenizer)
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(TOKENS) - len(SPECIALS)))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHATML)
    if add_bos:
        writer.add_add_bos_token(True)
    shapes = {"token_embd": (len(TOKENS), HIDDEN), "output": (len(TOKENS), HIDDEN), "output_norm": (HIDDEN,)}
    shapes |= {f"blk.{i}.{kind}": shape for i in range(2) for kind, shape in LAYER_SHAPES.items()}
    for stem, kind in (TINY_TYPES | types).items():
        if kind is None:
            continue
        shape = shapes.get(stem, (HIDDEN,))
        if len(shape) == 1:
            values = 1 + 0.1 * rng.standard_normal(shape)
        else:
            values = rng.standard_normal(shape) * (1 if stem == "token_embd" else shape[1] ** -0.5)
        values = values.astype(np.float32)
        if kind == Q.F32:
            writer.add_tensor(f"{stem}.weight", values)
        elif kind == Q.F16:
            writer.add_tensor(f"{stem}.weight", values.astype(np.float16))
        else:
            writer.add_tensor(f"{stem}.weight", gguf.quants.quantize(values, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


TINY_IDS = [1, 40, 99, 262, 5, 264, 100, 2]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("dequantize", [False, True], ids=["quantized", "dequantized"])
def test_tiny_gguf_round_trips(tmp_path, tied, dequantize):
    types = {"output": None, "token_embd": Q.Q4_0} if tied else {}
    path = write_tiny_gguf(tmp_path / "tiny.gguf", **types)
    folder = import_gguf(path, tmp_path / "model", dequantize=dequantize)
    config = json.loads((folder / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied
    assert config["vocab_size"] == len(TOKENS)
    assert ("quantization" in config) is not dequantize
    assert_logits_match(folder, path, TINY_IDS)


def test_tiny_gguf_quantization_config(tiny_gguf, tmp_path):
    """The Q8 modules are named in config.json, and mlx-lm builds each layer as stored."""
    import mlx.nn as nn
    from mlx_lm.utils import load

    folder = import_gguf(tiny_gguf, tmp_path / "model")
    quantization = json.loads((folder / "config.json").read_text())["quantization"]
    eight = {"group_size": 32, "bits": 8}
    assert quantization == {
        "group_size": 32, "bits": 4, "lm_head": eight,
        "model.layers.0.self_attn.k_proj": eight, "model.layers.0.mlp.up_proj": eight,
        "model.layers.1.self_attn.q_proj": eight, "model.layers.1.self_attn.o_proj": eight,
    }
    model, _ = load(str(folder))
    layer0, layer1 = model.model.layers
    assert (layer0.self_attn.q_proj.bits, layer0.self_attn.k_proj.bits, model.lm_head.bits) == (4, 8, 8)
    assert type(layer0.self_attn.o_proj) is nn.Linear and type(layer1.mlp.gate_proj) is nn.Linear
    assert type(model.model.embed_tokens) is nn.Embedding
    assert model.model.norm.weight.dtype == mx.float16  # float tensors share the scales' dtype


def test_bos_is_added_when_the_file_says_so(tmp_path):
    from mlx_lm.utils import load_tokenizer

    folder = import_gguf(write_tiny_gguf(tmp_path / "bos.gguf", add_bos=True), tmp_path / "model")
    tokenizer = load_tokenizer(folder)
    assert tokenizer.encode("the") == [1, 119, 259]
    assert tokenizer.encode("the", add_special_tokens=False) == [119, 259]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "the"}], add_generation_prompt=True)
    assert chat[:2] == [1, TOKENS.index("u")]  # the template's own <|im_start|>, not a second one


def test_tiny_gguf_tokenizer(tiny_gguf, tmp_path):
    from mlx_lm.utils import load_tokenizer

    folder = import_gguf(tiny_gguf, tmp_path / "model")
    tokenizer = load_tokenizer(folder)
    reference = ReferenceBPE(tiny_gguf)
    for text in ["the world", " the  theory\n\tor 42!", "<|im_start|>user\nhe<|im_end|>", "é€🤖"]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text), text
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "the"}], add_generation_prompt=True)
    assert chat == reference.encode("<|im_start|>user\nthe<|im_end|>\n<|im_start|>assistant\n")


# --- errors ---------------------------------------------------------------------------------


def assert_import_fails(path: Path, tmp_path: Path, *words: str) -> None:
    out = tmp_path / "out" / "model"
    with pytest.raises(UserError) as error:
        import_gguf(path, out)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no staging left


def test_other_architecture_is_refused(tmp_path):
    assert_import_fails(write_tiny_gguf(tmp_path / "gpt2.gguf", arch="gpt2"), tmp_path, "'gpt2'", "Llama")


@pytest.mark.parametrize("kind", [Q.Q5_0, Q.BF16], ids=["Q5_0", "BF16"])
def test_unsupported_tensor_type_is_refused(tmp_path, kind):
    path = write_tiny_gguf(tmp_path / "q.gguf", **{"blk.1.ffn_up": kind})
    assert_import_fails(path, tmp_path, "blk.1.ffn_up.weight", kind.name, "Q4_0")


def test_other_bad_files_are_refused(tmp_path):
    text_file = tmp_path / "notes.gguf"
    text_file.write_text("not a model")
    assert_import_fails(text_file, tmp_path, "not a GGUF file")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    assert_import_fails(empty, tmp_path, "GGUF")
    assert_import_fails(write_tiny_gguf(tmp_path / "spm.gguf", tokenizer="llama"), tmp_path, "tokenizer 'llama'")
    missing = write_tiny_gguf(tmp_path / "missing.gguf", **{"blk.1.ffn_norm": None})
    assert_import_fails(missing, tmp_path, "blk.1.ffn_norm.weight is missing")
    extra = write_tiny_gguf(tmp_path / "extra.gguf", **{"blk.0.attn_q_norm": Q.F32})
    assert_import_fails(extra, tmp_path, "blk.0.attn_q_norm.weight has no place")
    rope_scaled = write_tiny_gguf(tmp_path / "rope.gguf", rope_freqs=Q.F32)
    assert_import_fails(rope_scaled, tmp_path, "RoPE scaling")


@pytest.mark.parametrize("keep", [10, 2000, -100], ids=["magic", "metadata", "tensors"])
def test_cut_short_file_is_refused(tiny_gguf, tmp_path, keep):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:keep])
    assert_import_fails(cut, tmp_path, "cut short" if keep > 0 else "past the end of the file")


def test_existing_output_folder_is_left_alone(tiny_gguf, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        import_gguf(tiny_gguf, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_ensure_imported_caches_by_file(tiny_gguf, tmp_path, monkeypatch):
    first = ensure_imported(tiny_gguf, cache_dir=tmp_path / "cache")
    assert first.parent == tmp_path / "cache" / "models" and first.name.startswith("gguf-tiny-")

    def no_import(*args):
        raise AssertionError("imported again")

    monkeypatch.setattr("engine.model.gguf.import_gguf", no_import)
    assert ensure_imported(tiny_gguf, cache_dir=tmp_path / "cache") == first
    monkeypatch.undo()
    os.utime(tiny_gguf, ns=(0, 0))  # a changed file gets a fresh import
    second = ensure_imported(tiny_gguf, cache_dir=tmp_path / "cache")
    assert second != first and (second / "model.safetensors").is_file()


# --- SmolLM2-135M-Instruct: the real-world check ---------------------------------------------


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return fetch_smollm2()


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, tmp_path_factory) -> Path:
    return import_gguf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "quantized")


def test_smollm2_config(smollm2_dir):
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert {k: config[k] for k in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
                                   "vocab_size", "rope_theta", "rms_norm_eps", "tie_word_embeddings")} == {
        "num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
        "vocab_size": 49152, "rope_theta": 100000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    }
    # Q4_1 blocks, with the tied embeddings kept at Q8_0
    assert config["quantization"] == {"group_size": 32, "bits": 4, "model.embed_tokens": {"group_size": 32, "bits": 8}}


def test_smollm2_logits_match_numpy_reference(smollm2_dir, smollm2_gguf):
    from mlx_lm.utils import load_tokenizer

    ids = load_tokenizer(smollm2_dir).encode("The capital of France is Paris, and", add_special_tokens=False)
    assert len(ids) == 8
    assert_logits_match(smollm2_dir, smollm2_gguf, ids)


def test_smollm2_tokenizer_matches_llama_cpp_splitting(smollm2_dir, smollm2_gguf):
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(smollm2_dir)
    reference = ReferenceBPE(smollm2_gguf)
    texts = [
        "Hello world! How are you?",
        "Numbers: 12345, 3.14159 and 2024-01-01; x=42",
        "def square(x):\n    return x ** 2  # fast\n\n\tprint(square(7))",
        "naïve café — Ünïcödé 日本語のテキスト, русский текст, emoji 🤖🎉👍🏽",
        "<|im_start|>user\nWhat's up?<|im_end|>\n<|im_start|>assistant\n",
        "   leading and trailing spaces   ",
        "don't I'll we've they're it's",
        "<jupyter_code>import numpy as np<jupyter_output>",
    ]
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text), text
        assert tokenizer.decode(ids) == text
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tokenizer.eos_token_ids == {2}


def test_smollm2_answers_a_factual_question(smollm2_gguf, tmp_path):
    from mlx_lm import generate
    from mlx_lm.utils import load

    from engine.model.load import cast_model

    folder = import_gguf(smollm2_gguf, tmp_path / "dequantized", dequantize=True)
    assert "quantization" not in json.loads((folder / "config.json").read_text())
    model, tokenizer = load(str(folder))
    cast_model(model, mx.float32)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    answer = generate(model, tokenizer, prompt, max_tokens=24)
    assert "Paris" in answer


def test_a_config_can_train_on_a_gguf_file(tiny_gguf, tmp_path):
    """`model: x.gguf` imports once into the cache and trains like any model folder."""
    from engine import events as ev
    from engine.config import load_stages
    from engine.training.chain import run_chain

    from .conftest import write_config

    config = write_config(tmp_path, model=str(tiny_gguf), iters=3, steps_per_eval=100, val_batches=1,
                          num_layers=2, lora_parameters={"rank": 4, "scale": 2.0, "dropout": 0.0})
    seen = []
    [result] = run_chain(load_stages([config]), seen.append)
    assert result.status == "completed"
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.model == str(tiny_gguf) and started.compute_dtype == "float32"
