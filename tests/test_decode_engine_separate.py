"""ptp.decode.engine with a separate drafter: a smaller model with its own weights and cache proposes, the teacher
verifies, and the output is still exactly plain sampling of the teacher with the same u's.

The drafters here are tiny models of *another* architecture and size than the teacher (same vocabulary), so that a
mix-up of the two caches, positions or masks changes the drafts and, through the oracle and the fresh-recomputation
test, shows up.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ptp
from conftest import ARCHITECTURES, PAD, VOCAB, assert_same_tokens, left_padded, randomize_adapter, tiny_base, uniform
from ptp.decode import engine
from test_decode_engine import (
    NEW,
    ORACLE_RUNS,
    PROMPT_LENGTHS,
    SAMPLINGS,
    _install_oracle,
    _reference_with_eos,
    assert_live_slots_match_fresh,
    assert_well_formed,
    count_compactions,
    draw_sampling,
    install_device_oracle,
    record_live_groups,
)

MODES = ("one_hot", "categorical", "independent")


def _pair(arch: str, seed: int, *, mode: str = "one_hot", wrapped_teacher: bool = False, window_length: int = 4):
    """``(teacher, drafter, reference)``: a tiny teacher (plain, or wrapped as a PTPModel), a separate drafter on a
    narrower one-layer model of the next architecture, and a copy of the teacher for the reference sampler."""
    teacher = tiny_base(arch, seed=seed)
    reference = copy.deepcopy(teacher)
    if wrapped_teacher:
        teacher = ptp.PTPModel(teacher, window_length=window_length, lora_rank=4).eval()
        randomize_adapter(teacher, seed=seed + 2)  # unused by the engine when a drafter is given
    small = tiny_base(ARCHITECTURES[(ARCHITECTURES.index(arch) + 1) % len(ARCHITECTURES)], seed=seed + 1, hidden=16,
                      layers=1)  # fmt: skip
    drafter = ptp.PTPModel(small, mode=mode, window_length=window_length, lora_rank=4, embedding_size=8).eval()
    randomize_adapter(drafter, seed=seed + 3)
    return teacher, drafter, reference


@pytest.mark.parametrize("sampling_name", ["greedy", "T1", "T0.7-k8-p0.9", "T1-p0.8"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_separate_drafter_keeps_the_output_exactly_plain_sampling(arch, sampling_name):
    sampling = SAMPLINGS[sampling_name]
    case = ARCHITECTURES.index(arch) * 4 + ["greedy", "T1", "T0.7-k8-p0.9", "T1-p0.8"].index(sampling_name)
    seed = 300 + case
    ids, mask = left_padded(PROMPT_LENGTHS, seed=seed)
    u = uniform(3, NEW, seed=seed)
    teacher, drafter, reference = _pair(arch, seed, mode=MODES[case % 3], wrapped_teacher=case % 2 == 1)
    for batch in (3, 1):
        rows = slice(0, 3) if batch == 3 else slice(1, 2)
        prompt, prompt_mask, aux = ids[rows], mask[rows], u[rows]
        if batch == 1:
            prompt, prompt_mask = prompt[:, -PROMPT_LENGTHS[1] :], prompt_mask[:, -PROMPT_LENGTHS[1] :]
        expected, eos = _reference_with_eos(reference, prompt, prompt_mask, aux, sampling)
        got = engine.generate(teacher, prompt, prompt_mask, drafter=drafter, auxiliaries=aux, max_new_tokens=NEW,
                              eos_token_id=eos, auxiliary_budget=6, **sampling)  # fmt: skip
        assert_same_tokens(got, expected)
        assert_well_formed(got, [eos], PAD)


@pytest.mark.parametrize("sampling_name", ["greedy", "T1.5", "T0.7-k8-p0.9"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_a_separate_drafter_with_accepted_drafts_stays_exact(monkeypatch, arch, sampling_name):
    sampling = SAMPLINGS[sampling_name]
    seed = 400 + ["llama", "gpt2", "gpt_neox"].index(arch) * 3 + ["greedy", "T1.5", "T0.7-k8-p0.9"].index(sampling_name)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=seed)
    u = uniform(3, NEW, seed=seed)
    teacher, drafter, reference = _pair(arch, seed, window_length=5, wrapped_teacher=arch == "gpt2")
    expected, eos = _reference_with_eos(reference, ids, mask, u, sampling)
    for corruption, options in ORACLE_RUNS:
        _install_oracle(monkeypatch, expected.new_tokens, corruption, seed)
        got = teacher.generate(ids, mask, drafter=drafter, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos,
                               **sampling, **options) if arch == "gpt2" else engine.generate(
            teacher, ids, mask, drafter=drafter, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos, **sampling,
            **options)  # fmt: skip
        assert_same_tokens(got, expected)
        assert_well_formed(got, [eos], PAD)
        if options.get("max_draft_length", 5) > 3 and corruption < 0.3:
            assert got.tokens_per_call > 1.5, f"an oracle drafter must get drafts accepted ({got.accept_lengths})"


def test_both_caches_of_a_separate_drafter_are_compacted_alike(monkeypatch):
    seed = 450
    ids, mask = left_padded(PROMPT_LENGTHS, seed=seed)
    u = uniform(3, NEW, seed=seed)
    teacher, drafter, reference = _pair("llama", seed, window_length=6)
    expected, eos = _reference_with_eos(reference, ids, mask, u, SAMPLINGS["T1"])
    compactions = count_compactions(monkeypatch)
    _install_oracle(monkeypatch, expected.new_tokens, 0.2, seed)
    got = engine.generate(teacher, ids, mask, drafter=drafter, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos,
                          auxiliary_budget=10, **SAMPLINGS["T1"])  # fmt: skip
    assert_same_tokens(got, expected)
    assert_well_formed(got, [eos], PAD)
    assert compactions, "the holes should fill the cache"


@settings(max_examples=40)
@given(data=st.data())
def test_a_separate_drafter_on_random_cases(data):
    draw = data.draw
    arch = draw(st.sampled_from(ARCHITECTURES))
    sampling = draw_sampling(draw)
    lengths = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    new = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**16))
    teacher, drafter, reference = _pair(arch, seed, mode=draw(st.sampled_from(MODES)),
                                        wrapped_teacher=draw(st.booleans()),
                                        window_length=draw(st.integers(1, 8)))  # fmt: skip
    ids, mask = left_padded(lengths, seed=seed)
    u = uniform(len(lengths), new, seed=seed)
    common = dict(auxiliaries=u, max_new_tokens=new, eos_token_id=[], **sampling)
    expected = ptp.sample_autoregressive(reference, ids, mask, **common)
    options = dict(
        auxiliary_budget=draw(st.one_of(st.none(), st.integers(0, 20))),
        max_draft_length=draw(st.one_of(st.none(), st.integers(1, 8))),
        use_drafter=draw(st.booleans()),
    )
    corruption = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.3])))
    with pytest.MonkeyPatch.context() as monkeypatch:
        if corruption is not None:
            _install_oracle(monkeypatch, expected.new_tokens, corruption, seed)
        got = engine.generate(teacher, ids, mask, drafter=drafter, **common, **options)
    assert_same_tokens(got, expected)
    assert_well_formed(got, [], 0, max_new_tokens=new)


@pytest.mark.parametrize("mode", ["one_hot", "categorical"])
@torch.no_grad()
def test_the_separate_drafters_live_slots_see_exactly_the_committed_text(monkeypatch, mode):
    """The drafter's own cache must hold the committed text (not the teacher's, not rejected drafts): its live
    group's logits equal the drafter run from scratch on the committed text."""
    teacher, drafter, reference = _pair("llama", 16, mode=mode, window_length=5)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=16)
    u = uniform(3, NEW, seed=16)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=1.0))
    _install_oracle(monkeypatch, expected.new_tokens, 0.2, seed=16)
    records = record_live_groups(monkeypatch)
    out = engine.generate(teacher, ids, mask, drafter=drafter, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos,
                          auxiliary_budget=9, temperature=1.0)  # fmt: skip
    assert_same_tokens(out, expected)
    assert_live_slots_match_fresh(drafter, records, ids, mask, u, out)


