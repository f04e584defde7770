"""A fused mlx-lm Llama model written as a llama.cpp GGUF file, with the ``gguf`` package's writer.

The inverse of tuner's importer (:mod:`engine.model.gguf_llama`), and sharing its tables:

- mlx-lm's names become llama.cpp's (``model.layers.3.self_attn.q_proj.weight`` ->
  ``blk.3.attn_q.weight``);
- each head's query and key rows are reordered from Hugging Face's RoPE layout (dimension i
  rotates with i + head_dim/2) to llama.cpp's (dimensions 2i and 2i+1 rotate together), the
  permutation llama.cpp's own converter applies and the importer undoes;
- the sizes go under ``llama.*``, the tokenizer under ``tokenizer.ggml.*``
  (:mod:`engine.export.gguf_vocab`) and the chat template under ``tokenizer.chat_template``.

Types: ``f32`` writes every tensor as F32; ``f16`` the matrices as F16; ``q8_0`` the matrices as
Q8_0 (blocks of 32 int8 values with one float16 scale), except a matrix whose rows do not split
into blocks of 32, kept F16 as llama.cpp does. Norm vectors stay F32 in every case. Tensors are
converted and written one at a time, so memory holds the model once, not twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import UserError
from engine.export.gguf_vocab import GGUFVocab
from engine.model.gguf_llama import LAYER_NAMES, TOP_LEVEL_NAMES

Q8_BLOCK = 32  # values per Q8_0 block, each block 2 bytes of scale + 32 bytes
_GGUF_TOP = {mlx: gguf for gguf, mlx in TOP_LEVEL_NAMES.items()}
_GGUF_LAYER = {mlx: gguf for gguf, mlx in LAYER_NAMES.items()}


def check_llama_config(config: dict, where: str) -> None:
    """One line for a model this writer cannot express as a llama.cpp Llama, before any work."""
    kind = config.get("model_type")
    if kind != "llama":
        raise UserError(f"{where}: model type {kind!r} cannot be exported to GGUF; tuner exports the Llama "
                        "family (model_type llama: Llama 2/3, SmolLM, TinyLlama and the like)")
    if config.get("rope_scaling"):
        raise UserError(f"{where}: RoPE scaling (as in Llama 3.1 and later) cannot be exported to GGUF yet")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UserError(f"{where}: projection biases (attention_bias, mlp_bias) cannot be exported to GGUF")
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    head_dim = config.get("head_dim") or (hidden // heads if heads else None)
    if not head_dim or head_dim % 2:
        raise UserError(f"{where}: head size {head_dim!r} is not an even number; cannot export to GGUF")


def gguf_name(mlx_name: str) -> str | None:
    """llama.cpp's name of an mlx-lm Llama tensor (None: not part of the model's weights)."""
    stem, leaf = mlx_name.rsplit(".", 1)
    if stem in _GGUF_TOP:
        return f"{_GGUF_TOP[stem]}.{leaf}"
    parts = stem.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _GGUF_LAYER:
        return f"blk.{parts[2]}.{_GGUF_LAYER[parts[3]]}.{leaf}"
    return None


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's query/key row order -> llama.cpp's: in each head, row i of the first half and
    row i of the second half become rows 2i and 2i+1."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_gguf(path: Path, weights: dict, config: dict, vocab: GGUFVocab, quant: str, name: str,
               progress: Callable[[float], None]) -> None:
    """Write ``weights`` (mlx-lm Llama names, float arrays) as a GGUF file at ``path``.

    ``progress`` gets the fraction of tensors written so far.
    """
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    _write_model_metadata(writer, config, name, quant)
    _write_vocab_metadata(writer, vocab)
    plan = _plan(weights, quant)
    for target, source, kind in plan:
        shape = tuple(weights[source].shape)
        writer.add_tensor_info(target, shape, np.dtype(np.float32), _nbytes(shape, kind), raw_dtype=kind)
    heads = {"attn_q": config["num_attention_heads"],
             "attn_k": config.get("num_key_value_heads") or config["num_attention_heads"]}
    try:
        writer.write_header_to_file(str(path))
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (target, source, kind) in enumerate(plan, start=1):
            writer.write_tensor_data(_converted(weights[source], target, kind, heads))
            progress(done / len(plan))
    finally:
        writer.close()


def _plan(weights: dict, quant: str) -> list[tuple[str, str, object]]:
    """(llama.cpp name, mlx-lm name, ggml type) per tensor, in llama.cpp's order of names."""
    from gguf import GGMLQuantizationType as Q

    plan = []
    for source, array in weights.items():
        target = gguf_name(source)
        if target is None:
            raise UserError(f"the fused model's tensor {source} has no place in a llama.cpp Llama file")
        if array.ndim == 1 or quant == "f32":
            kind = Q.F32
        elif quant == "q8_0" and array.shape[-1] % Q8_BLOCK == 0:
            kind = Q.Q8_0
        else:
            kind = Q.F16
        plan.append((target, source, kind))
    order = {"token_embd": 0, "output_norm": 2, "output": 3}
    return sorted(plan, key=lambda p: (order.get(p[0].rsplit(".", 1)[0], 1), _layer(p[0]), p[0]))


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def _nbytes(shape: tuple, kind) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[kind]
    return int(np.prod(shape)) // block * size


def _converted(array, target: str, kind, heads: dict) -> np.ndarray:
    """One tensor as the bytes the file holds: float32 numpy, q/k rows permuted, then cast or
    quantized by the ``gguf`` package (the reference llama.cpp's own converter uses)."""
    import gguf
    import mlx.core as mx

    data = np.array(array.astype(mx.float32))
    kind_of_layer = target.split(".")[2] if target.startswith("blk.") else ""
    if kind_of_layer in heads and target.endswith(".weight"):
        data = rope_permute(data, heads[kind_of_layer])
    if kind == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    if kind == gguf.GGMLQuantizationType.Q8_0:
        return gguf.quants.quantize(data, kind)
    return data


def _write_model_metadata(writer, config: dict, name: str, quant: str) -> None:
    from gguf import LlamaFileType

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config["hidden_size"] // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(config["vocab_size"])
    file_types = {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "q8_0": LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(int(file_types[quant]))


def _write_vocab_metadata(writer, vocab: GGUFVocab) -> None:
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    adders = {"bos": writer.add_bos_token_id, "eos": writer.add_eos_token_id,
              "padding": writer.add_pad_token_id, "unknown": writer.add_unk_token_id}
    for key, token_id in vocab.special_ids.items():
        adders[key](token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)
