"""ptp.decode.batched: the fast sampler returns exactly what :func:`ptp.sample_autoregressive` returns."""

from __future__ import annotations

import pytest
import torch

import ptp
from conftest import ARCHITECTURES, EOS, PAD, assert_same_tokens, left_padded, tiny_base, uniform, wrap
from ptp.decode.batched import sample_batched
from test_decode_engine import NEW, SAMPLINGS, _reference_with_eos, assert_well_formed

PROMPT_LENGTHS = [7, 2, 5, 3, 6, 1]


def _fast(model, ids, mask, u, sampling: dict, **options):
    config = ptp.SamplingConfig(**sampling)
    return sample_batched(model, ids, mask, auxiliaries=u, max_new_tokens=u.shape[1], sampling=config, **options)


@pytest.mark.parametrize("sampling_name", SAMPLINGS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_fast_sampler_equals_the_reference(arch, sampling_name):
    case = ARCHITECTURES.index(arch) * len(SAMPLINGS) + list(SAMPLINGS).index(sampling_name)
    model = tiny_base(arch, seed=case)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=case)
    u = uniform(len(PROMPT_LENGTHS), NEW, seed=case)
    expected, eos = _reference_with_eos(model, ids, mask, u, SAMPLINGS[sampling_name])
    for check_every in (1, 3, 16, NEW + 5):  # drop stopped rows every step, mid-run, once, never
        got = _fast(model, ids, mask, u, SAMPLINGS[sampling_name], eos_token_id=eos, check_every=check_every)
        assert_same_tokens(got, expected)
        assert_well_formed(got, [eos], PAD)


def test_stopped_rows_leave_the_batch_and_the_loop_ends_when_all_stopped():
    model = tiny_base("llama")
    sizes = []
    model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                    with_kwargs=True)  # fmt: skip
    ids, mask = left_padded(PROMPT_LENGTHS, seed=1)
    u = uniform(len(PROMPT_LENGTHS), NEW, seed=1)
    expected, eos = _reference_with_eos(model, ids, mask, u, dict(temperature=1.0))
    sizes.clear()
    got = _fast(model, ids, mask, u, dict(temperature=1.0), eos_token_id=eos, check_every=4)
    assert_same_tokens(got, expected)
    longest = int(expected.lengths.max())
    assert got.num_calls == len(sizes) == min(NEW, -(-longest // 4) * 4)
    running = [int((expected.lengths > 4 * (g // 4)).sum()) for g in range(len(sizes))]
    assert sizes == running, "from each check on, the batch holds exactly the rows still running"


def test_several_eos_ids_a_pad_id_a_ptp_model_and_no_eos():
    base = tiny_base("gpt2", seed=3)
    model, reference = wrap(base, lora_rank=4, embedding_size=8)
    ids, mask = left_padded([4, 2, 6], seed=3)
    u = uniform(3, NEW, seed=3)
    free = _fast(reference, ids, mask, u, dict(temperature=1.2), eos_token_id=[])
    assert free.lengths.tolist() == [NEW] * 3
    eos = [int(free.new_tokens[0, 5]), int(free.new_tokens[2, 9])]
    for eos_token_id, pad in ((eos, 77), (None, None), (EOS, None)):
        expected = ptp.sample_autoregressive(reference, ids, mask, auxiliaries=u, max_new_tokens=NEW,
                                             temperature=1.2, eos_token_id=eos_token_id, pad_token_id=pad)  # fmt: skip
        got = _fast(model, ids, mask, u, dict(temperature=1.2), eos_token_id=eos_token_id, pad_token_id=pad,
                    check_every=2)  # fmt: skip
        assert_same_tokens(got, expected)


def test_bad_arguments_are_refused_like_the_references():
    model = tiny_base("llama")
    ids, mask = left_padded([3, 2])
    with pytest.raises(ValueError, match="check_every must be"):
        _fast(model, ids, mask, uniform(2, 4), dict(), check_every=0)
    with pytest.raises(ValueError, match="auxiliaries must have shape"):
        sample_batched(model, ids, mask, auxiliaries=uniform(2, 3), max_new_tokens=4, sampling=ptp.SamplingConfig())
    with pytest.raises(ValueError, match="left-padded"):
        _fast(model, ids, torch.tensor([[1, 0, 1], [0, 1, 1]]), uniform(2, 4), dict())
