"""ptp.decode.inputs: bad input to either decoder is a clear error, never a wrong answer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import ptp
from conftest import EOS, left_padded, tiny_base, uniform, wrap
from ptp.decode.inputs import stop_tokens

ENTRIES = ("generate", "reference")
NEW = 6


@pytest.fixture(scope="module")
def models():
    return wrap(tiny_base("gpt2", max_positions=32), window_length=3)


def _call(entry, models, input_ids, attention_mask=None, **options):
    """Either decoder with the same arguments; the reference gets valid auxiliaries unless the test passes some."""
    model, reference = models
    options.setdefault("max_new_tokens", NEW)
    if entry == "generate":
        return model.generate(input_ids, attention_mask, **options)
    if "auxiliaries" not in options:
        steps = options["max_new_tokens"]
        steps = steps if isinstance(steps, int) and steps > 0 else NEW  # a bad count is what the test is about
        options["auxiliaries"] = uniform(input_ids.shape[0] if input_ids.dim() == 2 else 1, steps)
    options.pop("seed", None)
    return ptp.sample_autoregressive(reference, input_ids, attention_mask, **options)


PROMPT = left_padded([4, 2])


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    "options, message",
    [
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=-0.2), "top_p"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=-5), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=2.5), "max_new_tokens"),
        (dict(eos_token_id=-1), "eos_token_id"),
        (dict(eos_token_id=[EOS, "x"]), "eos_token_id"),
    ],
)
def test_bad_sampling_and_stopping_arguments_are_refused(models, entry, options, message):
    with pytest.raises(ValueError, match=message):
        _call(entry, models, *PROMPT, **options)


@pytest.mark.parametrize("entry", ENTRIES)
def test_top_k_0_and_top_p_1_mean_off_as_none_does(models, entry):
    u = uniform(2, NEW, seed=4)
    off = _call(entry, models, *PROMPT, auxiliaries=u, temperature=1.3, top_k=None, top_p=None)
    for spelling in (dict(top_k=0), dict(top_p=1.0), dict(top_k=0, top_p=1.0), dict(top_k=0, top_p=None)):
        got = _call(entry, models, *PROMPT, auxiliaries=u, temperature=1.3, **spelling)
        assert torch.equal(got.sequences, off.sequences), spelling


@pytest.mark.parametrize("entry", ENTRIES)
def test_greedy_ignores_the_temperature(models, entry):
    out = _call(entry, models, *PROMPT, do_sample=False, temperature=0.0)
    assert out.sequences.shape == (2, PROMPT[0].shape[1] + NEW)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    "auxiliaries, error, message",
    [
        (torch.full((2, NEW), 1.0), ValueError, r"\[0, 1\)"),
        (torch.full((2, NEW), -0.1), ValueError, r"\[0, 1\)"),
        (torch.full((2, NEW), float("nan")), ValueError, r"\[0, 1\)"),
        (torch.full((2, NEW), float("inf")), ValueError, r"\[0, 1\)"),
        (torch.rand(2, NEW + 1), ValueError, "shape"),
        (torch.rand(2, NEW - 1), ValueError, "shape"),
        (torch.rand(3, NEW), ValueError, "shape"),
        (torch.rand(2 * NEW), ValueError, "shape"),
        (torch.zeros(2, NEW, dtype=torch.long), TypeError, "floating"),
        ([[0.5] * NEW] * 2, TypeError, "torch.Tensor"),
    ],
)
def test_bad_auxiliaries_are_refused(models, entry, auxiliaries, error, message):
    with pytest.raises(error, match=message):
        _call(entry, models, *PROMPT, auxiliaries=auxiliaries)


@pytest.mark.parametrize("value", [0.0, 1.0 - 1e-12])
def test_auxiliaries_at_the_ends_of_the_range_are_accepted_alike(models, value):
    u = torch.full((2, NEW), value, dtype=torch.float64)  # 1 - 1e-12 is below 1 but rounds to 1 in float32
    plain = dict(eos_token_id=[], temperature=1.0)
    fast, slow = (_call(entry, models, *PROMPT, auxiliaries=u, **plain) for entry in ENTRIES)
    assert torch.equal(fast.sequences, slow.sequences)
    largest = _call("generate", models, *PROMPT, auxiliaries=u.float().clamp(max=1 - 2**-24), **plain)
    assert torch.equal(largest.sequences, fast.sequences)


@pytest.mark.parametrize(
    "sources",
    [
        dict(auxiliaries=uniform(2, NEW), seed=3),
        dict(auxiliaries=uniform(2, NEW), generator=torch.Generator()),
        dict(seed=3, generator=torch.Generator()),
    ],
)
def test_two_sources_of_auxiliaries_are_refused(models, sources):
    with pytest.raises(ValueError, match="not both"):
        models[0].generate(*PROMPT, max_new_tokens=NEW, **sources)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    "input_ids, attention_mask, error, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), None, ValueError, "empty"),
        (torch.zeros(0, 4, dtype=torch.long), None, ValueError, "empty"),
        (torch.tensor([[5, 6], [7, 8]]), torch.tensor([[1, 1], [0, 0]]), ValueError, "empty"),
        (torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 0]]), ValueError, "left-padded"),
        (torch.tensor([[5, 6, 7, 8]]), torch.tensor([[0, 1, 0, 1]]), ValueError, "left-padded"),
        (torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1]]), ValueError, "shape"),
        (torch.tensor([5, 6, 7]), None, ValueError, "shape"),
        (torch.tensor([[5.0, 6.0]]), None, TypeError, "integer"),
    ],
)
def test_bad_prompts_are_refused(models, entry, input_ids, attention_mask, error, message):
    with pytest.raises(error, match=message):
        _call(entry, models, input_ids, attention_mask)


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_prompt_that_would_run_past_the_context_is_refused(models, entry):
    ids, mask = left_padded([20, 12])
    with pytest.raises(ValueError, match="context of 32"):
        _call(entry, models, ids, mask, max_new_tokens=13)
    out = _call(entry, models, ids, mask, max_new_tokens=12)  # exactly fills the context of learned positions
    assert out.sequences.shape == (2, 32)


def test_both_decoders_agree_at_the_edge_of_the_context(models):
    ids, mask = left_padded([20, 12], seed=1)
    u = uniform(2, 12, seed=1)
    options = dict(max_new_tokens=12, auxiliaries=u, eos_token_id=[], temperature=1.0)
    fast = models[0].generate(ids, mask, **options)
    slow = ptp.sample_autoregressive(models[1], ids, mask, **options)
    assert torch.equal(fast.sequences, slow.sequences)


def test_a_sequence_beyond_the_sliding_window_is_refused():
    model, reference = wrap(tiny_base("mistral", sliding_window=8), window_length=3)
    ids, mask = left_padded([5])
    for call in (
        lambda: model.generate(ids, mask, max_new_tokens=4, seed=0),
        lambda: ptp.sample_autoregressive(reference, ids, mask, max_new_tokens=4, auxiliaries=uniform(1, 4)),
    ):
        with pytest.raises(ValueError, match="sliding window"):
            call()


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(sampling=ptp.SamplingConfig(), temperature=0.5), "not both"),
        (dict(max_draft_length=0), "max_draft_length"),
        (dict(max_draft_length=2.5), "max_draft_length"),
        (dict(auxiliary_budget=-1), "auxiliary_budget"),
        (dict(auxiliary_budget=True), "auxiliary_budget"),
    ],
)
def test_bad_engine_options_are_refused(models, options, message):
    with pytest.raises(ValueError, match=message):
        models[0].generate(*PROMPT, max_new_tokens=NEW, seed=0, **options)


def test_a_streamer_needs_a_single_row(models):
    class Sink:
        def put(self, value):
            pass

        def end(self):
            pass

    with pytest.raises(ValueError, match="batch size 1"):
        models[0].generate(*PROMPT, max_new_tokens=NEW, seed=0, streamer=Sink())


def test_stop_tokens_join_the_generation_config_and_the_tokenizer():
    """A chat model names its end-of-turn token in its generation config; a tokenizer may name another EOS."""
    base = tiny_base("llama")
    base.generation_config.eos_token_id = 5
    tokenizer = SimpleNamespace(eos_token_id=EOS, pad_token_id=None)
    assert stop_tokens(base, tokenizer) == (sorted({5, EOS}), min(5, EOS))
    model, _ = wrap(base, window_length=3)  # a PTPModel: its base's generation config
    assert stop_tokens(model)[0] == [5]
    base.generation_config.eos_token_id = None
    assert stop_tokens(base, SimpleNamespace(eos_token_id=None, pad_token_id=7)) == ([], 7)
