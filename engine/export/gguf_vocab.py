"""A Hugging Face byte-level BPE tokenizer in llama.cpp's terms: the ``tokenizer.ggml.*`` metadata.

llama.cpp tokenizes with its own code from the vocabulary, the merges, each token's type and a
named pre-tokenizer (``tokenizer.ggml.pre``, how text is split into words before merging). So an
export must name the split the model was trained with: it is read from ``tokenizer.json``'s
pre-tokenizer, which must be one of the splits tuner's own importer rebuilds
(:mod:`engine.model.gguf_tokenizer`); any other is refused before any work, since a wrong split
gives other ids than the model learned, silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from engine.errors import UserError
from engine.model.gguf_tokenizer import LLAMA3_SPLIT

# llama.cpp's token types (gguf.TokenType), written as plain numbers
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass(frozen=True)
class GGUFVocab:
    """What goes under ``tokenizer.ggml.*``, and the chat template."""

    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special_ids: dict[str, int]  # bos, eos, padding, unknown: those the tokenizer has
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def pre_tokenizer_name(tokenizer_json: dict) -> str | None:
    """llama.cpp's name for the tokenizer's split, or None when it is not one tuner knows.

    The three splits are those the importer rebuilds: GPT-2's byte-level regex alone, SmolLM's
    (digits one by one, then GPT-2's), and Llama 3's regex followed by a byte-level map.
    """
    model, pre = tokenizer_json.get("model") or {}, tokenizer_json.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or (tokenizer_json.get("decoder") or {}).get("type") != "ByteLevel":
        return None
    if tokenizer_json.get("normalizer") is not None:
        return None
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
        return "gpt-2"
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True) and not steps[1].get("add_prefix_space")):
        return "smollm"
    if (kinds == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == LLAMA3_SPLIT
            and steps[0].get("behavior") == "Isolated" and not steps[1].get("use_regex", True)):
        return "llama-bpe"
    return None


def check_tokenizer(tokenizer_json: dict, where: str) -> str:
    """The split's name, or a one-line UserError saying what tuner exports."""
    name = pre_tokenizer_name(tokenizer_json)
    if name is None:
        raise UserError(f"{where}: its tokenizer is not one tuner can export to GGUF; supported: byte-level "
                        "BPE with the GPT-2, SmolLM or Llama 3 split (no normalizer)")
    return name


def gguf_vocab(hf_tokenizer, vocab_size: int) -> GGUFVocab:
    """The vocabulary of a loaded Hugging Face fast tokenizer, padded to the model's ``vocab_size``.

    Ids the tokenizer lacks below ``vocab_size`` (embedding rows kept for alignment) become
    ``[PADn]`` tokens of type UNUSED, as llama.cpp's converter writes them. Added tokens are
    CONTROL when special, USER_DEFINED otherwise: llama.cpp matches both in raw text.
    """
    data = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    pre = check_tokenizer(data, "the run's base model")
    by_id = {i: t for t, i in data["model"]["vocab"].items()}
    types = {i: NORMAL for i in by_id}
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    size = max(vocab_size, max(by_id) + 1)
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    token_types = [types.get(i, UNUSED) for i in range(size)]
    return GGUFVocab(
        pre=pre,
        tokens=tokens,
        types=token_types,
        merges=_merges(data["model"].get("merges", [])),
        special_ids=_special_ids(hf_tokenizer),
        add_bos=adds_token(hf_tokenizer, hf_tokenizer.bos_token_id, first=True),
        add_eos=adds_token(hf_tokenizer, hf_tokenizer.eos_token_id, first=False),
        chat_template=hf_tokenizer.chat_template if isinstance(hf_tokenizer.chat_template, str) else None,
    )


def _merges(merges: list) -> list[str]:
    """``"left right"`` pairs, from either form ``tokenizer.json`` stores them in."""
    out = []
    for merge in merges:
        pair = merge.split(" ", 1) if isinstance(merge, str) else list(merge)
        if len(pair) != 2 or any(" " in part for part in pair):
            raise UserError(f"the tokenizer's merge {merge!r} cannot be written as a 'left right' pair")
        out.append(" ".join(pair))
    return out


def _special_ids(hf_tokenizer) -> dict[str, int]:
    ids = {"bos": hf_tokenizer.bos_token_id, "eos": hf_tokenizer.eos_token_id,
           "padding": hf_tokenizer.pad_token_id, "unknown": hf_tokenizer.unk_token_id}
    return {name: token_id for name, token_id in ids.items() if token_id is not None}


def adds_token(hf_tokenizer, token_id: int | None, first: bool) -> bool:
    """Whether encoding a text adds ``token_id`` at its start (``first``) or end: what llama.cpp's
    ``add_bos_token`` and ``add_eos_token`` say, found by encoding rather than read from a flag
    that templates and post-processors can contradict."""
    if token_id is None:
        return False
    ids = hf_tokenizer.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0 if first else -1] == token_id
