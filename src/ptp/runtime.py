"""CPU threads for decoding, the device and dtype a command runs in, and the operator table of a profile.

Decoding runs the model once per step on a handful of positions, so each matrix product is small: split across
threads, every share is tiny, while every call still pays for waking the threads and waits for the slowest of them.
When another process holds one of the cores (a test run, a build, a second decoder), the thread that waits for that
core stalls the whole call for up to a scheduler time slice, and that happens at every layer of every call. torch's
default is one thread per physical core, which on a small machine that other work shares is the worst choice.

Measured on a 2-core machine (median of 7 calls, PTP decoding with 4 slots; a 2-layer 32-wide Llama writing 48
tokens, and the shipped 12.6M-parameter model writing 64): with both cores free, two threads tie with one on the
tiny model (0.10 s each) and are 1.5x faster on the shipped one (0.51 vs 0.75-0.80 s); with another process
spinning on one core, two threads are 14x slower on the tiny model (2.7 vs 0.19 s) and 25x slower on the shipped one
(40 vs 1.6 s). One thread gives up at most that 1.5x and never falls off the cliff.

:func:`decoding_threads` therefore picks one thread on machines with few cores (on a 2-core machine that nothing
else uses, pass ``threads=2`` for a model of 10M parameters or more). On larger machines a large model gains from
threads (its products are large enough to split) while a small one does not: the count grows with the model's size,
one thread per :data:`PARAMETERS_PER_THREAD`, and stops at half the cores this process may use (their physical
cores, if each has two hardware threads, with room for anything else that runs). That rule for large machines is a
conservative starting point, not a measurement: time your model with :func:`cpu_threads` to tune it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

#: Up to this many usable cores, decoding uses one thread whatever the model.
FEW_CORES = 4
#: Above FEW_CORES: one thread per this many parameters of the model.
PARAMETERS_PER_THREAD = 50_000_000


def available_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decoding_threads(model: nn.Module | None = None, *, cpus: int | None = None) -> int:
    """How many CPU threads torch should use to decode with ``model`` (see the module's docstring for why).

    Args:
        model: the model that decodes (its parameter count sets the count on large machines); None: a small model.
        cpus: the CPUs available (default: :func:`available_cpus`).
    Returns:
        1 on machines with at most :data:`FEW_CORES` CPUs; else one per :data:`PARAMETERS_PER_THREAD` parameters,
        between 1 and half the CPUs.
    """
    cpus = available_cpus() if cpus is None else cpus
    if cpus <= FEW_CORES:
        return 1
    parameters = 0 if model is None else sum(p.numel() for p in model.parameters())
    return max(1, min(cpus // 2, parameters // PARAMETERS_PER_THREAD))


@contextmanager
def cpu_threads(threads: int | str | None, model: nn.Module | None = None) -> Iterator[None]:
    """Run the block with ``threads`` CPU threads in torch, and restore the previous count afterwards.

    Args:
        threads: a count >= 1; ``"auto"``: :func:`decoding_threads` of ``model``; None: leave torch's setting alone.
        model: the model that decodes, for ``"auto"``.

    torch's thread count is global to the process: other threads that run torch inside the block use it too.
    """
    if threads is None:
        yield
        return
    if threads == "auto":
        threads = decoding_threads(model)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, 'auto' or None, got {threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA when torch sees a GPU, else the CPU; otherwise ``device`` itself, checked: asking for
    CUDA without a GPU is a ValueError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but torch sees no CUDA GPU; use cpu (or auto)")
    return resolved


#: The dtypes a model may be loaded in, by name (and the short names ``fp32``, ``bf16``, ``fp16``).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """A ``torch.dtype``, or its name: ``float32``, ``bfloat16``, ``float16``, or ``auto`` (bfloat16 on CUDA, float32
    elsewhere; exactness against the reference sampler is guaranteed in float32)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return DTYPES[name]


def profiler_activities(device: torch.device) -> list:
    """What ``torch.profiler`` records on ``device``: the CPU's operators, and the GPU's kernels on CUDA."""
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def operator_table(profile, device: torch.device, rows: int = 40) -> str:
    """A finished ``torch.profiler`` profile as a table of its most expensive operators: by their own GPU time on
    CUDA, else by their own CPU time."""
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return profile.key_averages().table(sort_by=key, row_limit=rows) + "\n"
