"""ptp.load: the shipped model, a plain model, a model with its adapter, an adapter that holds its base, a separate
drafter; each decodes exactly as the reference sampler with the same u's."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import ptp
from bench_support import char_tokenizer, save_tiny_model, tiny_llama
from conftest import randomize_adapter
from ptp.model.ptp import BASE_DIRECTORY


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A base model directory, an adapter for it, and a separate drafter's adapter that holds its own base."""
    root = tmp_path_factory.mktemp("load")
    save_tiny_model(root / "model")
    tokenizer = char_tokenizer()
    adapter = ptp.PTPModel(tiny_llama(len(tokenizer)), window_length=4)
    randomize_adapter(adapter)
    adapter.save_pretrained(root / "adapter")
    drafter = ptp.PTPModel(tiny_llama(len(tokenizer), layers=1, seed=1), window_length=4, train_base=True)
    randomize_adapter(drafter, seed=1)
    drafter.save_pretrained(root / "drafter")
    tokenizer.save_pretrained(root / "drafter")  # as `ptp train --objective ptp` leaves it
    assert (root / "drafter" / BASE_DIRECTORY).is_dir()
    return root


def _reference(paths, ids, u):
    base = AutoModelForCausalLM.from_pretrained(paths / "model")
    return ptp.sample_autoregressive(base, ids, max_new_tokens=u.shape[1], auxiliaries=u, eos_token_id=[],
                                     temperature=0.8)  # fmt: skip


@pytest.mark.parametrize("kind", ["plain", "adapter", "drafter"])
def test_every_way_of_loading_decodes_exactly(paths, kind):
    options = {"plain": {}, "adapter": {"adapter": paths / "adapter"}, "drafter": {"drafter": paths / "drafter"}}
    loaded = ptp.load(paths / "model", **options[kind], device="cpu")
    assert loaded.trained == (kind != "plain") and (loaded.drafter is not None) == (kind == "drafter")
    ids = loaded.tokenizer("def f(x):", return_tensors="pt").input_ids
    u = torch.rand(1, 12, generator=torch.Generator().manual_seed(0))
    out = loaded.generate(ids, use_drafter=kind != "plain", max_new_tokens=12, auxiliaries=u, eos_token_id=[],
                          temperature=0.8)  # fmt: skip
    assert torch.equal(out.sequences, _reference(paths, ids, u).sequences)
    assert loaded.sampling == (loaded.drafter or loaded.model).config.sampling


def test_an_adapter_that_holds_its_base_loads_alone(paths):
    loaded = ptp.load(adapter=paths / "drafter", device="cpu")
    assert loaded.trained and loaded.model.config.train_base and loaded.drafter is None
    with pytest.raises(ValueError, match="pass base_model=None"):
        ptp.load(paths / "model", paths / "drafter", device="cpu")


def test_bad_inputs_are_one_line_errors(paths, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"model {tmp_path}/none does not exist"):
        ptp.load(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="adapter missing-adapter does not exist"):
        ptp.load(paths / "model", "missing-adapter")
    with pytest.raises(ValueError, match="needs its teacher"):
        ptp.load(drafter=paths / "drafter")
    with pytest.raises(ValueError, match="has no trained drafter"):
        ptp.load(paths / "model", device="cpu").generate(torch.tensor([[1, 2]]), max_new_tokens=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            ptp.load(paths / "model", device="cuda")


def test_nothing_given_while_no_drafter_ships_is_the_teacher_alone_for_plain_decoding(paths, tmp_path, monkeypatch):
    import ptp.default_model as default_model

    monkeypatch.setattr(default_model, "adapter_paths", lambda: {"adapter": tmp_path / "none"})
    monkeypatch.setattr(default_model, "teacher_dir", lambda: paths / "model")
    loaded = ptp.load(device="cpu")
    assert not loaded.trained
    ids, u = torch.tensor([[5, 6, 7]]), torch.rand(1, 6, generator=torch.Generator().manual_seed(0))
    out = loaded.generate(ids, use_drafter=False, auxiliaries=u, max_new_tokens=6, eos_token_id=[], temperature=0.8)
    assert torch.equal(out.new_tokens, _reference(paths, ids, u).new_tokens)
    with pytest.raises(ValueError, match="no trained drafter"):
        loaded.generate(ids, auxiliaries=u, max_new_tokens=6)
