"""The teacher pass: bins under the data's S through ptp.sampling, auxiliaries inside them, out-of-set targets."""

from __future__ import annotations

import math

import pytest
import torch

import ptp
from conftest import ARCHITECTURES, Operators, tiny_base
from ptp.data import pack_documents
from ptp.data.packing import document_mask
from ptp.model.attention import use_mask_attention
from ptp.model.ptp import teacher_logits
from ptp.train.teacher import run_windows, teacher_pass, window_auxiliaries
from ptp.train.windows import layout_windows
from train_support import SAMPLING, documents, reference

#: The operators a linear layer's matrix product runs as (on a CPU, a packed layer's: ptp.model.linear).
PRODUCTS = ("mm", "addmm", "bmm", "_linear_pointwise")


@pytest.fixture
def model():
    return ptp.PTPModel(tiny_base("llama"), window_length=4).eval()


def _rows(*specs, length=24):
    return pack_documents(documents(*specs), length)[0]


def test_bins_are_those_of_ptp_sampling_for_each_documents_own_logits(model):
    text = [5, 9, 14, 3, 22, 7, 30]
    rows = _rows((text, 2), ([40, 41, 42], 1))
    every = torch.arange(rows.tokens.shape[1]).expand(len(rows), -1)
    teacher = teacher_pass(model, rows, SAMPLING, every)
    start = int((rows.tokens[0] == 5).nonzero()[0])
    with torch.no_grad():
        alone = model.base_model(input_ids=torch.tensor([text])).logits[0]
    left, right = ptp.bins(alone[:-1], torch.tensor(text[1:]), SAMPLING)
    torch.testing.assert_close(teacher.left[0, start + 1 : start + len(text)], left, rtol=0, atol=1e-6)
    torch.testing.assert_close(teacher.right[0, start + 1 : start + len(text)], right, rtol=0, atol=1e-6)


def test_the_bins_of_the_targets_alone_are_those_of_every_position_at_the_targets(model):
    rows = pack_documents(_sampled_documents(model), 48)[0]
    windows = layout_windows(rows, torch.tensor([[0, 7, 12, 20]] * len(rows)), 4)
    every = teacher_pass(model, rows, SAMPLING, torch.arange(48).expand(len(rows), -1))
    targets = teacher_pass(model, rows, SAMPLING, windows.targets)
    assert torch.equal(targets.left, every.left.gather(1, windows.targets))
    assert torch.equal(targets.right, every.right.gather(1, windows.targets))


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_auxiliaries_lie_in_the_bins_and_pick_the_teachers_token(model, beta):
    rows = pack_documents(_sampled_documents(model), 48)[0]
    starts = torch.tensor([[2, 7, 12, 20]] * len(rows))
    batch = run_windows(
        model, rows, starts, SAMPLING, beta=beta, generator=torch.Generator().manual_seed(0), teacher_targets=True
    )
    assert batch.valid.any()
    picked = ptp.pick(batch.u, batch.teacher_logits, SAMPLING)
    assert torch.equal(picked[batch.valid], batch.tokens[batch.valid])


def test_beta_below_one_puts_auxiliaries_near_the_bin_edges(model):
    rows = pack_documents(_sampled_documents(model, count=8), 48)[0]
    windows = layout_windows(rows, torch.arange(2, 42, 4).expand(len(rows), -1), 4)
    teacher = teacher_pass(model, rows, SAMPLING, windows.targets)
    spread = {}
    for beta in (1.0, 0.2):
        u, valid, _ = window_auxiliaries(teacher, windows, beta=beta, generator=torch.Generator().manual_seed(1))
        left, right = teacher.left, teacher.right
        where = (u - left) / (right - left)
        spread[beta] = (where[valid] - 0.5).abs().mean()
    assert spread[1.0] == pytest.approx(0.25, abs=0.05) and spread[0.2] > 0.35


def test_a_target_outside_the_kept_set_stops_its_window_or_is_an_error(model):
    # Raw text under greedy S: a token other than the argmax has an empty bin. Two greedy tokens, then another one.
    greedy = ptp.SamplingConfig.greedy()
    rows = _rows((_greedy_but_the_third(model) + [50, 51], 1))
    windows = layout_windows(rows, torch.tensor([[1]]), 4)  # predicts text[1], text[2], text[3], 50
    teacher = teacher_pass(model, rows, greedy, windows.targets)
    u, valid, empty = window_auxiliaries(teacher, windows, out_of_set="stop")
    assert valid[0].tolist() == [True, True, False, False] and int(empty) >= 1
    assert (u[0, 2:] == 0.5).all()
    with pytest.raises(ValueError, match="outside the kept set"):
        window_auxiliaries(teacher, windows, out_of_set="error")


