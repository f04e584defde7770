"""A llama.cpp Llama file in mlx-lm's terms: ``config.json`` from its metadata, and its tensors
under mlx-lm's names, row order and quantization.

MLX reads GGUF tensors itself (``mx.load``), and Q4_0, Q4_1 and Q8_0 blocks arrive as MLX
affine-quantized weights with group size 32, so they can stay quantized. What is left to do here:

- check that the file fits mlx-lm's Llama (architecture, tensor types, names) before any output
  exists, so an unsupported file fails with one line naming it;
- rename llama.cpp's tensors to mlx-lm's Llama names;
- undo the row permutation llama.cpp applies to the query and key projections. llama.cpp's
  RoPE rotates adjacent pairs of a head's dimensions, Hugging Face's (and mlx-lm's) rotates
  dimension i with i + head_dim/2, so the converter reorders each head's rows from
  [first half, second half] to interleaved pairs. Quantization groups run along a row, so
  reordering whole rows of the packed weights, scales and biases is exact: quantized q/k
  projections stay quantized with no requantization loss.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import mlx.core as mx

from engine.errors import UserError
from engine.model.gguf_metadata import llama_dimensions

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


def model_config(path: Path, metadata: dict, tensors: dict) -> dict:
    """mlx-lm's Llama ``config.json`` from llama.cpp's metadata, after checking the file fits it."""
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise UserError(f"{path}: architecture {arch!r} is not supported; tuner imports Llama GGUF files only")
    dims = llama_dimensions(path, metadata, tensors)  # every value's type and range, before any allocation
    if dims["rope_dims"] != dims["head_dim"]:
        raise UserError(f"{path}: partial rotary embeddings (llama.rope.dimension_count) are not supported")
    if dims["rope_scaling"] != "none" or "rope_freqs.weight" in tensors:
        raise UserError(f"{path}: RoPE scaling (as in Llama 3.1 and later) is not supported")
    _check_tensors(path, tensors, dims["layers"])

    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": dims["hidden"],
        "num_hidden_layers": dims["layers"],
        "intermediate_size": dims["intermediate"],
        "num_attention_heads": dims["heads"],
        "num_key_value_heads": dims["kv_heads"],
        "head_dim": dims["head_dim"],
        "rms_norm_eps": dims["rms_eps"],
        "rope_theta": dims["rope_theta"],
        "max_position_embeddings": dims["context"],
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


def load_weights(path: Path, config: dict, tensors: dict, dequantize: bool) -> tuple[dict, dict | None]:
    """The file's tensors as mlx-lm's Llama weights, and the ``quantization`` entry for its config.

    ``config`` and ``tensors`` are :func:`model_config`'s and the header's, so the names are
    checked already. Floating tensors become float16, the type GGUF stores its scales and
    half-precision tensors in, unless every tensor in the file is F32.
    """
    try:
        loaded = mx.load(str(path))
    except (RuntimeError, ValueError) as e:  # a file cut short after its header, say
        raise UserError(f"{path}: could not read its tensors ({e})") from None
    weights = {_mlx_name(name): array for name, array in loaded.items()}
    _unpermute_rotary_rows(weights, "q_proj", config["num_attention_heads"])
    _unpermute_rotary_rows(weights, "k_proj", config["num_key_value_heads"])
    all_f32 = {kind for kind, _ in tensors.values()} == {0}
    return _finish_weights(weights, mx.float32 if all_f32 else mx.float16, dequantize)


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
