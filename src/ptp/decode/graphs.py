"""CUDA graphs of the decoding step: capturing one, and keeping captured steps for their model.

The engine's step (:func:`ptp.decode.engine._advance`) reads and writes fixed-shape device buffers only, so on a CUDA
device it can be recorded once as a CUDA graph and replayed: one launch per step instead of one per kernel, which is
what bounds small models and short blocks. A graph reads the buffers it was recorded with, so the engine keeps each
captured step with its buffers and KV cache (a "run") for later calls of the same shape and settings, here, per
drafting model and only as long as the model lives.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch

#: Steps run eagerly (on a side stream) before a capture: lazy initialisation must not happen while capturing.
WARMUP_STEPS = 2
#: Captured runs kept per model (each holds its own cache and buffers); the least recently used is dropped. A batch
#: whose rows finish at different times moves to runs of half its size, then a quarter, ...: room for those of a
#: 1024-row batch (their caches add up to less than twice the largest), and a few other settings.
KEPT_RUNS = 16

_RUNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def can_capture(device: torch.device) -> bool:
    return device.type == "cuda"


def on_side_stream(step, device: torch.device) -> None:
    """Run ``step`` eagerly on a side stream, as the steps before a capture must."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream(device).wait_stream(side)


def capture(step) -> torch.cuda.CUDAGraph:
    """``step`` captured as a CUDA graph (recorded, not run)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def kept_run(model, key: tuple, make):
    """The run of ``key`` kept for ``model`` (the drafting PTPModel), made by ``make()`` on first use."""
    runs = _RUNS.setdefault(model, OrderedDict())
    if key not in runs:
        runs[key] = make()
        while len(runs) > KEPT_RUNS:
            runs.popitem(last=False)
    runs.move_to_end(key)
    return runs[key]


def captured_runs(model) -> list:
    """The runs (with their captured steps) kept for ``model``, the drafting PTPModel, least recently used first."""
    return list(_RUNS.get(model, {}).values())


def release_graphs(model) -> None:
    """Drop the captured steps kept for ``model`` (the drafting PTPModel), with their caches and buffers: to free
    their memory, or after changing the model in a way that the graphs cannot see: its code, or its configuration
    (e.g. ``acceptance_histogram``); new weights copied in place are seen, replaced tensors make new graphs."""
    _RUNS.pop(model, None)
