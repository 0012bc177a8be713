"""ptp.runtime: the CPU threads of a decoding call."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from conftest import left_padded, tiny_base, wrap
from ptp import runtime


class Weights(nn.Module):
    """A model of ``count`` parameters that takes no memory (on the meta device)."""

    def __init__(self, count: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(count, device="meta"))


def test_the_available_cpus_are_the_processes_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert runtime.available_cpus() == 3


@pytest.mark.parametrize(
    "cpus, parameters, expected",
    [
        (1, None, 1),
        (2, None, 1),
        (2, 7_000_000_000, 1),  # few cores: one thread, whatever the model
        (4, 7_000_000_000, 1),
        (8, None, 1),
        (8, 12_000_000, 1),  # a small model on a large machine
        (16, 120_000_000, 2),
        (16, 7_000_000_000, 8),  # at most half the cores
        (64, 1_000_000_000, 20),
    ],
)
def test_decoding_threads(cpus, parameters, expected):
    model = None if parameters is None else Weights(parameters)
    assert runtime.decoding_threads(model, cpus=cpus) == expected


def test_decoding_threads_reads_the_machine(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 32)
    assert runtime.decoding_threads(Weights(400_000_000)) == 8


def test_cpu_threads_sets_the_count_for_the_block_and_restores_it(monkeypatch):
    before = torch.get_num_threads()
    with runtime.cpu_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"), runtime.cpu_threads(before + 1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with runtime.cpu_threads(None):
        assert torch.get_num_threads() == before
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    torch.set_num_threads(2)
    try:
        with runtime.cpu_threads("auto"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [0, -1, 1.5, True, "all"])
def test_a_bad_thread_count_is_refused(threads):
    with pytest.raises(ValueError, match="threads must be"), runtime.cpu_threads(threads):
        pass


def test_generate_runs_with_the_threads_it_is_given_and_the_same_output():
    model, _ = wrap(tiny_base("llama"), window_length=4)
    ids, _ = left_padded([5])
    seen = []

    class Recorder:
        def put(self, value):
            seen.append(torch.get_num_threads())

        def end(self):
            pass

    before = torch.get_num_threads()
    options = dict(max_new_tokens=8, seed=0, sampling=model.config.sampling)
    plain = model.generate(ids, **options)
    threaded = model.generate(ids, threads=before + 1, streamer=Recorder(), **options)
    assert seen and set(seen) == {before + 1}
    assert torch.get_num_threads() == before
    assert torch.equal(plain.sequences, threaded.sequences)
    with pytest.raises(ValueError, match="threads must be"):
        model.generate(ids, threads=0, **options)


def test_resolve_device_takes_auto_and_refuses_cuda_without_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert runtime.resolve_device("auto").type == expected and runtime.resolve_device(None).type == expected
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu9'"):
        runtime.resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            runtime.resolve_device("cuda")


def test_resolve_dtype_reads_names_and_auto():
    assert runtime.resolve_dtype("bf16") is torch.bfloat16 and runtime.resolve_dtype(torch.float16) is torch.float16
    assert runtime.resolve_dtype("auto", "cpu") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        runtime.resolve_dtype("int3")
