"""Method names, the generation config handed to transformers, and the per-call bookkeeping of its outputs."""

from __future__ import annotations

import pytest

from ptp.bench.methods import (
    METHODS,
    _CallRecorder,
    _cut_after_eos,
    _trim,
    default_methods,
    hf_generation_config,
    parse_methods,
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
    assert default_methods(None, None, None) == ("ar", "hf", "pld")
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