def test_the_mode_chain_holds_while_the_windows_earlier_tokens_are_the_teachers_argmax(model):
    # Greedy text but for its third new token: the window's slots after that token are off the chain.
    rows = _rows((_greedy_but_the_third(model) + [50, 51], 1))
    batch = run_windows(model, rows, torch.tensor([[1]]), SAMPLING, generator=torch.Generator().manual_seed(0),
                        chain=True)  # fmt: skip
    assert batch.on_chain[0].tolist() == [True, True, True, False]

    # Sampled text, many windows: the oracle is the definition, slot by slot.
    rows = pack_documents(_sampled_documents(model, count=8), 48)[0]
    starts = torch.arange(2, 42, 4).expand(len(rows), -1)
    batch = run_windows(model, rows, starts, SAMPLING, generator=torch.Generator().manual_seed(1), teacher_targets=True,
                        chain=True)  # fmt: skip
    assert run_windows(model, rows, starts, SAMPLING, generator=torch.Generator().manual_seed(1)).on_chain is None
    is_mode = (batch.tokens == batch.teacher_logits.argmax(-1)).tolist()
    for b, row in enumerate(batch.on_chain.tolist()):
        for a, chained in enumerate(row):
            first = a - a % 4
            assert chained == all(is_mode[b][first:a])
    assert batch.on_chain.any() and not batch.on_chain.all()


def _greedy_but_the_third(model):
    """Token 5 and three greedy tokens after it, the third replaced by another token."""
    text = [5]
    with torch.no_grad():
        for _ in range(3):
            text.append(int(model.base_model(input_ids=torch.tensor([text])).logits[0, -1].argmax()))
    text[3] = (text[3] + 1) % 96
    return text


def _sampled_documents(model, count=4):
    prompts = torch.randint(3, 96, (count, 3), generator=torch.Generator().manual_seed(2))
    u = torch.rand(count, 40, generator=torch.Generator().manual_seed(3))
    out = reference(model, prompts, auxiliaries=u, eos_token_id=[])
    return documents(*((seq.tolist(), 3) for seq in out.sequences))


@pytest.mark.parametrize("arch", ARCHITECTURES)
@torch.no_grad()
def test_the_teachers_head_runs_at_the_positions_asked_for_alone(arch):
    """The bins need the logits before each target alone (half of a training row's positions, or fewer): the
    language-model head runs at those positions and not at every one, for a PTPModel's base and for a plain causal
    LM alike; the logits are those of the whole pass there, bit for bit (also for a head that the model does not call
    as its output-embedding module, whose logits are taken from every position's)."""
    rows = _rows(([5, 9, 14, 3, 22, 7, 30], 2), ([40, 41, 42, 43, 44], 1), length=16)
    at = torch.tensor([[0, 3, 3, 7, 12], [1, 2, 9, 15, 0]])[: len(rows)]
    inputs = dict(position_ids=rows.positions, attention_mask=document_mask(rows.document))
    base = tiny_base(arch, vocab=101)  # a vocabulary no other product's width shares
    use_mask_attention(base)
    for model in (ptp.PTPModel(tiny_base(arch, vocab=101), window_length=4).eval(), base):
        every = teacher_logits(model, rows.tokens, **inputs)
        with Operators() as ops:
            got = teacher_logits(model, rows.tokens, **inputs, at=at)
        assert torch.equal(got, every.gather(1, at.unsqueeze(-1).expand(-1, -1, every.shape[-1])))
        products = [made for name, _, made in ops.ran if name in PRODUCTS and made[-1] == 101]
        assert products and all(math.prod(made[:-1]) == at.numel() for made in products)
    base.get_output_embeddings = lambda: torch.nn.Identity()  # a head the hook cannot see
    assert torch.equal(teacher_logits(base, rows.tokens, **inputs, at=at), got)


def test_a_float32_teacher_computes_its_bins_in_float32_inside_a_16_bit_runs_autocast(model):
    rows = pack_documents(_sampled_documents(model), 48)[0]
    every = torch.arange(48).expand(len(rows), -1)
    plain = teacher_pass(model, rows, SAMPLING, every, keep_cache=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = teacher_pass(model, rows, SAMPLING, every, keep_cache=False)
        low = teacher_pass(ptp.PTPModel(tiny_base("llama", dtype=torch.bfloat16)), rows, SAMPLING, every)
    assert torch.equal(inside.left, plain.left) and torch.equal(inside.right, plain.right)
    assert not torch.equal(low.left, plain.left)  # a 16-bit teacher's bins differ: what float32_bins avoids
