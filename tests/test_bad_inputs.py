"""The Python API's answer to the mistakes of a first hour: one line (a ValueError, TypeError or FileNotFoundError)
that names the problem and says how to fix it, never an exception from deep inside torch. Mistakes that have an
obvious meaning (a list of ids, a prompt on another device, a drafter in another dtype) are handled instead."""

from __future__ import annotations

import copy
import random
import shutil

import pytest
import torch

import ptp
from conftest import left_padded, tiny_base, uniform, wrap
from ptp.decode import engine

NEW = 6
CONTEXT = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """``(model, reference, adapter directory)``: a wrapped tiny Llama with a context of 32 and its saved adapter."""
    model, reference = wrap(tiny_base("llama", max_positions=CONTEXT), window_length=3, lora_rank=4)
    directory = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(directory)
    return model, reference, directory


def _damaged(setup, tmp_path, name: str, damage) -> object:
    """A copy of the saved adapter with ``name`` rewritten by ``damage(bytes) -> bytes``; returns its directory."""
    directory = tmp_path / "damaged"
    shutil.copytree(setup[2], directory)
    path = directory / name
    path.write_bytes(damage(path.read_bytes()))
    return directory


def _generate(setup, input_ids, attention_mask=None, **options):
    options = {"max_new_tokens": NEW, "seed": 0} | options
    return setup[0].generate(input_ids, attention_mask, **options)


RIGHT_PADDED = (torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]]))

