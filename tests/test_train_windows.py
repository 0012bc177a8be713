"""Training windows are laid out exactly as the decoding engine lays out auxiliary slots."""

from __future__ import annotations

import pytest
import torch

import ptp
from conftest import randomize_adapter, tiny_base
from ptp.data import pack_documents
from ptp.train.teacher import slot_logits, teacher_pass
from ptp.train.windows import layout_windows, sample_window_starts
from train_support import SAMPLING, documents

N = 5


def _engine_slot_logits(model, prompt, u):
    """The engine's prefill call puts one group of N slots after the prompt: capture their logits (the call keeps
    only the last prompt position's logits and the slots')."""
    captured = []
    hook = model.register_forward_hook(lambda module, inputs, out: captured.append(out))
    try:
        out = model.generate(
            prompt, max_new_tokens=u.shape[1], auxiliaries=u, auxiliary_budget=N, max_draft_length=N, sampling=SAMPLING
        )
    finally:
        hook.remove()
    return captured[0][:, -N:], out


@pytest.mark.parametrize("mode", ["one_hot", "categorical", "independent", "mode_chain", "one_hot+first_slot_token"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_training_slot_logits_equal_the_engines_for_the_same_context_and_auxiliaries(mode, arch):
    mode, _, token = mode.partition("+")
    model = ptp.PTPModel(tiny_base(arch), mode=mode, window_length=N, first_slot_token=bool(token)).eval()
    randomize_adapter(model)
    prompt = torch.tensor([[7, 31, 5, 60, 12, 9, 44]])
    u = torch.rand(1, 12, generator=torch.Generator().manual_seed(3))
    engine, out = _engine_slot_logits(model, prompt, u)

    # The same text as the second document of a packed row, next to an unrelated one; a window starts right after
    # the prompt and its slots carry the generation's u's. An empty second window pads the layout.
    text = out.sequences[0].tolist()
    rows, _ = pack_documents(documents(([50, 51, 52, 53], 1), (text, prompt.shape[1])), 32)
    row_start = _start_of(rows, length=len(text))
    assert rows.tokens[0, row_start : row_start + len(text)].tolist() == text
    starts = torch.tensor([[row_start + prompt.shape[1], -1]])
    windows = layout_windows(rows, starts, N)
    slot_u = torch.full((1, 2 * N), 0.5)
    slot_u[0, :N] = u[0, :N]
    with torch.no_grad():
        training = slot_logits(model, windows, slot_u, teacher_pass(model, rows, SAMPLING, windows.targets).cache)
    torch.testing.assert_close(training[:, :N], engine, rtol=1e-5, atol=1e-5)


def _start_of(rows, length: int) -> int:
    """Row index where the document of ``length`` tokens starts in row 0."""
    for d in rows.document[0].unique().tolist():
        where = (rows.document[0] == d).nonzero().flatten()
        if d >= 0 and len(where) == length:
            return int(where[0])
    raise AssertionError(f"no document of {length} tokens")


def test_window_starts_are_distinct_completion_tokens():
    rows, _ = pack_documents(documents((list(range(3, 15)), 4), (list(range(20, 26)), 5)), 20)
    starts = sample_window_starts(rows, 7, torch.Generator().manual_seed(0))
    chosen = starts[0][starts[0] >= 0]
    assert len(chosen) == 7 and len(chosen.unique()) == 7 and chosen.tolist() == sorted(chosen.tolist())
    assert rows.targets[0, chosen].all()
    everything = sample_window_starts(rows, 30, torch.Generator().manual_seed(0))[0]
    assert (everything >= 0).sum() == rows.targets.sum() == 9 and (everything[9:] == -1).all()


def test_windows_stop_at_their_documents_end_and_see_only_their_document():
    rows, _ = pack_documents(documents(([3, 4, 5, 6, 7, 8], 2), ([9, 10, 11, 12], 1)), 12)
    first = _start_of(rows, length=6)
    # Starting at document position 4, only positions 4 and 5 exist: the third slot is outside the document.
    w = layout_windows(rows, torch.tensor([[first + 4, -1]]), 3)
    assert w.in_document[0].tolist() == [True, True, False, False, False, False]
    assert w.positions[0, :3].tolist() == [3, 4, 5]  # slot predicting document position p has position id p - 1
    context = w.attention[0, 0, :3, :12]
    assert context.sum(dim=1).tolist() == [4, 4, 4] and context[:, first : first + 4].all()
    assert not w.attention[0, 0, 3:, :12].any()  # a missing window sees no context
    slots = w.attention[0, 0, :, 12:].int()
    assert slots[:3, :3].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]] and not slots[:3, 3:].any()
