"""Export to Ollama: the Modelfile's TEMPLATE renders conversations exactly as the model's own chat
template does (the tiny model's, SmolLM2's with its default system prompt, Llama 3's), a template
that cannot be translated is refused before any work, and SmolLM2 trained, exported to GGUF and
imported back still answers "Paris".

The Jinja side is always transformers' ``apply_chat_template`` (or jinja2 itself), never tuner's code.
"""

from __future__ import annotations

import json
import re
import shutil

import gguf
import jinja2
import mlx.core as mx
import pytest

from engine.errors import UserError
from engine.export import export_run
from engine.export.chat_template import ollama_messages, render_go, translate
from engine.export.ollama import ollama_template

from .conftest import write_config

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Two lines:\nfirst\n  second  "}, {"role": "assistant", "content": "Noted.\n"},
     {"role": "user", "content": "Again?"}, {"role": "assistant", "content": "Yes"}, {"role": "user", "content": "ok"}],
]
LLAMA3_TEMPLATE = (  # Meta-Llama-3-8B-Instruct's template
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA_TEMPLATE = (
    "{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def hf_render(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def modelfile_template(text: str) -> str:
    return re.search(r'TEMPLATE """(.*?)"""', text, re.DOTALL).group(1)


# --- the Go template subset ---------------------------------------------------------------------


def test_render_go_follows_go_whitespace_trimming():
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert render_go("  {{- range .Messages }}[{{ .Role }}={{ .Content }}]\n  {{- end }}!", messages) == "[user=x][assistant=y]!"
    assert render_go("a {{ range .Messages -}}  \n{{ .Role }} {{ end }}", messages) == "a user assistant "
    with pytest.raises(ValueError, match="unsupported"):
        render_go("{{ .System }}", messages)
    with pytest.raises(ValueError, match="without"):
        render_go("{{ range .Messages }}{{ .Role }}", messages)


# --- the tiny model's and SmolLM2's templates ---------------------------------------------------


def test_tiny_model_template_is_chatml(demo_tokenizer):
    chosen = ollama_template(demo_tokenizer._tokenizer)
    assert (chosen.family, chosen.system, chosen.stops) == ("ChatML", None, ("<|im_end|>",))
    for messages in CONVERSATIONS:
        assert render_go(chosen.template, ollama_messages(messages, chosen.system)) == hf_render(demo_tokenizer, messages)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_model_dir):
    from engine.config import load_stages
    from engine.training.chain import run_chain

    folder = tmp_path_factory.mktemp("ollama-run")
    config = write_config(folder, iters=2, steps_per_eval=100, val_batches=1, batch_size=4,
                          lora_parameters={"rank": 4, "scale": 2.0, "dropout": 0.0})
    [result] = run_chain(load_stages([config]), lambda event: None)
    return result.run_dir


def test_ollama_folder_renders_like_training(tiny_run, demo_tokenizer, tmp_path):
    out = export_run(tiny_run, "ollama", tmp_path / "ollama", quant="q8_0")
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "model.gguf"]
    text = (out / "Modelfile").read_text()
    assert text.splitlines()[0] == "FROM ./model.gguf" and 'PARAMETER stop "<|im_end|>"' in text
    assert "SYSTEM" not in text
    template = modelfile_template(text)  # what the file says, read back
    for messages in CONVERSATIONS:
        assert render_go(template, messages) == hf_render(demo_tokenizer, messages)
    fields = gguf.GGUFReader(out / "model.gguf").fields
    assert fields["tokenizer.chat_template"].contents() == demo_tokenizer.chat_template


def test_smollm2_template_keeps_its_default_system_prompt():
    from transformers import AutoTokenizer

    from engine.model.demo import smollm2_model

    tokenizer = AutoTokenizer.from_pretrained(smollm2_model())
    chosen = ollama_template(tokenizer)
    assert chosen.family == "ChatML" and chosen.stops == ("<|im_end|>",)
    assert chosen.system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    for messages in CONVERSATIONS:  # without a system message, Ollama puts SYSTEM first as the template does
        assert render_go(chosen.template, ollama_messages(messages, chosen.system)) == hf_render(tokenizer, messages)


