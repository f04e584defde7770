"""One example token by token, as the loss sees it: what the Data screen's example browser shows."""

from __future__ import annotations

from engine.data.records import Record
from engine.data.stats import TokenCell
from engine.data.tokenize import encode_records, hf_tokenizer
from engine.roles import COMPLETION, role_weights


def token_view(tokenizer, record: Record, max_seq_length: int, plw: float) -> list[TokenCell]:
    """``record``'s tokens as training sees them: role, loss weight, truncation, special or not.

    ``tokenizer`` is mlx-lm's wrapper, as :func:`engine.data.stats.load_stage_tokenizer` returns it.
    """
    tok = hf_tokenizer(tokenizer)
    ids, roles = encode_records(tokenizer, [record])[0]
    ids = [int(i) for i in ids]
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    weights = role_weights(roles, plw).tolist()
    return [
        TokenCell(
            text=text,
            role="completion" if role == COMPLETION else "prompt",
            weight=weight,
            truncated=position >= max_seq_length,
            special=token in special,
        )
        for position, (token, role, weight, text) in enumerate(zip(ids, roles, weights, _token_texts(tok, ids)))
    ]


def _token_texts(tok, ids: list[int]) -> list[str]:
    """Each token's text as it reads in context.

    Decoding a token alone loses SentencePiece's leading space and splits multi-byte characters
    into replacement marks, so each token is decoded after the one before it and the new text
    kept; the first tokens of an unfinished character show empty and the last carries it whole.
    """
    texts: list[str] = []
    before: list[int] = []
    pending: list[int] = []
    for token in ids:
        pending.append(token)
        head = tok.decode(before) if before else ""
        both = tok.decode(before + pending)
        text = both[len(head) :] if both.startswith(head) else tok.decode(pending)
        if text.endswith("\ufffd") and len(pending) < 4:  # a UTF-8 character needs up to 4 bytes
            texts.append("")
            continue
        texts.append(text)
        before, pending = pending[-1:], []
    return texts
