"""What a decoding call costs on this machine, by the positions it holds.

On a CPU every position of a call is compute, so the engine's default slot budget there comes from a measured cost
(:func:`ptp.decode.budget.slot_budget`). :func:`call_cost` times the engine itself, eagerly, at a ladder of call
sizes on a random prompt (several seconds for a small model) and keeps each size's time. A line through two sizes
would not do: a CPU's matrix kernels change with the number of rows, and on 2 cores of an Intel Xeon a call of
SmolLM2-135M with 16 positions costs less than one with 8 or 12 (BENCHMARKS.md), while on 2 cores of an AMD EPYC the
cost grew steadily; so the budget is chosen among the sizes measured on the machine.
The result is kept for the process and on disk, in ``call-cost/`` of ptp's cache folder (:func:`ptp.default_model.
cache_dir`), keyed by everything it depends on: the models' shapes and dtype, the device and its thread count, the
torch version and whether linear layers run packed on the CPU (:mod:`ptp.model.linear`). Delete the folder to measure
again.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ptp.model.linear import available as packed_linears_available

#: The call sizes timed (query positions: pending drafts and slots), those up to three times the drafter's window
#: (the most it can use: a window of drafts and twice the window in slots). On a CPU a call beyond 32 positions
#: costs over three one-token calls (BENCHMARKS.md), more than any drafter so far commits; timing the nine sizes takes
#: about 10 s for SmolLM2-135M on 2 cores, once per machine.
SIZES = (2, 3, 4, 6, 8, 12, 16, 24, 32)
#: Calls timed per size and round (after the prefill), and rounds: the median of all counts.
CALLS, ROUNDS = 2, 2
#: Tokens of the random prompt the probes decode after.
PROMPT_LENGTH = 32


@dataclass(frozen=True)
class CallCost:
    """Seconds of one decoding call by its query positions (pending drafts and slots), measured at some sizes."""

    points: tuple[tuple[int, float], ...]
    """``(positions, seconds)`` of each measured size, by ascending size."""

    def __post_init__(self) -> None:
        points = tuple(sorted((int(n), float(s)) for n, s in self.points))
        if not points or len({n for n, _ in points}) != len(points) or any(s < 0 for _, s in points):
            raise ValueError(f"a call cost needs distinct sizes with seconds >= 0, got {self.points!r}")
        object.__setattr__(self, "points", points)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(n for n, _ in self.points)

    def __call__(self, positions: int) -> float:
        """The measured seconds at a measured size; between two, the straight line through them (a guess: the
        budget search keeps to measured sizes); below the smallest size, its cost; above the largest, its cost and
        the last pair's slope where that rises (timing noise can make the last pair fall, and a call that costs
        nothing would be chosen whatever it commits)."""
        sizes = self.sizes
        i = bisect.bisect_left(sizes, positions)
        if i < len(sizes) and sizes[i] == positions:
            return self.points[i][1]
        if len(sizes) == 1 or i == 0:
            return self.points[0][1]
        if i == len(sizes):
            (n0, s0), (n1, s1) = self.points[-2:]
            return s1 + max(s1 - s0, 0.0) * (positions - n1) / (n1 - n0)
        (n0, s0), (n1, s1) = self.points[i - 1], self.points[i]
        return s0 + (s1 - s0) * (positions - n0) / (n1 - n0)

    @classmethod
    def linear(cls, fixed: float, per_position: float, sizes: tuple[int, ...] = SIZES) -> CallCost:
        """``fixed + per_position * positions`` at ``sizes`` (a model of a call's cost, e.g. for tests)."""
        return cls(tuple((n, fixed + per_position * n) for n in sizes))


_measured: dict[str, CallCost] = {}


def call_cost(model, drafter=None) -> CallCost:
    """The cost of a call of ``generate(model, drafter=drafter)`` on the model's device: from this process's or the
    disk's record of the same key, else measured now (and recorded)."""
    key = _key(model, drafter)
    if key in _measured:
        return _measured[key]
    path = _path(key)
    try:
        record = json.loads(path.read_text())
        cost = CallCost(**record["cost"]) if record.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        cost = None
    if cost is None:
        cost = measure(model, drafter)
        _write(path, {"key": key, "cost": asdict(cost)})
    _measured[key] = cost
    return cost


def measure(model, drafter=None) -> CallCost:
    """Time the engine's eager calls at each of :data:`SIZES` the drafter's window can use."""
    from ptp.decode.inputs import context_length

    networks = [m for m in (model, drafter) if m is not None]
    vocab = min(_vocabulary(m) for m in networks)
    limits = [n for n in (context_length(m) for m in networks) if n]
    length = min([PROMPT_LENGTH] + [(n - CALLS - 1) // 2 for n in limits])  # a small model's context may be short
    prompt = torch.randint(0, vocab, (1, max(length, 1)), generator=torch.Generator().manual_seed(0))
    window = (model if drafter is None else drafter).config.window_length
    sizes = [n for n in SIZES if n <= 3 * window] or [SIZES[0]]
    probes = [probe(n) for n in sizes]
    settings = [dict(auxiliary_budget=slots, max_draft_length=draft, drafter=drafter) for draft, slots in probes]
    seconds = time_calls(model, prompt, settings, CALLS, rounds=ROUNDS, cuda_graph=False)
    return CallCost(tuple(zip(sizes, seconds, strict=True)))


def probe(positions: int) -> tuple[int, int]:
    """The ``(longest group, slots)`` that a call of ``positions`` positions is timed with: groups about as long as
    the square root of the slots, the shape the budget search favours."""
    draft = min(max(1, round(positions**0.5)), positions - 1)
    return draft, positions - draft


def time_calls(model, prompt: torch.Tensor, settings: list[dict], calls: int, rounds: int = 1, **common) -> list[float]:
    """Median seconds of one decoding call of ``generate(model, prompt, **options, **common)`` for each ``options``
    of ``settings``. The settings take turns for ``rounds`` rounds (so that a drift of the machine spreads over all of
    them), each decoding ``calls`` calls after its prefill (and on a GPU after the eager steps and the capture of the
    step); a call's time is the time between two commits."""
    from ptp.decode.engine import generate
    from ptp.decode.graphs import WARMUP_STEPS

    captured = prompt.device.type == "cuda" and common.get("cuda_graph", True)
    skip = WARMUP_STEPS + 2 if captured else 1
    seconds: list[list[float]] = [[] for _ in settings]
    for _ in range(rounds):
        for options, times in zip(settings, seconds, strict=True):
            stamps: list[float] = []
            generate(model, prompt, max_new_tokens=calls + skip, eos_token_id=[], seed=0,
                     on_commit=lambda tokens, stamps=stamps: stamps.append(time.perf_counter()),
                     **options, **common)  # fmt: skip
            times += [b - a for a, b in zip(stamps[skip - 1 :], stamps[skip:], strict=False)][:calls]
    return [statistics.median(times) for times in seconds]


def _vocabulary(model) -> int:
    return _base(model).get_output_embeddings().weight.shape[0]


def _base(model):
    """The causal LM itself: a PTPModel's base, or the model."""
    from ptp.model.ptp import PTPModel

    return model.base_model if isinstance(model, PTPModel) else model


def _key(model, drafter) -> str:
    """Everything a call's cost depends on, as text."""
    parts = []
    for network in (model, drafter):
        if network is None:
            continue
        base = _base(network)
        parameter = next(base.parameters())
        parts.append({
            "model": type(base).__name__,
            "config": base.config.to_json_string(use_diff=False),
            "drafter": _settings(network) if network is not base else None,
            "dtype": str(parameter.dtype),
        })  # fmt: skip
    device = next(model.parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return json.dumps({"models": parts, "device": device.type, "name": name, "cpus": os.cpu_count(),
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "packed_linears": packed_linears_available(), "sizes": SIZES, "calls": CALLS,
                       "rounds": ROUNDS}, sort_keys=True)  # fmt: skip


@functools.cache
def _cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _settings(drafter) -> dict:
    """The drafter's architecture (not what it was trained on, which costs nothing)."""
    from ptp.model.config import DrafterSettings

    return {field.name: repr(getattr(drafter.config, field.name)) for field in fields(DrafterSettings)}


def _path(key: str):
    from ptp.default_model import cache_dir

    return cache_dir() / "call-cost" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _write(path, record: dict) -> None:
    """Write ``record`` atomically; a folder that cannot be written only means measuring again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
            json.dump(record, handle)
        os.replace(handle.name, path)
    except OSError as error:
        warnings.warn(f"the measured call cost could not be kept in {path.parent} ({error}); it is measured again "
                      "in the next process", stacklevel=3)  # fmt: skip
