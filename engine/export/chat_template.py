"""A model's Jinja chat template as an Ollama ``TEMPLATE`` (Go's text/template), checked by rendering.

Ollama does not run Jinja: a Modelfile's TEMPLATE is a Go template over ``.Messages``. A wrong
one does not fail, it makes the model see text it was never trained on and answer badly. So the
translation is not guessed from the Jinja source: each family's Go template is tried, rendered by
:func:`render_go` (the subset of Go templates emitted here) and compared with the model's own
template rendered by ``apply_chat_template`` on a sample conversation, with and without a system
message. The first family that renders both identically is used; none is a one-line refusal.

A template that adds a default system prompt when the conversation has none (SmolLM2's does) gets
it as the Modelfile's ``SYSTEM``: Ollama puts that message first when a chat has no system
message of its own, which :func:`ollama_messages` does the same way for the check.

The beginning-of-sequence token is not template text for llama.cpp: it adds it while tokenising
when the GGUF says ``add_bos_token``, so then the Jinja rendering's leading BOS text is dropped
before comparing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import UserError


@dataclass(frozen=True)
class Family:
    name: str
    template: str  # the Go template, over .Messages, ending with the assistant's turn opened
    stops: tuple[str, ...]  # the end-of-turn tokens: Ollama's ``PARAMETER stop`` lines


FAMILIES = (
    Family("ChatML",
           "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
           ("<|im_end|>",)),
    Family("Llama 3",
           "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
           "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
           ("<|eot_id|>",)),
)

SAMPLE = (
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And of Italy?"},
)
_SENTINEL = "\x00system\x00"


@dataclass(frozen=True)
class OllamaTemplate:
    family: str
    template: str
    stops: tuple[str, ...]
    system: str | None  # the default system prompt, for the Modelfile's SYSTEM


# --- the Go template subset -------------------------------------------------------------------

_ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)


def render_go(template: str, messages: list[dict]) -> str:
    """Render ``template`` as Go's text/template would, for the subset the families use: text,
    ``{{ range .Messages }}`` … ``{{ end }}``, ``{{ .Role }}``, ``{{ .Content }}``, and the ``{{-``
    and ``-}}`` markers that trim the whitespace beside them. Anything else is a ValueError."""
    pieces, trim_next, pos = [], False, 0
    for found in _ACTION.finditer(template):
        text = template[pos:found.start()]
        text = text.lstrip() if trim_next else text
        pieces.append(("text", text.rstrip() if found.group(1) else text))
        pieces.append(("action", found.group(2)))
        trim_next, pos = bool(found.group(3)), found.end()
    tail = template[pos:]
    pieces.append(("text", tail.lstrip() if trim_next else tail))
    out, loop, message = [], None, None
    for kind, value in pieces:
        if kind == "text":
            (loop if loop is not None else out).append(("text", value))
        elif value == "range .Messages" and loop is None:
            loop = []
        elif value == "end" and loop is not None:
            out.extend(("message", (m, loop)) for m in messages)
            loop = None
        elif value in (".Role", ".Content") and loop is not None:
            loop.append(("field", value[1:].lower()))
        else:
            raise ValueError(f"unsupported template action {{{{ {value} }}}}")
    if loop is not None:
        raise ValueError("{{ range }} without {{ end }}")
    rendered = []
    for kind, value in out:
        if kind == "text":
            rendered.append(value)
            continue
        message, body = value
        rendered.extend(v if k == "text" else message[v] for k, v in body)
    return "".join(rendered)


def ollama_messages(messages: list[dict], system: str | None) -> list[dict]:
    """The messages Ollama gives the template: the Modelfile's SYSTEM first when the chat has no
    system message of its own."""
    if system is not None and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system}, *messages]
    return list(messages)


# --- translation ------------------------------------------------------------------------------


def translate(render_jinja, bos_text: str | None) -> OllamaTemplate:
    """The Ollama template that renders like ``render_jinja(messages)`` (the model's own template
    with the generation prompt), or a one-line UserError when no family does.

    ``bos_text``: the BOS token's text when llama.cpp adds it while tokenising (dropped from the
    front of the Jinja rendering before comparing), else None.
    """
    def jinja(messages) -> str:
        text = render_jinja([dict(m) for m in messages])
        return text[len(bos_text):] if bos_text and text.startswith(bos_text) else text

    with_system, without = jinja(SAMPLE), jinja(SAMPLE[1:])
    for family in FAMILIES:
        system = _default_system(family, without)
        rendered = [render_go(family.template, ollama_messages(list(c), system)) for c in (SAMPLE, SAMPLE[1:])]
        if rendered == [with_system, without]:
            return OllamaTemplate(family.name, family.template, family.stops, system)
    names = ", ".join(f.name for f in FAMILIES)
    raise UserError(f"the model's chat template is not one tuner can translate for Ollama (supported: {names}); "
                    "export --to gguf and write the Modelfile's TEMPLATE by hand")


def _default_system(family: Family, jinja_without_system: str) -> str | None:
    """The system prompt the Jinja template adds to a chat without one, read by matching the
    family's own system turn around it; None when it adds none (or not in this family's form)."""
    plain = render_go(family.template, list(SAMPLE[1:]))
    if jinja_without_system == plain:
        return None
    before, after = render_go(family.template, ollama_messages(list(SAMPLE[1:]), _SENTINEL)).split(_SENTINEL)
    text = jinja_without_system
    if text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after):
        return text[len(before):len(text) - len(after)]
    return None

