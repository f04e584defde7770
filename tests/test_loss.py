"""The PLW loss and the eval split against an independent numpy reference."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.roles import COMPLETION, PAD, PROMPT
from engine.loss import EvalTotals, eval_sums, plw_loss


class FixedLogits(nn.Module):
    """A 'model' that ignores its input and returns preset logits."""

    def __init__(self, logits):
        super().__init__()
        self._logits = logits

    def __call__(self, ids):
        return self._logits


def numpy_ce(logits, targets):
    shifted = logits - logits.max(-1, keepdims=True)
    logz = np.log(np.exp(shifted).sum(-1))
    picked = np.take_along_axis(shifted, targets[..., None], -1)[..., 0]
    return logz - picked


def random_batch(seed, batch=3, length=12, vocab=17):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, length)).astype(np.int32)
    roles = np.full((batch, length), PROMPT, np.int8)
    for row in range(batch):
        split = rng.integers(2, length - 3)
        pad = rng.integers(0, 3)
        roles[row, split:] = COMPLETION
        if pad:
            roles[row, length - pad :] = PAD
    logits = rng.normal(size=(batch, length - 1, vocab)).astype(np.float32) * 3
    return ids, roles, logits


@pytest.mark.parametrize("plw", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plw_loss_matches_numpy(plw, seed):
    ids, roles, logits = random_batch(seed)
    ce = numpy_ce(logits.astype(np.float64), ids[:, 1:])
    target_roles = roles[:, 1:]
    w = np.where(target_roles == COMPLETION, 1.0, np.where(target_roles == PROMPT, plw, 0.0))
    expected = (w * ce).sum() / w.sum()

    loss, aux = plw_loss(FixedLogits(mx.array(logits)), mx.array(ids), mx.array(roles), plw)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    wsum, p_ce, p_n, c_ce, c_n = aux.tolist()
    assert wsum == pytest.approx(w.sum(), rel=1e-6)
    assert p_n == (target_roles == PROMPT).sum()
    assert c_n == (target_roles == COMPLETION).sum()
    assert c_ce == pytest.approx(ce[target_roles == COMPLETION].sum(), rel=1e-5)
    assert p_ce == pytest.approx(ce[target_roles == PROMPT].sum(), rel=1e-5)


def test_plw_zero_ignores_prompt_and_one_is_plain_mean():
    ids, roles, logits = random_batch(5)
    model = FixedLogits(mx.array(logits))
    ce = numpy_ce(logits.astype(np.float64), ids[:, 1:])
    target_roles = roles[:, 1:]
    masked, _ = plw_loss(model, mx.array(ids), mx.array(roles), 0.0)
    full, _ = plw_loss(model, mx.array(ids), mx.array(roles), 1.0)
    assert masked.item() == pytest.approx(ce[target_roles == COMPLETION].mean(), rel=1e-5)
    assert full.item() == pytest.approx(ce[target_roles != PAD].mean(), rel=1e-5)


def test_plw_gradient_ignores_prompt_tokens_at_zero():
    """At PLW 0, changing the logits at prompt positions must not change the loss."""
    ids, roles, logits = random_batch(7)
    prompt_pos = roles[:, 1:] == PROMPT
    other = logits.copy()
    other[prompt_pos] += np.random.default_rng(0).normal(size=other[prompt_pos].shape).astype(np.float32)
    a, _ = plw_loss(FixedLogits(mx.array(logits)), mx.array(ids), mx.array(roles), 0.0)
    b, _ = plw_loss(FixedLogits(mx.array(other)), mx.array(ids), mx.array(roles), 0.0)
    c, _ = plw_loss(FixedLogits(mx.array(other)), mx.array(ids), mx.array(roles), 0.1)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert abs(c.item() - a.item()) > 1e-4


def test_eval_split_and_accuracy_match_numpy():
    totals = EvalTotals()
    all_ce, all_roles, all_hits = [], [], []
    for seed in (11, 12):
        ids, roles, logits = random_batch(seed)
        # make some completion predictions right on purpose
        targets = ids[:, 1:]
        right = (roles[:, 1:] == COMPLETION) & (np.arange(targets.shape[1]) % 2 == 0)
        logits[right, targets[right]] += 100.0
        totals.add(eval_sums(FixedLogits(mx.array(logits)), mx.array(ids), mx.array(roles)), len(ids))
        all_ce.append(numpy_ce(logits.astype(np.float64), targets).ravel())
        all_roles.append(roles[:, 1:].ravel())
        all_hits.append((logits.argmax(-1) == targets).ravel())
    ce, r, hits = map(np.concatenate, (all_ce, all_roles, all_hits))
    assert totals.prompt_loss == pytest.approx(ce[r == PROMPT].mean(), rel=1e-5)
    assert totals.completion_loss == pytest.approx(ce[r == COMPLETION].mean(), rel=1e-5)
    assert totals.full_loss == pytest.approx(ce[r != PAD].mean(), rel=1e-5)
    assert totals.completion_accuracy == pytest.approx(hits[r == COMPLETION].mean())
    w = np.where(r == COMPLETION, 1.0, np.where(r == PROMPT, 0.1, 0.0))
    assert totals.weighted_loss(0.1) == pytest.approx((w * ce).sum() / w.sum(), rel=1e-5)
    assert totals.examples == 6