#: (what, call, exception, the problem, the fix): ``call(setup, tmp_path)`` makes the mistake.
MISTAKES = [
    ("a missing adapter directory", lambda s, t: ptp.PTPModel.from_pretrained(tiny_base("llama"), t / "nowhere"),
     FileNotFoundError, "does not exist", "save_pretrained"),
    ("an adapter without its base", lambda s, t: ptp.PTPModel.from_pretrained(None, s[2]),
     ValueError, "adapter without a base model of its own", "pass the model it was trained on"),
    ("a truncated adapter file", lambda s, t: ptp.PTPModel.from_pretrained(tiny_base("llama"), _damaged(
        s, t, "adapter_model.safetensors", lambda b: b[: len(b) // 2])),
     ValueError, "adapter_model.safetensors is corrupt", "save or copy the adapter again"),
    ("a corrupt ptp_config.json", lambda s, t: ptp.PTPModel.from_pretrained(tiny_base("llama"), _damaged(
        s, t, "ptp_config.json", lambda b: b[: len(b) // 3])),
     ValueError, "ptp_config.json is corrupt", "save or copy the adapter again"),
    ("an unknown PTP option", lambda s, t: ptp.PTPModel(tiny_base("llama"), window=4),
     TypeError, "unknown PTP option 'window'", "did you mean 'window_length'"),
    ("a second adapter on one base", lambda s, t: ptp.PTPModel(s[0].base_model),
     ValueError, "already carries a PTP adapter", "fresh copy"),
    ("a right-padded batch", lambda s, t: _generate(s, *RIGHT_PADDED),
     ValueError, "must be left-padded: row 1", "pad on the left"),
    ("rows of different lengths", lambda s, t: _generate(s, [[5, 6, 7], [8, 9]]),
     ValueError, "different lengths", "pad them on the left"),
    ("text instead of ids", lambda s, t: _generate(s, ["def f():"]),
     TypeError, "not text", "tokenize the prompt first"),
    ("a one-dimensional tensor", lambda s, t: _generate(s, torch.tensor([5, 6, 7])),
     ValueError, r"shape \[batch, prompt_length\]", r"\[1, length\]"),
    ("float ids", lambda s, t: _generate(s, torch.tensor([[5.0, 6.0]])),
     TypeError, "integer token ids", r"\.long\(\)"),
    ("an id outside the vocabulary", lambda s, t: _generate(s, torch.tensor([[5, 6, 500]])),
     ValueError, "token id 500, outside the model's vocabulary of 96", "model's own tokenizer"),
    ("max_new_tokens=0", lambda s, t: _generate(s, [5, 6], max_new_tokens=0),
     ValueError, "max_new_tokens must be an integer >= 1", "got 0"),
    ("max_new_tokens=-5", lambda s, t: _generate(s, [5, 6], max_new_tokens=-5),
     ValueError, "max_new_tokens must be an integer >= 1", "got -5"),
    ("temperature 0 while sampling", lambda s, t: _generate(s, [5, 6], temperature=0.0),
     ValueError, "temperature must be a finite number > 0", "do_sample=False"),
    ("a negative temperature", lambda s, t: _generate(s, [5, 6], temperature=-0.5),
     ValueError, "temperature must be a finite number > 0", "do_sample=False"),
    ("top_p above 1", lambda s, t: _generate(s, [5, 6], top_p=1.5),
     ValueError, r"top_p must be in \(0, 1\)", "1.0 or None for no top-p"),
    ("top_p 0", lambda s, t: _generate(s, [5, 6], top_p=0.0),
     ValueError, r"top_p must be in \(0, 1\)", "1.0 or None for no top-p"),
    ("a negative top_k", lambda s, t: _generate(s, [5, 6], top_k=-1),
     ValueError, "top_k must be an integer >= 1", "0 or None for no top-k"),
    ("sampling and its arguments", lambda s, t: _generate(s, [5, 6], sampling=ptp.SamplingConfig(), top_k=5),
     ValueError, "pass either sampling or", "not both"),
    ("sampling as a dict", lambda s, t: _generate(s, [5, 6], sampling={"temperature": 0.7}),
     TypeError, "sampling must be a ptp.SamplingConfig", "dict"),
    ("a prompt as long as the context", lambda s, t: _generate(s, left_padded([CONTEXT])[0]),
     ValueError, f"prompt \\({CONTEXT} tokens\\) leaves no room", "keep its last 31 tokens"),
    ("a prompt longer than the context", lambda s, t: _generate(s, left_padded([CONTEXT + 9])[0]),
     ValueError, f"prompt \\({CONTEXT + 9} tokens\\) leaves no room", "shorten it"),
    ("a prompt that the new tokens push past the context", lambda s, t: _generate(s, [5] * 30, max_new_tokens=4),
     ValueError, "exceeds the model's context of 32 positions", "at most 2 tokens"),
    ("integer auxiliaries", lambda s, t: _generate(s, [5, 6], seed=None, auxiliaries=torch.zeros(1, NEW).long()),
     TypeError, "auxiliaries must be a floating-point tensor", "torch.int64"),
    ("a generator that is not torch's", lambda s, t: _generate(s, [5, 6], seed=None, generator=random.Random(0)),
     TypeError, "generator must be a CPU torch.Generator", "Random"),
    ("a seed that is not an int", lambda s, t: _generate(s, [5, 6], seed="42"),
     TypeError, "seed must be an int", "str"),
    ("a bad thread count", lambda s, t: _generate(s, [5, 6], threads=0),
     ValueError, "threads must be an integer >= 1", "'auto'"),
    ("a drafter on another device", lambda s, t: engine.generate(tiny_base("llama"), [5, 6], max_new_tokens=NEW,
                                                                 seed=0, drafter=copy.deepcopy(s[0]).to("meta")),
     ValueError, "the drafter is on meta, the teacher on cpu", "move both to one device"),
    ("a plain model without a drafter", lambda s, t: engine.generate(tiny_base("llama"), [5, 6], max_new_tokens=NEW),
     TypeError, "model must be a PTPModel", r"ptp.PTPModel\(model\)"),
]  # fmt: skip


@pytest.mark.parametrize("what, call, error, problem, fix", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_clear_line(setup, tmp_path, what, call, error, problem, fix):
    with pytest.raises(Exception) as caught:
        call(setup, tmp_path)
    assert type(caught.value) is error, f"{what}: {type(caught.value).__name__}: {caught.value}"
    message = str(caught.value)
    assert "\n" not in message, f"{what}: the message should be one line: {message!r}"
    assert caught.match(problem), f"{what}: the message should name the problem: {message!r}"
    assert caught.match(fix), f"{what}: the message should say how to fix it: {message!r}"


def test_the_first_model_still_works_after_the_mistakes(setup):
    """The refused second adapter left the wrapped base as it was."""
    model, reference, _ = setup
    ids, mask = left_padded([5, 3])
    options = dict(auxiliaries=uniform(2, NEW), max_new_tokens=NEW, temperature=0.9)
    expected = ptp.sample_autoregressive(reference, ids, mask, **options)
    assert torch.equal(model.generate(ids, mask, **options).sequences, expected.sequences)


# -------------------------------------------------------------------------------------- handled instead
def test_lists_of_ids_are_prompts(setup):
    model, reference, _ = setup
    ids, mask = left_padded([5, 3])
    options = dict(auxiliaries=uniform(2, NEW), max_new_tokens=NEW, temperature=0.9, eos_token_id=[])
    expected = model.generate(ids, mask, **options)
    for as_lists in ((ids.tolist(), mask.tolist()), (ids.int(), mask.float()), (tuple(ids.tolist()), mask.bool())):
        assert torch.equal(model.generate(*as_lists, **options).sequences, expected.sequences)
        assert torch.equal(ptp.sample_autoregressive(reference, *as_lists, **options).sequences, expected.sequences)
    one = dict(options, auxiliaries=options["auxiliaries"][:1])
    assert torch.equal(model.generate(ids[0].tolist(), **one).sequences, model.generate(ids[:1], **one).sequences)
    assert model.generate([ids[0].tolist()], **one).sequences.dtype == torch.int64


def test_a_drafter_in_another_dtype_than_its_teacher_decodes_exactly():
    """The teacher verifies in its own dtype; a 16-bit separate drafter only proposes."""
    teacher = tiny_base("llama", seed=3)
    reference = copy.deepcopy(teacher)
    drafter = ptp.PTPModel(tiny_base("gpt2", seed=4, hidden=16, layers=1), window_length=4, lora_rank=4).eval()
    drafter.to(torch.bfloat16)
    ids, mask = left_padded([5, 3], seed=3)
    options = dict(auxiliaries=uniform(2, 12, seed=3), max_new_tokens=12, temperature=0.9)
    got = engine.generate(teacher, ids, mask, drafter=drafter, **options)
    assert torch.equal(got.sequences, ptp.sample_autoregressive(reference, ids, mask, **options).sequences)


@pytest.mark.gpu
def test_a_prompt_on_another_device_than_the_model_is_moved(setup):
    model = copy.deepcopy(setup[0])
    ids, mask = left_padded([5, 3])
    options = dict(auxiliaries=uniform(2, NEW), max_new_tokens=NEW, temperature=0.9, eos_token_id=[])
    on_cpu = model.generate(ids, mask, **options)
    model.cuda()
    assert torch.equal(model.generate(ids, mask, **options).sequences.cpu(), on_cpu.sequences)
    model.cpu()
    assert torch.equal(model.generate(ids.cuda(), mask.cuda(), **options).sequences, on_cpu.sequences)
