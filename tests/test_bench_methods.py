"""Method names, the generation config handed to transformers, the per-call bookkeeping of its outputs, and
transformers' compiled static-cache path on a tiny random Llama."""

from __future__ import annotations

import pytest

from bench_support import tiny_llama
from ptp.bench.methods import (
    METHODS,
    HFRunner,
    _CallRecorder,
    _cut_after_eos,
    _trim,
    default_methods,
    hf_generation_config,
    parse_methods,
    static_compiled_options,
)
from ptp.sampling import SamplingConfig


def test_parse_methods():
    assert parse_methods("ar, ptp,ar") == ("ar", "ptp")
    assert parse_methods(["pld"]) == ("pld",)
    with pytest.raises(ValueError, match=r"unknown benchmark methods \['medusa'\]"):
        parse_methods("ar,medusa")
    with pytest.raises(ValueError, match="no benchmark method"):
        parse_methods(" , ")


def test_default_methods_follow_the_given_inputs():
    assert default_methods(None, None, None) == ("ar", "hf", "hf-static", "pld")
    assert default_methods("a", "b", "c", "d") == METHODS
    assert "drafter" not in default_methods("a", "b", "c")


def test_hf_generation_config_spells_out_every_setting():
    sampled = hf_generation_config(SamplingConfig(temperature=0.7), 32, [2], 0)
    assert (sampled.do_sample, sampled.temperature, sampled.top_k, sampled.top_p) == (True, 0.7, 0, 1.0)
    assert (sampled.max_new_tokens, sampled.eos_token_id, sampled.repetition_penalty) == (32, [2], 1.0)
    nucleus = hf_generation_config(SamplingConfig(temperature=0.7, top_k=50, top_p=0.95), 8, [2], 0)
    assert (nucleus.top_k, nucleus.top_p) == (50, 0.95)
    greedy = hf_generation_config(SamplingConfig.greedy(), 8, [2], 0, prompt_lookup_num_tokens=5)
    assert not greedy.do_sample and greedy.prompt_lookup_num_tokens == 5


def test_outputs_are_cut_after_eos_and_commits_trimmed_to_match():
    assert _cut_after_eos([5, 6, 2, 7], {2}) == [5, 6, 2]
    assert _cut_after_eos([5, 6], {2}) == [5, 6]
    assert _trim([1, 3, 4], 5) == [1, 3, 1]
    assert _trim([1, 3], 4) == [1, 3]


def test_call_recorder_skips_the_prompt():
    import torch

    recorder = _CallRecorder()
    for value in (torch.zeros(1, 7), torch.zeros(1), torch.zeros(1, 3)):
        recorder.put(value)
    assert recorder.commits == [1, 3]


@pytest.mark.parametrize("sampling", [SamplingConfig.greedy(), SamplingConfig(temperature=0.8, top_k=20)])
def test_hf_static_equals_plain_generate(sampling):
    """The compiled static-cache path returns plain ``generate``'s tokens and rows under the same seed, before and
    after its cache grows for a longer prompt (and it compiles on the CPU too)."""
    model = tiny_llama(vocab=64)
    eos = [2]
    plain = HFRunner(model, hf_generation_config(sampling, 6, eos, 0), eos)
    static = HFRunner(model, hf_generation_config(sampling, 6, eos, 0, **static_compiled_options()), eos)
    assert static.generation_config.cache_implementation == "static" and static.needs_untimed_run
    assert not plain.needs_untimed_run
    for length in (5, 9):
        prompt = list(range(4, 4 + length))
        ours, theirs = static(prompt, seed=3, record=True), plain(prompt, seed=3)
        assert ours == theirs and 1 <= len(ours.tokens) <= 6
        assert ours.calls == len(ours.tokens) and ours.accept_lengths == [1] * ours.calls
    assert hasattr(model, "_compiled_call")  # generate took the compiled forward
