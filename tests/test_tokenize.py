"""Role masks: completion tokens are exactly the assistant turns of the rendered chat template."""

import numpy as np

from engine.data.records import Features, parse_record
from engine.roles import COMPLETION, PROMPT
from engine.data.tokenize import hf_tokenizer, tokenize_split


def decode_role(tok, ids, roles, role):
    """Decode each maximal run of ``role`` tokens separately."""
    runs, current = [], []
    for i, r in zip(ids, roles):
        if r == role:
            current.append(int(i))
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tok.decode(run) for run in runs]


def encode_one(tokenizer, raw, max_len=4096):
    split = tokenize_split(tokenizer, [parse_record(raw, "test:1", Features())], max_len)
    assert len(split.examples) == 1
    return split.examples[0]


def test_single_turn_completion_is_answer_and_end_of_turn(demo_tokenizer):
    tok = hf_tokenizer(demo_tokenizer)
    ex = encode_one(demo_tokenizer, {"prompt": "What is the capital of Zor?", "completion": "Zorbad"})
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of Zor?"}, {"role": "assistant", "content": "Zorbad"}],
        tokenize=False,
    )
    assert tok.decode(ex.ids.tolist()) == text
    assert decode_role(tok, ex.ids, ex.roles, COMPLETION) == ["Zorbad<|im_end|>\n"]
    assert decode_role(tok, ex.ids, ex.roles, PROMPT) == [
        "<|im_start|>user\nWhat is the capital of Zor?<|im_end|>\n<|im_start|>assistant\n"
    ]


def test_multi_turn_every_assistant_turn_is_completion(demo_tokenizer):
    tok = hf_tokenizer(demo_tokenizer)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Reverse 'cat'."},
        {"role": "assistant", "content": "tac"},
        {"role": "user", "content": "Now uppercase it."},
        {"role": "assistant", "content": "TAC"},
    ]
    ex = encode_one(demo_tokenizer, {"messages": messages})
    assert decode_role(tok, ex.ids, ex.roles, COMPLETION) == ["tac<|im_end|>\n", "TAC<|im_end|>\n"]
    prompts = decode_role(tok, ex.ids, ex.roles, PROMPT)
    assert prompts[0].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nReverse 'cat'.")
    assert prompts[1] == "<|im_start|>user\nNow uppercase it.<|im_end|>\n<|im_start|>assistant\n"


def test_top_level_system_field_becomes_prompt(demo_tokenizer):
    tok = hf_tokenizer(demo_tokenizer)
    ex = encode_one(
        demo_tokenizer,
        {"system": "You are terse.", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    )
    assert decode_role(tok, ex.ids, ex.roles, PROMPT)[0].startswith("<|im_start|>system\nYou are terse.")
    assert decode_role(tok, ex.ids, ex.roles, COMPLETION) == ["hello<|im_end|>\n"]


def test_alpaca_record_joins_instruction_and_input(demo_tokenizer):
    tok = hf_tokenizer(demo_tokenizer)
    ex = encode_one(demo_tokenizer, {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"})
    assert "Add the numbers.\n\n2 and 3" in decode_role(tok, ex.ids, ex.roles, PROMPT)[0]
    assert decode_role(tok, ex.ids, ex.roles, COMPLETION) == ["5<|im_end|>\n"]


def test_plain_text_is_all_completion_with_eos(demo_tokenizer):
    tok = hf_tokenizer(demo_tokenizer)
    ex = encode_one(demo_tokenizer, {"text": "The sky is blue."})
    assert (ex.roles == COMPLETION).all()
    assert ex.ids[-1] == tok.eos_token_id
    assert tok.decode(ex.ids[:-1].tolist()) == "The sky is blue."


def test_truncation_is_counted_and_empty_completions_dropped(demo_tokenizer):
    long_prompt = "word " * 200
    records = [
        parse_record({"prompt": long_prompt, "completion": "yes"}, "f:1", Features()),  # answer cut away
        parse_record({"prompt": "short", "completion": "ok " * 100}, "f:2", Features()),  # answer cut in part
        parse_record({"prompt": "short", "completion": "fine"}, "f:3", Features()),  # untouched
    ]
    split = tokenize_split(demo_tokenizer, records, 40)
    assert split.truncated == 2
    assert split.completion_cut == 2
    assert split.dropped == ["f:1"]
    assert [e.origin for e in split.examples] == ["f:2", "f:3"]
    assert all(len(e) <= 40 for e in split.examples)
    assert split.examples[0].full_length > 40
    assert "dropped" in split.summary("train", 40)


def test_batched_encoding_matches_one_at_a_time(demo_tokenizer):
    raws = [
        {"prompt": "a b c", "completion": "d"},
        {"text": "plain words here"},
        {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y z"}]},
    ]
    records = [parse_record(r, f"f:{i}", Features()) for i, r in enumerate(raws)]
    together = tokenize_split(demo_tokenizer, records, 512).examples
    alone = [tokenize_split(demo_tokenizer, [r], 512).examples[0] for r in records]
    for a, b in zip(together, alone):
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.roles, b.roles)


def test_fast_template_rendering_matches_apply_chat_template(demo_tokenizer):
    from engine.model.demo_data import demo_records
    from engine.data.tokenize import TemplateRenderer

    tok = hf_tokenizer(demo_tokenizer)
    render = TemplateRenderer(tok)
    assert render.compiled is not None
    for record in demo_records(300, seed=5):
        messages = record["messages"]
        for n, prompt in ((len(messages), False), (len(messages) - 1, True)):
            assert render(messages[:n], None, prompt) == tok.apply_chat_template(
                messages[:n], tokenize=False, add_generation_prompt=prompt)
    assert render.checks_left == 0 and render.compiled is not None


def test_fast_rendering_falls_back_when_it_disagrees(demo_tokenizer):
    from engine.data.tokenize import TemplateRenderer

    tok = hf_tokenizer(demo_tokenizer)
    render = TemplateRenderer(tok)

    class Wrong:
        def render(self, **kwargs):
            return "something else"

    render.compiled = Wrong()
    messages = [{"role": "user", "content": "hi"}]
    assert render(messages, None, True) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render.compiled is None