def test_without_drafting_a_separate_drafter_is_not_run_and_decoding_is_plain():
    teacher, drafter, reference = _pair("qwen2", 17)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=17)
    u = uniform(3, NEW, seed=17)
    expected, eos = _reference_with_eos(reference, ids, mask, u, dict(temperature=1.2))
    calls = []
    drafter.register_forward_hook(lambda *args: calls.append(1))
    got = engine.generate(teacher, ids, mask, drafter=drafter, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos,
                          temperature=1.2, use_drafter=False)  # fmt: skip
    assert_same_tokens(got, expected)
    assert not calls and got.tokens_per_call == 1.0


def test_a_separate_drafter_must_fit_the_teacher():
    teacher = tiny_base("llama", seed=18)
    ids, _ = left_padded([4], seed=18)
    other = ptp.PTPModel(tiny_base("gpt2", seed=19, vocab=VOCAB + 8), window_length=4)
    with pytest.raises(ValueError, match="vocabulary"):
        engine.generate(teacher, ids, drafter=other, max_new_tokens=4, seed=0)
    with pytest.raises(TypeError, match="PTPModel"):
        engine.generate(teacher, ids, drafter=tiny_base("gpt2"), max_new_tokens=4, seed=0)
    with pytest.raises(TypeError, match="pass a drafter"):
        engine.generate(teacher, ids, max_new_tokens=4, seed=0)
    # The shorter context of the two bounds the generation.
    short = ptp.PTPModel(tiny_base("gpt2", seed=19, max_positions=8), window_length=4)
    with pytest.raises(ValueError, match="context of 8 positions"):
        engine.generate(teacher, ids, drafter=short, max_new_tokens=5, seed=0)


