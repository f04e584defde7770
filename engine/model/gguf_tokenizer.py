"""A GGUF file's tokenizer rebuilt for Hugging Face: ``tokenizer.json`` and ``tokenizer_config.json``.

llama.cpp keeps the vocabulary, merges, token types, special tokens and chat template in the
file's metadata. Only byte-level BPE vocabularies (``tokenizer.ggml.model == "gpt2"``) are
supported, with the pre-tokenizers of the ``tokenizer.ggml.pre`` values below: text must be split
exactly as llama.cpp splits it, or the merges give other ids than the model was trained on.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from engine.errors import UserError
from engine.model.gguf_metadata import check_tokenizer

# tokenizer.ggml.pre values whose pre-tokenizer we reproduce, as llama.cpp splits text for them.
GPT2_PRE = ("gpt-2",)
DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "codeshell")
LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3")
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values that become added tokens


def build_tokenizer(path: Path, metadata: dict) -> tuple[Tokenizer, dict]:
    """A ``tokenizers.Tokenizer`` and the ``tokenizer_config.json`` dict for the file's vocabulary."""
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UserError(f"{path}: tokenizer {kind!r} is not supported; tuner imports byte-level BPE ('gpt2') only")
    check_tokenizer(path, metadata)  # types and ranges of the lists and ids read below
    pre = metadata.get("tokenizer.ggml.pre", "gpt-2")
    pre_tokenizer = _pre_tokenizer(path, pre)

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

    bos, eos = _special(metadata, tokens, "bos"), _special(metadata, tokens, "eos")
    add_bos = bool(metadata.get("tokenizer.ggml.add_bos_token")) and bos is not None
    add_eos = bool(metadata.get("tokenizer.ggml.add_eos_token")) and eos is not None
    tokenizer.post_processor = _post_processor(tokenizer, bos if add_bos else None, eos if add_eos else None)

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": _special(metadata, tokens, "padding"),
        "unk_token": _special(metadata, tokens, "unknown"),
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": metadata.get("llama.context_length", 2048),
    }
    if "tokenizer.chat_template" in metadata:
        tokenizer_config["chat_template"] = metadata["tokenizer.chat_template"]
    return tokenizer, tokenizer_config


def _pre_tokenizer(path: Path, pre: str):
    """How llama.cpp splits text into words before merging, for a ``tokenizer.ggml.pre`` value."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in GPT2_PRE:
        return byte_level
    if pre in DIGIT_SPLIT_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in LLAMA3_PRE:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    known = ", ".join(GPT2_PRE + DIGIT_SPLIT_PRE + LLAMA3_PRE)
    raise UserError(f"{path}: pre-tokenizer {pre!r} is not supported (known: {known})")


def _special(metadata: dict, tokens: list[str], name: str) -> str | None:
    """The text of the ``tokenizer.ggml.{name}_token_id`` token, if the file names one in range."""
    token_id = metadata.get(f"tokenizer.ggml.{name}_token_id")
    return tokens[token_id] if token_id is not None and token_id < len(tokens) else None


def _post_processor(tokenizer: Tokenizer, bos: str | None, eos: str | None):
    """Byte-level offsets, then the ``bos`` and ``eos`` to add around each text (None: none).

    llama.cpp adds these when it tokenizes a prompt; Hugging Face tokenizers add them here.
    """
    steps = [processors.ByteLevel(trim_offsets=False)]
    if bos is not None or eos is not None:
        before, after = ([bos] if bos is not None else []), ([eos] if eos is not None else [])
        steps.append(processors.TemplateProcessing(
            single=before + ["$A"] + after,
            pair=before + ["$A"] + after + before + ["$B"] + after,
            special_tokens=[(token, tokenizer.token_to_id(token)) for token in {*before, *after}],
        ))
    return processors.Sequence(steps)
