"""Exporting a run's trained model to where people run models: a fused mlx-lm folder, a GGUF file
for llama.cpp, an Ollama folder, or LM Studio's folder layout.

:func:`export_run` is the one entry point, for ``tuner export`` and the Runs screen alike;
:func:`check_exportable` says, before any work, why a run cannot be exported (one line). The
steps live in their own modules: :mod:`.source` (what a run folder holds), :mod:`.fused` (the
adapter fused into the base, mlx-lm's way), :mod:`.gguf_writer` and :mod:`.gguf_vocab` (the GGUF
file), :mod:`.chat_template` and :mod:`.ollama` (the Modelfile), :mod:`.lmstudio` (the layout).

Nothing is ever overwritten: ``out`` must not exist. The export is built in a hidden folder
beside it and renamed into place at the end, so a failed or interrupted export leaves nothing
half-written where ``out`` was asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from engine.errors import UserError, first_line
from engine.export.source import ExportSource, base_file, find_source
from engine.files import make_folder, staging_folder

TARGETS = ("mlx", "gguf", "ollama", "lmstudio")
GGUF_QUANTS = ("f16", "q8_0", "f32")  # the GGUF tensor types written (see gguf_writer)
MLX_QUANTS = ("dequantize",)
Progress = Callable[[str, float], None]
_FUSED, _WRITTEN = 0.3, 0.99  # a GGUF export's progress after loading and fusing, after writing (then "done")


def check_exportable(run_dir: Path, to: str, checkpoint: int | None = None) -> None:
    """A one-line UserError when ``run_dir`` (at ``checkpoint``, else its final adapter) cannot be
    exported ``to`` this target: no adapter, an unknown step, a base architecture, tokenizer or
    chat template the target cannot take. Loads no model weights, but reads the base's config and
    tokenizer files (and for Ollama renders its chat template): call it off a UI's event loop."""
    _plan(run_dir, to, checkpoint)


def export_run(run_dir: Path, to: str, out: Path, checkpoint: int | None = None,
               quant: str | None = None, progress: Callable[[str, float], None] | None = None) -> Path:
    """Export ``run_dir``'s model (``checkpoint``'s adapter, else the final one) ``to`` "mlx",
    "gguf", "ollama" or "lmstudio" at ``out``, which must not exist yet; return ``out``.

    ``quant``: for GGUF targets "f16" (the default), "q8_0" or "f32"; for "mlx", "dequantize" or
    None (the base's own dtype and quantization). ``progress(what, fraction)`` hears how far the
    export is, ``fraction`` from 0 to 1, ending with ("done", 1.0); an exception it raises (a
    person cancelling) stops the export and leaves nothing behind.
    """
    out = Path(out)
    quant = _check_quant(to, quant)
    _refuse_existing(out)
    source, template = _plan(run_dir, to, checkpoint)
    report = progress or (lambda what, fraction: None)
    staging = staging_folder(out)
    try:
        product = staging / "export"
        if to == "mlx":
            from engine.export.fused import write_mlx

            report("fusing the adapter into the base model", 0.0)
            write_mlx(source, staging, product, dequantize=quant == "dequantize")
        else:
            _write_gguf_target(source, staging, product, to, quant, template, report)
        _refuse_existing(out)  # appeared meanwhile: still never replaced
        os.rename(product, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report("done", 1.0)
    return out


def _check_quant(to: str, quant: str | None) -> str | None:
    if to not in TARGETS:
        raise UserError(f"export: unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    allowed = MLX_QUANTS if to == "mlx" else GGUF_QUANTS
    if quant is None:
        return None if to == "mlx" else "f16"
    if quant not in allowed:
        raise UserError(f"export: --quant {quant!r} does not go with --to {to}; choose one of {', '.join(allowed)}")
    return quant


def _refuse_existing(out: Path) -> None:
    if os.path.lexists(out):
        raise UserError(f"{out}: already exists; tuner never overwrites, so choose a new name")


def _plan(run_dir: Path, to: str, checkpoint: int | None):
    """(the run's parts, the checked Ollama template or None), or a one-line UserError."""
    from engine.export.gguf_vocab import check_tokenizer
    from engine.export.gguf_writer import check_llama_config

    if to not in TARGETS:
        raise UserError(f"export: unknown target {to!r}; choose one of {', '.join(TARGETS)}")
    source = find_source(Path(run_dir), checkpoint)
    if to == "mlx":
        return source, None
    where = f"{source.base} (the base of {source.run_dir.name})"
    check_llama_config(source.base_config, where)
    try:
        tokenizer_json = json.loads(base_file(source.base, "tokenizer.json").read_text(encoding="utf-8"))
    except UserError:
        raise UserError(f"{where}: has no tokenizer.json; tuner exports byte-level BPE tokenizers only") from None
    check_tokenizer(tokenizer_json, where)
    if to != "ollama":
        return source, None
    from engine.export.ollama import ollama_template

    return source, ollama_template(_hf_tokenizer(source.base))


def _hf_tokenizer(base: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as e:
        raise UserError(f"{base}: its tokenizer does not load: {first_line(e)}") from None


def _write_gguf_target(source: ExportSource, staging: Path, product: Path, to: str, quant: str,
                       template, report: Progress) -> None:
    """The GGUF file (``gguf``), with a Modelfile beside it (``ollama``), or in LM Studio's layout."""
    from engine.export.lmstudio import gguf_path
    from engine.export.ollama import GGUF_NAME, write_modelfile

    if to == "gguf":
        path = product
    elif to == "ollama":
        path = product / GGUF_NAME
    else:
        path = gguf_path(product, source.label, quant)
    make_folder(path.parent)
    write_gguf_file(source, staging, path, quant, report)
    if template is not None:
        write_modelfile(product, template)


def write_gguf_file(source: ExportSource, staging: Path, path: Path, quant: str, report: Progress) -> None:
    """The fused, dequantized model and its tokenizer as a GGUF file at ``path``."""
    from mlx.utils import tree_flatten

    from engine.export.fused import fused_float32
    from engine.export.gguf_vocab import gguf_vocab
    from engine.export.gguf_writer import write_gguf

    report("fusing the adapter into the base model", 0.0)
    model, tokenizer, config, _stored = fused_float32(source, staging)
    weights = dict(tree_flatten(model.parameters()))
    config = {**config, "vocab_size": weights["model.embed_tokens.weight"].shape[0]}
    vocab = gguf_vocab(getattr(tokenizer, "_tokenizer", tokenizer), config["vocab_size"])
    report(f"writing the GGUF file ({quant.upper()})", _FUSED)
    write_gguf(path, weights, config, vocab, quant, source.label,
               lambda done: report(f"writing the GGUF file ({quant.upper()})", _FUSED + (_WRITTEN - _FUSED) * done))
