"""An Ollama model folder: the GGUF and a ``Modelfile`` whose template renders like the model's own.

The folder holds::

    model.gguf      the fused model (see engine.export.gguf_writer)
    Modelfile       FROM ./model.gguf, TEMPLATE, SYSTEM (a template's default system prompt),
                    one PARAMETER stop per end-of-turn token

``ollama create NAME -f OUT/Modelfile`` then makes it an Ollama model. The TEMPLATE comes from
:mod:`engine.export.chat_template`, which proves it renders a sample conversation exactly as the
model's Jinja template does, or refuses before any work.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserError
from engine.export.chat_template import OllamaTemplate, translate
from engine.export.gguf_vocab import adds_token
from engine.files import atomic_write_text

GGUF_NAME = "model.gguf"
MODELFILE = "Modelfile"


def ollama_template(hf_tokenizer) -> OllamaTemplate:
    """The checked Ollama template for a loaded Hugging Face tokenizer; a one-line UserError when
    the model has no chat template or one no family renders the same as."""
    if not isinstance(getattr(hf_tokenizer, "chat_template", None), str):
        raise UserError("the model has no chat template, so Ollama would not know how to prompt it; "
                        "export --to gguf instead")

    def render(messages: list[dict]) -> str:
        return hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    adds_bos = adds_token(hf_tokenizer, hf_tokenizer.bos_token_id, first=True)
    chosen = translate(render, hf_tokenizer.bos_token if adds_bos else None)
    for text in (chosen.template, chosen.system or ""):
        if '"""' in text:
            raise UserError('the chat template holds """, which a Modelfile cannot quote; export --to gguf instead')
    return chosen


def modelfile(template: OllamaTemplate) -> str:
    lines = [f"FROM ./{GGUF_NAME}", f'TEMPLATE """{template.template}"""']
    if template.system is not None:
        lines.append(f'SYSTEM """{template.system}"""')
    lines.extend(f'PARAMETER stop "{stop}"' for stop in template.stops)
    return "\n".join(lines) + "\n"


def write_modelfile(folder: Path, template: OllamaTemplate) -> Path:
    path = folder / MODELFILE
    atomic_write_text(path, modelfile(template))
    return path