def test_llama3_template_drops_the_bos_llama_cpp_adds():
    def render(messages):
        return jinja2.Template(LLAMA3_TEMPLATE).render(messages=messages, bos_token="<|begin_of_text|>",
                                                       add_generation_prompt=True)

    chosen = translate(render, "<|begin_of_text|>")
    assert (chosen.family, chosen.system, chosen.stops) == ("Llama 3", None, ("<|eot_id|>",))
    messages = CONVERSATIONS[1]
    assert "<|begin_of_text|>" + render_go(chosen.template, messages) == render(messages)


@pytest.mark.parametrize("template", [
    GEMMA_TEMPLATE,
    # ChatML, but with a blank line after each turn: close is not the same, so it is refused too
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
])
def test_an_untranslatable_template_is_refused_in_one_line(template):
    def render(messages):
        return jinja2.Template(template).render(messages=messages, add_generation_prompt=True)

    with pytest.raises(UserError, match=r"not one tuner can translate for Ollama \(supported: ChatML, Llama 3\)") as e:
        translate(render, None)
    assert "\n" not in str(e.value)


def test_ollama_export_refuses_before_any_work(tiny_run, demo_model_dir, tmp_path, monkeypatch):
    base = tmp_path / "gemma-chat-base"
    shutil.copytree(demo_model_dir, base)
    settings = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**settings, "chat_template": GEMMA_TEMPLATE}))
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "adapters", run / "adapters")
    adapter = json.loads((run / "adapters" / "adapter_config.json").read_text())
    (run / "adapters" / "adapter_config.json").write_text(json.dumps({**adapter, "model": str(base)}))
    with monkeypatch.context() as patch:
        patch.setattr("engine.export.fused.fused_float32", lambda *a: pytest.fail("worked before refusing"))
        with pytest.raises(UserError, match="translate for Ollama"):
            export_run(run, "ollama", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    gguf_file = export_run(run, "gguf", tmp_path / "out.gguf")  # the GGUF alone carries the template as it is
    assert gguf.GGUFReader(gguf_file).fields["tokenizer.chat_template"].contents() == GEMMA_TEMPLATE


# --- SmolLM2, for real --------------------------------------------------------------------------


def test_smollm2_trained_exported_and_imported_still_answers_paris(tmp_path):
    from mlx_lm import generate
    from mlx_lm.utils import load
    from transformers import AutoTokenizer

    from engine.config import load_stages
    from engine.model.gguf import import_gguf
    from engine.model.load import cast_model
    from engine.training.chain import run_chain

    config = write_config(tmp_path, model="builtin:smollm2-135m", iters=2, batch_size=2, num_layers=2,
                          max_seq_length=128, steps_per_eval=100, val_batches=1, learning_rate=1e-5,
                          lora_parameters={"rank": 4, "scale": 2.0, "dropout": 0.0})
    [result] = run_chain(load_stages([config]), lambda event: None)
    out = export_run(result.run_dir, "ollama", tmp_path / "ollama")
    modelfile = (out / "Modelfile").read_text()
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    folder = import_gguf(out / "model.gguf", tmp_path / "imported")
    assert "quantization" not in json.loads((folder / "config.json").read_text())  # F16 from a Q4_1 base
    model, tokenizer = load(str(folder))
    cast_model(model, mx.float32)
    reference = AutoTokenizer.from_pretrained(json.loads((result.run_dir / "adapters" / "adapter_config.json")
                                                         .read_text())["model"])
    question = [{"role": "user", "content": "What is the capital of France?"}]
    text = hf_render(tokenizer, question)
    assert text == hf_render(reference, question)  # the chat template travelled in the GGUF
    prompt = tokenizer.encode(text, add_special_tokens=False)
    assert prompt == reference.encode(text, add_special_tokens=False)  # and the tokenizer too
    assert render_go(modelfile_template(modelfile), ollama_messages(question, "You are a helpful AI assistant "
                     "named SmolLM, trained by Hugging Face")) == hf_render(reference, question)
    assert "Paris" in generate(model, tokenizer, prompt, max_tokens=24)
