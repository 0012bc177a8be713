"""ptp.train.inverse: u's recovered from the model's own C-PTP bins select the data tokens, training lowers both
losses, and parallel C-PTP sampling (one pass) equals sequential C-PTP sampling (one slot at a time)."""

from __future__ import annotations

import pytest
import torch

import ptp
from conftest import ARCHITECTURES, randomize_adapter, tiny_base
from ptp.data.packing import PackedRows
from ptp.sampling import pick
from ptp.train.inverse import (
    TEXT_SAMPLING,
    context_pass,
    inverse_batch,
    parallel_sample,
    recover_auxiliaries,
    sequential_sample,
    window_starts,
)
from ptp.train.pretrain import text_rows
from ptp.train.teacher import slot_logits
from ptp.train.windows import layout_windows


def _model(arch: str = "llama", seed: int = 0, window_length: int = 4) -> ptp.PTPModel:
    model = ptp.PTPModel(tiny_base(arch, seed=seed), mode="categorical", train_base=True, window_length=window_length,
                         lora_rank=4, embedding_size=8, sampling=TEXT_SAMPLING)  # fmt: skip
    randomize_adapter(model, seed=seed + 1, std=0.1)
    return model


def _rows(count: int = 3, length: int = 20, seed: int = 0) -> PackedRows:
    generator = torch.Generator().manual_seed(seed)
    documents = [
        torch.randint(3, 96, (int(n),), generator=generator).tolist() for n in [17, 9, 23, 12, 30][: count + 1]
    ]
    return text_rows(documents, length, eos=2)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_recovered_auxiliaries_lie_in_the_data_tokens_bins(arch):
    model = _model(arch, seed=ARCHITECTURES.index(arch))
    rows = _rows()
    starts = window_starts(rows, 5, torch.Generator().manual_seed(1))
    windows = layout_windows(rows, starts, model.config.window_length)
    u, valid = recover_auxiliaries(model, rows, windows, torch.Generator().manual_seed(2))
    assert valid.float().mean() > 0.8
    tokens = rows.tokens.gather(1, windows.targets)
    # The model's own sequential C-PTP sampling with the recovered u's reproduces the data, exactly.
    assert torch.equal(sequential_sample(model, rows, starts, u)[valid], tokens[valid])
    # The one-pass slot logits (those that train) round differently: a data token of tiny probability under this
    # random model has a bin narrower than the round-off, so a few may flip.
    with torch.no_grad():
        logits = slot_logits(model, windows, u, context_pass(model, rows)[1])
    assert (pick(u, logits, TEXT_SAMPLING)[valid] == tokens[valid]).float().mean() > 0.95
    assert ((u >= 0) & (u < 1)).all()


def test_parallel_c_ptp_sampling_equals_sequential_sampling():
    model = _model("gpt2", seed=3, window_length=6)
    rows = _rows(seed=3)
    starts = window_starts(rows, 4, torch.Generator().manual_seed(3))
    u = torch.rand(starts.shape[0], starts.shape[1] * 6, generator=torch.Generator().manual_seed(4))
    parallel = parallel_sample(model, rows, starts, u)
    assert torch.equal(parallel, sequential_sample(model, rows, starts, u))
    assert len(set(parallel.flatten().tolist())) > 10, "the sample must depend on u and context"


def test_inverse_autoregressive_training_lowers_both_losses():
    model = _model("llama", seed=5)
    rows = _rows(count=4, length=16, seed=5)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(6)
    history = []
    for _ in range(30):
        batch = inverse_batch(model, rows, window_starts(rows, 4, generator), generator=generator)
        batch.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append((float(batch.slot_loss.detach()), float(batch.next_token_loss.detach())))
    assert history[-1][0] < 0.7 * history[0][0] and history[-1][1] < 0.7 * history[0][1]
