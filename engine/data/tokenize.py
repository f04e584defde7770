"""Records to token ids plus a per-token role: prompt or completion.

Chats are rendered with the tokenizer's own chat template. Every assistant turn is completion
(mlx-lm trains only the last one) and everything else is prompt. The completion spans are found
in characters by rendering the conversation up to each assistant turn (with the generation
prompt) and up to its end; the full text is then tokenised once with offsets and each token
takes the role of the character it starts on. So the masks follow the template exactly, and the
end-of-turn token the model must learn to emit is part of the completion. Within each completion,
the tokens of the assistant's own content (no end-of-turn token, no newline, no role header) are
also marked as the example's ``answer``, which validation scores apart (answer accuracy).

Truncation at ``max_seq_length`` keeps the start of the sequence and is counted; an example left
with no completion token to learn is dropped and reported, never trained on silently.

A sweep's runs read the same data with the same tokenizer: within :func:`tokenised_once`, a split
tokenised once is reused (its arrays made read-only, so no run can change another's data).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from engine.data.records import Record
from engine.roles import COMPLETION, PROMPT


@dataclass(frozen=True)
class Example:
    ids: np.ndarray  # int32 token ids
    roles: np.ndarray  # int8: PROMPT or COMPLETION per token
    origin: str
    full_length: int  # tokens before truncation
    answer: np.ndarray | None = None  # bool per token: the assistant's content (no template markup); None: none

    @property
    def answer_tokens(self) -> int:
        """Answer tokens that are prediction targets."""
        return 0 if self.answer is None else int(self.answer[1:].sum())

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.ids)

    @property
    def completion_targets(self) -> int:
        """Completion tokens that are prediction targets (the first token never is)."""
        return int((self.roles[1:] == COMPLETION).sum())

    @property
    def prompt_targets(self) -> int:
        return int((self.roles[1:] == PROMPT).sum())


@dataclass
class TokenizedSplit:
    examples: list[Example] = field(default_factory=list)
    truncated: int = 0  # examples cut at max_seq_length (kept or dropped)
    completion_cut: int = 0  # of those, examples that lost completion tokens
    dropped: list[str] = field(default_factory=list)  # origins left with no completion target

    def summary(self, name: str, max_seq_length: int) -> str | None:
        """One line for a notice, or None when nothing was cut."""
        if not self.truncated:
            return None
        line = (
            f"{name}: {self.truncated} example(s) longer than max_seq_length={max_seq_length} "
            f"were truncated; {self.completion_cut} lost completion tokens"
        )
        if self.dropped:
            shown = ", ".join(self.dropped[:3]) + (" ..." if len(self.dropped) > 3 else "")
            line += f"; {len(self.dropped)} kept no completion token and were dropped ({shown})"
        return line


def hf_tokenizer(tokenizer):
    """The Hugging Face tokenizer inside mlx-lm's TokenizerWrapper (or the object itself).

    A Hugging Face fast tokenizer has a ``_tokenizer`` of its own (the Rust one), so the wrapper
    is recognised by type, not by attribute.
    """
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    return tokenizer._tokenizer if isinstance(tokenizer, TokenizerWrapper) else tokenizer


class TemplateRenderer:
    """Renders a tokenizer's chat template, three to four times faster than ``apply_chat_template``.

    Finding the role masks renders every example two or more times, and transformers' per-call
    overhead dominates that. So the template is compiled once with transformers' own compiler
    and rendered directly with the same variables; the first ``VERIFY`` renders are checked
    against ``apply_chat_template`` and any difference (a template needing something we don't
    pass) switches back to it for good. Records with tools always take the slow path.
    """

    VERIFY = 16

    def __init__(self, tok):
        self.tok = tok
        self.checks_left = self.VERIFY
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            self.compiled = _compile_jinja_template(tok.chat_template)
        except Exception:  # a private helper: if it moves, render the slow way
            self.compiled = None

    def __call__(self, messages, tools, generation_prompt: bool) -> str:
        if not messages:
            return ""
        if self.compiled is None or tools:
            return self._slow(messages, tools, generation_prompt)
        text = self.compiled.render(
            messages=list(messages), add_generation_prompt=generation_prompt, **self.tok.special_tokens_map
        )
        if self.checks_left:
            self.checks_left -= 1
            if text != (slow := self._slow(messages, tools, generation_prompt)):
                self.compiled = None
                return slow
        return text

    def _slow(self, messages, tools, generation_prompt: bool) -> str:
        return self.tok.apply_chat_template(
            list(messages), tools=tools, tokenize=False, add_generation_prompt=generation_prompt
        )


def completion_spans(tok, record: Record, render: TemplateRenderer | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text of a chat record and the character spans of its assistant turns."""
    messages, tools = record.messages, record.tools
    if getattr(tok, "chat_template", None) is None:
        return _plain_render(tok, messages)
    _render = render or TemplateRenderer(tok)
    full = _render(messages, tools, False)
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(messages[:i], tools, True)
        last = i == len(messages) - 1
        through = full if last else _render(messages[: i + 1], tools, False)
        if full.startswith(before) and full.startswith(through) and len(through) > len(before):
            start, end = len(before), len(through)
        else:  # templates that render a last turn differently: find the content itself
            start = full.find(message["content"], cursor)
            if start < 0:
                raise ValueError(f"{record.origin}: assistant turn {i} not found in the chat template's output")
            end = start + len(message["content"])
            eos = getattr(tok, "eos_token", None)
            if eos and full.startswith(eos, end):
                end += len(eos)
        spans.append((start, end))
        cursor = end
    return full, spans


