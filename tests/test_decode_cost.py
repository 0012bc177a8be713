"""ptp.decode.cost: a call's measured cost, kept for the process and on disk, and the CPU default it sets."""

from __future__ import annotations

import pytest
import torch

import ptp
from conftest import tiny_base
from ptp.decode import cost
from ptp.decode.budget import fastest_budget


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """An empty cache folder and no record in the process."""
    monkeypatch.setenv("PTP_CACHE", str(tmp_path))
    monkeypatch.setattr(cost, "_measured", {})
    return tmp_path


def _refuse(*args):
    raise AssertionError("measured again")


def test_a_cost_is_measured_once_then_read_from_the_process_and_from_disk(fresh, monkeypatch):
    model = ptp.PTPModel(tiny_base("llama"), window_length=4)
    measured = cost.call_cost(model)
    assert measured.sizes == (2, 3, 4, 6, 8, 12) and all(s > 0 for _, s in measured.points)  # a window of 4
    assert len(list((fresh / "call-cost").glob("*.json"))) == 1
    monkeypatch.setattr(cost, "measure", _refuse)
    assert cost.call_cost(model) == measured
    monkeypatch.setattr(cost, "_measured", {})  # another process
    assert cost.call_cost(model) == measured


def test_another_dtype_or_drafter_shape_is_another_record(fresh):
    model = ptp.PTPModel(tiny_base("llama"), window_length=4)
    other_rank = ptp.PTPModel(tiny_base("llama"), window_length=4, lora_rank=2)
    keys = {cost._key(model, None), cost._key(other_rank, None), cost._key(model.to(torch.float64), None)}
    assert len(keys) == 3


def test_an_unreadable_record_is_measured_again(fresh):
    model = ptp.PTPModel(tiny_base("llama"), window_length=4)
    path = cost._path(cost._key(model, None))
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert cost.call_cost(model).sizes
    assert "cost" in path.read_text()


def test_generate_on_a_cpu_without_a_budget_uses_the_fastest_one(fresh, monkeypatch):
    model = ptp.PTPModel(tiny_base("llama"), window_length=4)
    model.config.acceptance_histogram = [0.1, 0.1, 0.2, 0.3, 0.3]
    expensive = cost.CallCost.linear(fixed=0.0, per_position=1.0)  # every position costs: few slots
    monkeypatch.setattr(cost, "_measured", {cost._key(model, None): expensive})
    chosen = fastest_budget(model.config.acceptance_histogram, expensive, 4)
    seen = []
    original = ptp.decode.engine.slot_budget
    monkeypatch.setattr(ptp.decode.engine, "slot_budget", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1])
    prompt = torch.tensor([[5, 6, 7]])
    u = torch.rand(1, 10, generator=torch.Generator().manual_seed(0))
    out = model.generate(prompt, max_new_tokens=10, auxiliaries=u, eos_token_id=[])
    assert seen == [chosen]
    plain = model.generate(prompt, max_new_tokens=10, auxiliaries=u, eos_token_id=[], use_drafter=False)
    assert torch.equal(out.sequences, plain.sequences)
