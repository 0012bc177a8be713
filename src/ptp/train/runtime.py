"""What every training run needs around its loop: its processes, device and precision, loading models, a metrics log,
a progress bar, and a profiler for a few of its steps.

A run holds an ``accelerate.Accelerator`` (:func:`run_processes`): one process on a CPU or a GPU, or several under
``accelerate launch`` / ``torchrun``, which the loop (:mod:`ptp.train.loop`) trains data-parallel.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ptp.decode.inputs import context_length
from ptp.runtime import operator_table, profiler_activities

#: Tokens per packed row when the run does not say and the model's context allows it.
DEFAULT_ROW_LENGTH = 2048


@contextlib.contextmanager
def run_processes(config):
    """The run's ``accelerate.Accelerator`` (``config.device``: cpu, cuda or None); several processes under
    ``accelerate launch`` / ``torchrun``. A process group that the run starts is destroyed when the run ends: left to
    the interpreter's exit, its threads can abort the process (gloo) or keep it waiting (NCCL). A run that ends
    normally first waits for every process, so that none tears the group down while another still talks through it
    (gloo then aborts the slower process)."""
    from accelerate import Accelerator

    check_device(config.device)
    started = not torch.distributed.is_initialized()
    accelerator = Accelerator(cpu=config.device == "cpu")
    try:
        yield accelerator
        if started and torch.distributed.is_initialized():
            torch.distributed.barrier()
    finally:
        if started and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def check_device(device: str | None) -> None:
    """``device`` must be 'cpu', 'cuda' (available) or None."""
    if device is not None and device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")


def use_bf16(precision: str, device: torch.device) -> bool:
    """``bf16``, or ``auto`` on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def autocast_step(device: torch.device, bf16: bool):
    """bf16 autocast for one step's forward and loss, never longer: autocast keeps its bf16 copies of the weights
    until its context exits, so a context spanning optimizer steps would run every forward on stale weights."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def load_causal_lm(model, device: torch.device, bf16: bool):
    """``model`` (an object, or a directory or name ``AutoModelForCausalLM`` loads) on the device in the run's
    dtype."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if bf16 else torch.float32
    if isinstance(model, (str, Path)):
        try:
            model = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype)
        except OSError as error:
            raise ValueError(f"cannot load the model {str(model)!r}: {error}") from error
    return model.to(device=device, dtype=dtype)


def resolve_row_length(row_length: int | None, *models) -> int:
    """Tokens per packed row: ``row_length`` (checked against the models' contexts) or the shortest context, at
    most :data:`DEFAULT_ROW_LENGTH`."""
    limits = [n for n in (context_length(m) for m in models if m is not None) if n]
    limit = min(limits) if limits else None
    row_length = row_length or min(DEFAULT_ROW_LENGTH, limit or DEFAULT_ROW_LENGTH)
    if limit is not None and row_length > limit:
        raise ValueError(f"row_length {row_length} exceeds the base model's context of {limit} positions")
    return row_length


def set_lora_dropout(model: nn.Module, training: bool) -> None:
    """Train mode for LoRA dropout only: the base stays in eval mode, so the teacher pass is the base model's."""
    model.eval()
    if training:
        for name, module in model.named_modules():
            if "lora_dropout" in name:
                module.train()


def reduce_sums(accelerator, sums: dict) -> dict:
    """Each tensor of ``sums`` summed over the processes (a collective: every process calls it)."""
    if accelerator is None or accelerator.num_processes == 1:
        return sums
    return {k: accelerator.reduce(v, reduction="sum") for k, v in sums.items()}


class MetricsLog:
    """Append-only JSONL log; on resume, records after the checkpoint's step (from the killed run) are dropped."""

    def __init__(self, path: Path, truncate_after: int | None = None):
        self.path = path
        if truncate_after is not None and path.is_file():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= truncate_after
            ]
            path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """A tqdm bar over optimizer steps (a no-op bar when not ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled)


@dataclass
class Profile:
    """Optimizer steps of a run timed by ``torch.profiler``: where a step's time goes."""

    path: Path
    """Where the operator table is written (most expensive first)."""
    steps: int
    """Steps recorded, after two unrecorded ones (kernels are chosen and a compiled pass compiles in those)."""


@contextlib.contextmanager
def step_profiler(profile: Profile | None, device: torch.device) -> Iterator[Callable[[], None]]:
    """Yields the function that the loop calls after each optimizer step. With ``profile``, steps 3 to
    ``profile.steps + 2`` run under ``torch.profiler`` and their operator table is written to ``profile.path`` once
    they are done (or when the run ends first, with the steps recorded until then); without it, a no-op."""
    if profile is None:
        yield lambda: None
        return
    from torch.profiler import profile as torch_profile
    from torch.profiler import schedule

    def write(prof) -> None:
        profile.path.write_text(operator_table(prof, device))

    recorded = schedule(wait=1, warmup=1, active=profile.steps, repeat=1)
    with torch_profile(activities=profiler_activities(device), schedule=recorded, on_trace_ready=write) as prof:
        yield prof.step