def _plain_render(tok, messages) -> tuple[str, list[tuple[int, int]]]:
    """A tokenizer without a chat template: turns joined by newlines, EOS after each answer."""
    text, spans = "", []
    eos = tok.eos_token or ""
    for message in messages:
        if message["role"] == "assistant":
            start = len(text)
            text += message["content"] + eos
            spans.append((start, len(text)))
            text += "\n"
        else:
            text += message["content"] + "\n"
    return text, spans


def answer_spans(full: str, record: Record, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The character spans of the assistant's own content inside its completion ``spans`` (one
    per assistant turn, in order): the completion less the template's markup around the answer
    (end-of-turn token, newline, role header). A template that changes the content (trims it)
    is matched on the trimmed text; a turn whose content is not found has no answer span."""
    contents = [m["content"] for m in record.messages if m["role"] == "assistant"]
    found = []
    for content, (start, end) in zip(contents, spans):
        for text in (content, content.strip()) if isinstance(content, str) else ():
            if text and (at := full.find(text, start, end)) >= 0:
                found.append((at, at + len(text)))
                break
    return found


def _answer_from_offsets(offsets, roles: np.ndarray, spans) -> np.ndarray:
    """Completion tokens that overlap an answer span (a token that carries the content's first
    character together with markup before it still counts: it decides the answer)."""
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(offsets))
    answer = np.zeros(len(offsets), dtype=bool)
    for start, end in spans:
        answer |= (starts < end) & (ends > start)
    return answer & (roles == COMPLETION)


def _roles_from_offsets(offsets, spans) -> np.ndarray:
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    completion = np.zeros(len(offsets), dtype=bool)
    for start, end in spans:
        completion |= (starts >= start) & (starts < end)
    return np.where(completion, COMPLETION, PROMPT).astype(np.int8)


def encode_records(tokenizer, records: list[Record]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Untruncated (ids, roles) for each record, tokenised in one batched call."""
    return [(ids, roles) for ids, roles, _ in encode_with_answers(tokenizer, records)]


def encode_with_answers(tokenizer, records: list[Record]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Untruncated (ids, roles, answer mask) for each record; plain text has no answer."""
    tok = hf_tokenizer(tokenizer)
    render = TemplateRenderer(tok) if getattr(tok, "chat_template", None) else None
    texts, spans = [], []
    for record in records:
        if record.messages is None:
            texts.append(None)
            spans.append(None)
        else:
            text, s = completion_spans(tok, record, render)
            texts.append(text)
            spans.append(s)
    out: list = [None] * len(records)
    chat_idx = [i for i, t in enumerate(texts) if t is not None]
    if chat_idx:
        enc = tok(
            [texts[i] for i in chat_idx], add_special_tokens=False, return_offsets_mapping=True
        )
        for j, i in enumerate(chat_idx):
            ids, offsets = np.asarray(enc["input_ids"][j], dtype=np.int32), enc["offset_mapping"][j]
            roles = _roles_from_offsets(offsets, spans[i])
            answers = answer_spans(texts[i], records[i], spans[i])
            out[i] = (ids, roles, _answer_from_offsets(offsets, roles, answers))
    text_idx = [i for i, t in enumerate(texts) if t is None]
    if text_idx:
        enc = tok([records[i].text for i in text_idx], add_special_tokens=True)
        for j, i in enumerate(text_idx):
            ids = list(enc["input_ids"][j])
            if tok.eos_token_id is not None and (not ids or ids[-1] != tok.eos_token_id):
                ids.append(tok.eos_token_id)
            ids = np.asarray(ids, dtype=np.int32)
            out[i] = (ids, np.full(len(ids), COMPLETION, dtype=np.int8), np.zeros(len(ids), dtype=bool))
    return out


_MEMO: ContextVar[dict | None] = ContextVar("tokenised_once", default=None)


@contextmanager
def tokenised_once() -> Iterator[None]:
    """Within this block, :func:`tokenize_split` tokenises the same records with the same tokenizer
    and length limit once (a sweep's points differ in PLW, seed or learning rate, not in data)."""
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def tokenize_split(tokenizer, records: list[Record], max_seq_length: int) -> TokenizedSplit:
    """Tokenise, truncate to ``max_seq_length`` and account for everything that was cut."""
    memo = _MEMO.get()
    if memo is None:
        return _tokenize_split(tokenizer, records, max_seq_length)
    key = _memo_key(tokenizer, records, max_seq_length)
    if key not in memo:
        memo[key] = _frozen(_tokenize_split(tokenizer, records, max_seq_length))
    kept = memo[key]
    return replace(kept, examples=list(kept.examples), dropped=list(kept.dropped))


def _memo_key(tokenizer, records: list[Record], max_seq_length: int) -> tuple:
    """What decides the tokens: the tokenizer (its files' folder, vocabulary size and chat template),
    the records and the length limit."""
    digest = hashlib.sha256(repr(records).encode()).hexdigest()
    return (getattr(tokenizer, "name_or_path", None), len(tokenizer.get_vocab()),
            getattr(tokenizer, "chat_template", None), max_seq_length, digest)


def _frozen(split: TokenizedSplit) -> TokenizedSplit:
    for example in split.examples:
        for array in (example.ids, example.roles, example.answer):
            if array is not None:
                array.setflags(write=False)
    return split


def _tokenize_split(tokenizer, records: list[Record], max_seq_length: int) -> TokenizedSplit:
    result = TokenizedSplit()
    for record, (ids, roles, answer) in zip(records, encode_with_answers(tokenizer, records)):
        example = Example(ids[:max_seq_length], roles[:max_seq_length], record.origin, len(ids), answer[:max_seq_length])
        if example.truncated:
            result.truncated += 1
            if (roles[max_seq_length:] == COMPLETION).any():
                result.completion_cut += 1
        if example.completion_targets == 0:
            result.dropped.append(record.origin)
            continue
        result.examples.append(example)
    return result