def test_a_bfloat16_drafter_next_to_a_float32_teacher_keeps_the_output_exact(monkeypatch):
    """Only the teacher's arithmetic decides the tokens: a drafter in another dtype changes the drafts, never the
    output."""
    teacher = tiny_base("mistral", seed=19)
    drafter = ptp.PTPModel(tiny_base("llama", seed=20, hidden=16, layers=1, dtype=torch.bfloat16), window_length=4,
                           lora_rank=4).eval()  # fmt: skip
    randomize_adapter(drafter, seed=21)
    ids, mask = left_padded(PROMPT_LENGTHS, seed=19)
    u = uniform(3, NEW, seed=19)
    expected, eos = _reference_with_eos(copy.deepcopy(teacher), ids, mask, u, dict(temperature=0.9, top_k=30))
    for corruption in (None, 0.1):
        if corruption is not None:
            _install_oracle(monkeypatch, expected.new_tokens, corruption, seed=19)
        got = engine.generate(teacher, ids, mask, drafter=drafter, auxiliaries=u, max_new_tokens=NEW,
                              eos_token_id=eos, temperature=0.9, top_k=30)  # fmt: skip
        assert_same_tokens(got, expected)
        assert_well_formed(got, [eos], PAD)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_a_separate_drafter_on_cuda_eager_and_captured(monkeypatch, mode):
    teacher, drafter, reference = _pair("llama", 460, mode=mode, window_length=5)
    teacher, drafter, reference = teacher.cuda(), drafter.cuda(), reference.cuda()
    ids, mask = (t.cuda() for t in left_padded(PROMPT_LENGTHS, seed=460))
    u = uniform(3, NEW, seed=460).cuda()
    expected, eos = _reference_with_eos(reference, ids, mask, u, SAMPLINGS["T0.7-k8-p0.9"])
    for oracle, cuda_graph in ((False, False), (False, True), (True, False), (True, True)):
        if oracle:
            install_device_oracle(monkeypatch, expected.new_tokens, 6, drafter)
        got = engine.generate(teacher, ids, mask, drafter=drafter, auxiliaries=u, max_new_tokens=NEW, eos_token_id=eos,
                              cuda_graph=cuda_graph, **SAMPLINGS["T0.7-k8-p0.9"])  # fmt: skip
        assert_same_tokens(got, expected)
        assert_well_formed(got, [eos], PAD)


def test_without_sampling_arguments_a_separate_drafter_decodes_as_it_was_trained():
    teacher, drafter, reference = _pair("gpt2", 19, wrapped_teacher=True)
    drafter.config.sampling = ptp.SamplingConfig(temperature=1.3, top_k=7)  # the teacher's own differs
    ids, mask = left_padded(PROMPT_LENGTHS, seed=19)
    common = dict(auxiliaries=uniform(3, NEW, seed=19), max_new_tokens=NEW, eos_token_id=[])
    got = engine.generate(teacher, ids, mask, drafter=drafter, **common)
    assert_same_tokens(got, ptp.sample_autoregressive(reference, ids, mask, sampling=drafter.config.sampling, **common))


def test_in_16_bits_plain_decoding_beside_a_separate_drafter_gives_the_drafting_text():
    """In 16 bits the teacher's calls without the drafter have the width of its calls with it (the pending block):
    a prompt decoded alone gets the same text either way."""
    for seed in range(4):
        teacher, drafter, _ = _pair("llama", 520 + seed)
        teacher, drafter = teacher.to(torch.bfloat16), drafter.to(torch.bfloat16)
        ids, mask = left_padded([6], seed=seed)
        plain = dict(auxiliaries=uniform(1, NEW, seed=seed), max_new_tokens=NEW, eos_token_id=[], auxiliary_budget=6)
        drafted = engine.generate(teacher, ids, mask, drafter=drafter, **plain)
        alone = engine.generate(teacher, ids, mask, drafter=drafter, use_drafter=False, **plain)
        assert_same_tokens(alone, drafted)
        assert alone.num_calls == NEW
