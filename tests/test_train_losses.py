"""Losses and metrics are the textbook quantities on hand-made inputs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ptp.sampling import SamplingConfig, pick
from ptp.train.losses import (
    cross_entropy_loss,
    draft_tokens,
    forward_kl_loss,
    next_token_loss,
    position_weights,
    reverse_kl_loss,
    slot_weights,
    summarize,
    window_loss,
    window_metrics,
)
from ptp.train.teacher import WindowBatch


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


def test_cross_entropy_is_the_weighted_mean_over_training_slots():
    logits, tokens = _logits(2, 6, 10), torch.randint(10, (2, 6), generator=torch.Generator().manual_seed(1))
    ones = torch.ones(2, 6)
    assert cross_entropy_loss(logits, tokens, ones) == pytest.approx(
        float(F.cross_entropy(logits.flatten(0, 1), tokens.flatten()))
    )
    weights = torch.zeros(2, 6)
    weights[1, 2] = 3.0
    assert cross_entropy_loss(logits, tokens, weights) == pytest.approx(
        float(F.cross_entropy(logits[1, 2], tokens[1, 2]))
    )
    assert cross_entropy_loss(logits, tokens, torch.zeros(2, 6)) == 0.0  # no valid slot: 0, not NaN


def test_divergences():
    student, teacher = _logits(3, 7, seed=1), _logits(3, 7, seed=2)
    ones = torch.ones(3)
    assert forward_kl_loss(teacher, teacher, ones) == pytest.approx(0.0, abs=1e-6)
    p, q = F.softmax(teacher / 0.7, -1), F.softmax(student / 0.7, -1)
    forward = float((p * (p.log() - q.log())).sum(-1).mean())
    reverse = float((q * (q.log() - p.log())).sum(-1).mean())
    assert forward_kl_loss(student, teacher, ones, 0.7) == pytest.approx(forward, rel=1e-5)
    assert reverse_kl_loss(student, teacher, ones, 0.7) == pytest.approx(reverse, rel=1e-5)
    assert forward != pytest.approx(reverse)


def test_a_chain_loss_counts_only_the_valid_slots_on_their_windows_mode_chain():
    logits, teacher = _logits(2, 6, 9, seed=4), _logits(2, 6, 9, seed=5)
    valid = torch.ones(2, 6, dtype=torch.bool)
    valid[1, 5] = False
    chain = torch.tensor([[1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 1]], dtype=torch.bool)
    batch = WindowBatch(logits, logits.argmax(-1), valid, torch.rand(2, 6), SimpleNamespace(window_length=3), teacher,
                        torch.tensor(0), chain)  # fmt: skip
    p, q = F.softmax(teacher / 0.7, -1), F.softmax(logits / 0.7, -1)
    per_slot = (p * (p.log() - q.log())).sum(-1)
    weights = (valid & chain).float() * torch.tensor([1.0, 0.5, 0.25]).repeat(2)
    expected = float((per_slot * weights).sum() / weights.sum())
    sampling = SamplingConfig(temperature=0.7)
    assert float(window_loss(batch, "forward_kl", sampling, 0.5, chain=True)) == pytest.approx(expected, rel=1e-5)
    everything = valid.float() * torch.tensor([1.0, 0.5, 0.25]).repeat(2)
    unchained = float((per_slot * everything).sum() / everything.sum())
    assert float(window_loss(batch, "forward_kl", sampling, 0.5)) == pytest.approx(unchained, rel=1e-5)


def test_position_weights_decay_geometrically_and_mask_invalid_slots():
    assert position_weights(4, 0.5).tolist() == [1.0, 0.5, 0.25, 0.125]
    valid = torch.tensor([[True, True, False, True, True, True]])
    assert slot_weights(valid, 3, 0.5).tolist() == [[1.0, 0.5, 0.0, 1.0, 0.5, 0.25]]


def test_next_token_loss_never_crosses_documents_or_padding():
    logits, tokens = _logits(1, 5, 10), torch.tensor([[1, 2, 3, 4, 5]])
    document = torch.tensor([[0, 0, 1, 1, -1]])
    expected = F.cross_entropy(logits[0, [0, 2]], tokens[0, [1, 3]])
    assert next_token_loss(logits, tokens, document) == pytest.approx(float(expected))


def test_window_metrics_count_leading_correct_slots():
    # Two rows, two windows of three slots each; the last window does not exist.
    correct = torch.tensor([[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    valid = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 1, 1]], dtype=torch.bool)
    exists = torch.tensor([[True, True], [True, False]])
    sums = window_metrics(correct, valid, exists, 3)
    # Prefixes: 2, 0 (a wrong first slot stops it), 2 (an invalid slot stops it too).
    assert sums["windows"] == 3 and sums["prefix"] == 4
    assert sums["histogram"].tolist() == [1, 0, 2, 0]
    # The runs of correct slots from the second slot on: 1, 2 (the first slot is not asked), 1.
    assert sums["after_first"] == 4
    summary = summarize(sums)
    assert summary["correct_prefix"] == pytest.approx(4 / 3)
    assert summary["tokens_per_call"] == pytest.approx(1 + 4 / 3)
    assert summary["histogram"] == pytest.approx([1 / 3, 0, 2 / 3, 0])
    assert summary["accuracy"] == pytest.approx([3 / 4, 4 / 4, 2 / 3])


def test_drafts_are_made_as_the_decoder_makes_them():
    logits, u = _logits(2, 4, 12), torch.rand(2, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(draft_tokens(logits, u, "one_hot", SamplingConfig()), logits.argmax(-1))
    assert torch.equal(draft_tokens(logits, u, "independent", SamplingConfig()), logits.argmax(-1))
    sampling = SamplingConfig(temperature=0.8, top_k=5)
    assert torch.equal(draft_tokens(logits, u, "categorical", sampling), pick(u, logits, sampling))
    assert torch.equal(draft_tokens(logits, u, "mode_chain", sampling), pick(u, logits, sampling))
    assert not math.isnan(float(cross_entropy_loss(logits, logits.argmax(-1), torch.ones(2, 4))))
