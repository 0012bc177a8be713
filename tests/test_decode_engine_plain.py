"""The engine decoding a plain causal LM one token per call (``use_drafter=False``): exactly the tokens of
:func:`ptp.sample_autoregressive`, and finished rows leave the batch."""

from __future__ import annotations

import pytest
import torch

import ptp
from conftest import ARCHITECTURES, EOS, PAD, assert_same_tokens, left_padded, tiny_base, uniform, wrap
from test_decode_engine import NEW, SAMPLINGS, _reference_with_eos, assert_well_formed, fake_capture

PROMPT_LENGTHS = [7, 2, 5, 3, 6, 1]


def _plain(model, ids, mask, u, sampling: dict, **options):
    return ptp.generate(model, ids, mask, auxiliaries=u, max_new_tokens=u.shape[1], use_drafter=False,
                        sampling=ptp.SamplingConfig(**sampling), **options)  # fmt: skip


@pytest.mark.parametrize("sampling_name", SAMPLINGS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_plain_decoding_equals_the_reference(arch, sampling_name):
    case = ARCHITECTURES.index(arch) * len(SAMPLINGS) + list(SAMPLINGS).index(sampling_name)
    model = tiny_base(arch, seed=case)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=case)
    u = uniform(len(PROMPT_LENGTHS), NEW, seed=case)
    expected, eos = _reference_with_eos(model, ids, mask, u, SAMPLINGS[sampling_name])
    got = _plain(model, ids, mask, u, SAMPLINGS[sampling_name], eos_token_id=eos)
    assert_same_tokens(got, expected)
    assert_well_formed(got, [eos], PAD)
    assert got.tokens_per_call == 1.0


@pytest.mark.parametrize("captured", [False, True])
def test_finished_rows_leave_the_batch(monkeypatch, captured):
    """Once at most half of a batch is running, its rows move to a batch of the next power of two (the computation
    of each row, and so its tokens, does not change); with a captured step each batch size is captured once."""
    made = fake_capture(monkeypatch) if captured else None
    model = tiny_base("llama", seed=4)
    sizes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["inputs_embeds"].shape[0]
                                    if kwargs.get("input_ids") is None else kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)  # fmt: skip
    lengths = [4, 2, 6, 3, 5, 2, 7, 1]
    ids, mask = left_padded(lengths, seed=4)
    u = uniform(len(lengths), NEW, seed=4)
    expected, eos = _reference_with_eos(model, ids, mask, u, dict(temperature=1.0))
    assert len(set(expected.lengths.tolist())) > 2, "the rows must stop at different times"
    sizes.clear()
    got = _plain(model, ids, mask, u, dict(temperature=1.0), eos_token_id=eos, cuda_graph=captured or None)
    assert_same_tokens(got, expected)
    steps = sizes[1:]  # after the prefill
    assert steps[0] == len(lengths) and steps[-1] < len(lengths), "the batch shrank"
    for i in range(1, len(steps)):
        # Each call commits one token per running row: the prefill the first, step i (from 1) the (i + 1)-th.
        running = int((expected.lengths > i + 1).sum())
        shrunk = 1 << (running - 1).bit_length()
        assert steps[i] == (shrunk if running <= steps[i - 1] // 2 else steps[i - 1]), (i, running, steps)
    if captured:
        assert len(made) <= len(set(steps)), "each batch size is captured once at most"


def test_several_eos_ids_a_pad_id_a_ptp_model_and_no_eos():
    base = tiny_base("gpt2", seed=3)
    model, reference = wrap(base, lora_rank=4, embedding_size=8)
    ids, mask = left_padded([4, 2, 6], seed=3)
    u = uniform(3, NEW, seed=3)
    free = _plain(reference, ids, mask, u, dict(temperature=1.2), eos_token_id=[])
    assert free.lengths.tolist() == [NEW] * 3
    eos = [int(free.new_tokens[0, 5]), int(free.new_tokens[2, 9])]
    for eos_token_id, pad in ((eos, 77), (None, None), (EOS, None)):
        expected = ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=NEW,
                                             temperature=1.2, eos_token_id=eos_token_id, pad_token_id=pad)  # fmt: skip
        for teacher in (model, reference):  # a PTPModel decodes through its frozen base
            got = _plain(teacher, ids, mask, u, dict(temperature=1.2), eos_token_id=eos_token_id, pad_token_id=pad)
            assert_same_tokens(got, expected)


def test_a_plain_model_needs_use_drafter_false():
    model = tiny_base("llama")
    ids, mask = left_padded([3, 2])
    with pytest.raises(TypeError, match="use_drafter=False"):
        ptp.generate(model, ids, mask, max_new_tokens=4, seed=0)
    with pytest.raises(ValueError, match="left-padded"):
        _plain(model, ids, torch.tensor([[1, 0, 1], [0, 1, 1]]), uniform(2, 4), dict())


@pytest.mark.slow
def test_a_plain_model_in_16_bits_decodes_compiled_one_token_a_call():
    """A plain causal LM has no drafting layout to match: compiled in bf16 (how ptp pregenerate --compile samples
    on a GPU) it decodes one position a call, as in 32 bits."""
    model = tiny_base("llama", seed=3).to(torch.bfloat16)
    ids, mask = left_padded([5, 3], seed=3)
    got = _plain(model, ids, mask, uniform(2, NEW, seed=3), {}, eos_token_id=[], compile=True)
    assert got.num_calls == NEW and got.lengths.tolist() == [NEW, NEW]
