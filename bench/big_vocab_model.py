"""The memory scenario's model and data: a Qwen-size vocabulary and ~2,000-token examples.

On a large vocabulary the [positions, vocabulary] logits, their softmax and their gradient
dominate training memory: at max_seq_length 2048 and Qwen's 151,936 ids one float32 copy of
the logits is 1.2 GB, while a small model's weights are a fraction of that. So the memory
benchmark needs a model with that vocabulary but no download, and examples near 2,048 tokens.

* :func:`ensure_big_vocab_model` builds (once, cached beside the demo model) a random-weight
  Llama with a small body (hidden 256, 4 blocks) and a 151,936-row tied embedding/head, like
  Qwen2.5-0.5B's. It reuses the demo model's recipe: the same locally trained BPE tokenizer
  (1,024 ids) and chat template, and the same weight initialisation. The tokenizer is not
  151,936 ids large: ids simply never reach past 1,024. Memory and compute do not depend on
  which ids occur, since every position gets logits over all 151,936 rows either way.
* :func:`write_long_chats` writes chats of about ``target_tokens`` tokens each, as the model's
  tokenizer counts them: a user turn with many of the demo's questions, numbered, and an
  assistant turn with their answers.

    python bench/big_vocab_model.py       # build it now and print the folder
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere: the engine lives beside bench/
    sys.path.insert(0, str(REPO))

from engine.model.demo_data import demo_records, write_splits  # noqa: E402
from engine.model.demo import _write_tokenizer, _write_weights, build_once  # noqa: E402

BIG_VOCAB_MODEL_ID = "big-vocab"
MODEL_DIRNAME = "big-vocab-llama-v1"  # bump when the recipe changes
VOCAB_SIZE = 151_936  # Qwen2 / Qwen2.5 / Qwen3
MAX_POSITIONS = 4096

MODEL_SHAPE = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 704,
    "max_position_embeddings": MAX_POSITIONS,
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


def ensure_big_vocab_model(cache_dir: Path | None = None) -> Path:
    """The model folder under ``cache_dir/models``, built on first use."""
    return build_once(MODEL_DIRNAME, _build, cache_dir)


def _build(folder: Path) -> None:
    _write_tokenizer(folder)
    # The demo tokenizer's config caps lengths at the demo model's 1,024 positions; ours are longer.
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["model_max_length"] = MAX_POSITIONS
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    config = {"model_type": "llama", "vocab_size": VOCAB_SIZE, **MODEL_SHAPE}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _write_weights(folder, config)


def long_chat_records(tokenizer, n: int, target_tokens: int, seed: int = 0) -> list[dict]:
    """``n`` chats of at most ``target_tokens`` tokens each (within a few), as the template counts.

    Question/answer pairs are added while the pieces' separate token counts still fit; the
    pieces are whole lines, so their counts add up to the chat's within a token or two per line.
    """
    pairs = []
    for record in demo_records(1000, seed):
        turns = [m["content"] for m in record["messages"] if m["role"] != "system"]
        pairs += zip(turns[::2], turns[1::2])
    rng = random.Random(seed)
    overhead = len(tokenizer.apply_chat_template(
        [{"role": "user", "content": "Answer each question on its own line.\n"},
         {"role": "assistant", "content": ""}], tokenize=True))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    records = []
    for _ in range(n):
        questions, answers, used = [], [], overhead
        while True:
            question, answer = rng.choice(pairs)
            number = f"{len(questions) + 1}. "
            cost = count(f"{number}{question}\n") + count(f"{number}{answer}\n")
            if used + cost > target_tokens:
                break
            questions.append(number + question)
            answers.append(number + answer)
            used += cost
        records.append({"messages": [
            {"role": "user", "content": "Answer each question on its own line.\n" + "\n".join(questions)},
            {"role": "assistant", "content": "\n".join(answers)},
        ]})
    return records


def write_long_chats(folder: Path, model_path: str | Path, target_tokens: int = 1950,
                     n_train: int = 48, n_valid: int = 4, n_test: int = 4, seed: int = 0) -> None:
    """``train/valid/test.jsonl`` of long chats sized with the tokenizer in ``model_path``.

    The test split is never trained on; it exists because mlx-lm's loader fails on an empty file.
    """
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(Path(model_path))
    records = long_chat_records(tokenizer, n_train + n_valid + n_test, target_tokens, seed)
    write_splits(folder, records, n_train, n_valid)


if __name__ == "__main__":
    print(ensure_big_vocab_model())
