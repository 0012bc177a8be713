"""The training loop: one plain function for every objective, over packed rows.

:func:`train_loop` runs optimizer steps. Each step reads its rows of the data stream, computes the caller's
``batch_loss`` (under bf16 autocast when asked), accumulates gradients over micro-batches, clips and steps; after the
step the caller's ``after_step`` logs or evaluates, and the loop writes a checkpoint at the interval and after the
last step. Distillation (:mod:`ptp.train.distillation`) and training on text (:mod:`ptp.train.pretrain`) differ
only in their loss, their optimizer and what they record.

Data parallel: under ``accelerate launch`` / ``torchrun`` every process takes its own rows of each step and the model
runs through DDP (``accelerator.prepare_model``), which averages the gradients in the backward pass; a model sharded
with FSDP (:mod:`ptp.train.sharding`) synchronises itself. Everything random in a step (window starts, auxiliaries,
dropout) derives from ``(seed, step, process)`` and the data order from ``(seed, epoch)``, so a resumed run continues
exactly as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ptp.data.packing import PackedRows
from ptp.train.checkpoint import save_checkpoint
from ptp.train.runtime import Profile, autocast_step, step_profiler
from ptp.train.sharding import clip_gradients, is_sharded

#: ``batch_loss(rows, generator, forward)``: the scalar loss of a micro-batch of rows. ``generator`` (on the rows'
#: device, seeded per step) is for whatever the loss draws; ``forward`` is the module to call for the pass whose
#: gradients are synchronised across processes (the model itself, or its DDP wrapper).
BatchLoss = Callable[[PackedRows, torch.Generator, nn.Module], torch.Tensor]


@dataclass
class Checkpoints:
    """Where and how often :func:`train_loop` writes checkpoints (:mod:`ptp.train.checkpoint`)."""

    run_dir: Path
    """The run directory; checkpoints go to its ``checkpoints/``."""
    interval: int | None
    """Every this many steps, and always after the last; None or 0: only after the last."""
    keep: int
    """Checkpoints kept (the newest)."""
    state: Callable[[], tuple[dict, dict | None]]
    """The trainer state to save (optimizer, scheduler, config, ...) and, for a sharded model, its full trainable
    weights (else None). Every process calls it (gathering sharded state is a collective); the main one writes."""


def warmup_cosine(warmup_steps: int, max_steps: int, min_ratio: float):
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def stream_rows(num_rows: int, seed: int, start: int, count: int) -> list[int]:
    """Rows ``start .. start + count - 1`` of the data stream: epoch e is a permutation seeded by ``(seed, e)``."""
    rows = []
    for position in range(start, start + count):
        epoch, offset = divmod(position, num_rows)
        rows.append(_epoch_order(num_rows, seed, epoch)[offset])
    return rows


@functools.lru_cache(maxsize=4)
def _epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(num_rows, generator=torch.Generator().manual_seed(seed * 7919 + epoch)).tolist()


def step_seed(seed: int, step: int, process: int) -> int:
    return (seed * 1_000_003 + step) * 1009 + process


def _past(deadline: float | None, accelerator) -> bool:
    """Whether the time limit has passed, as one decision for all processes (the main process's clock)."""
    if deadline is None:
        return False
    past = torch.tensor([float(time.monotonic() >= deadline)])
    if accelerator is not None and accelerator.num_processes > 1:
        past = accelerator.gather(past.to(accelerator.device))[0]  # the main process decides for all
    return bool(past)


def data_parallel(model: nn.Module, accelerator) -> nn.Module:
    """The module the loss calls: the model's DDP wrapper when several processes train it, else the model (a model
    sharded with FSDP synchronises itself)."""
    if accelerator is None or accelerator.num_processes == 1 or is_sharded(model):
        return model
    return accelerator.prepare_model(model)


def _gradient_sync(accelerator, forward: nn.Module, last: bool):
    """Gradients are averaged across processes on the last micro-batch of a step only: DDP's ``no_sync`` before it,
    FSDP2's ``set_requires_gradient_sync``."""
    if is_sharded(forward):
        forward.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if last or accelerator is None or accelerator.num_processes == 1:
        return contextlib.nullcontext()
    return accelerator.no_sync(forward)


def train_loop(
    model: nn.Module,
    rows: PackedRows,
    batch_loss: BatchLoss,
    optimizer: torch.optim.Optimizer,
    scheduler,
    *,
    steps: int,
    start: int = 0,
    batch_size: int,
    accumulation: int = 1,
    seed: int = 0,
    bf16: bool = False,
    max_grad_norm: float = 1.0,
    accelerator=None,
    max_time: float | None = None,
    after_batch: Callable[[PackedRows, torch.Tensor], None] | None = None,
    after_step: Callable[[int, bool], None] | None = None,
    checkpoints: Checkpoints | None = None,
    compile: bool = False,
    profile: Profile | None = None,
) -> int:
    """Train ``model``'s parameters that require a gradient from step ``start`` to ``steps``; returns the steps done.

    A step is ``accumulation`` micro-batches of ``batch_size`` rows per process, each ``batch_loss(rows, generator,
    forward)`` (divided by ``accumulation`` before its backward); then gradient clipping at ``max_grad_norm`` (0:
    off), ``optimizer.step()`` and ``scheduler.step()``. ``after_batch(rows, loss)`` runs after each micro-batch's
    backward, ``after_step(done, final)`` after each optimizer step, before the step's checkpoint. ``max_time``
    (seconds) ends the run after the step that passes it, as if that step were the last. ``compile``: the passes that
    ``batch_loss`` makes through ``forward`` are compiled with ``torch.compile``. ``profile``: a few steps run under
    ``torch.profiler`` (:func:`ptp.train.runtime.step_profiler`).
    """
    device = accelerator.device if accelerator is not None else model.device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    parameters = [p for p in model.parameters() if p.requires_grad]
    clip = clip_gradients if is_sharded(model) else torch.nn.utils.clip_grad_norm_
    forward = data_parallel(model, accelerator)
    if compile:
        forward = torch.compile(forward)
    deadline = time.monotonic() + max_time if max_time else None
    done = start
    with step_profiler(profile, device) as profiled_step:
        for step in range(start, steps):
            torch.manual_seed(step_seed(seed, step, rank))  # dropout
            generator = torch.Generator(device).manual_seed(step_seed(seed, step, rank))
            for micro in range(accumulation):
                position = (step * accumulation + micro) * world + rank
                batch = rows.select(stream_rows(len(rows), seed, position * batch_size, batch_size)).to(device)
                with _gradient_sync(accelerator, forward, micro == accumulation - 1):
                    with autocast_step(device, bf16):
                        loss = batch_loss(batch, generator, forward)
                    (loss / accumulation).backward()
                if after_batch is not None:
                    after_batch(batch, loss)
            if max_grad_norm > 0:
                clip(parameters, max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            final = done == steps or _past(deadline, accelerator)
            if after_step is not None:
                after_step(done, final)
            profiled_step()
            if checkpoints is not None and (final or (checkpoints.interval and done % checkpoints.interval == 0)):
                _save(checkpoints, done, model, accelerator, rank == 0)
            if final:
                break
    return done


def _save(checkpoints: Checkpoints, step: int, model: nn.Module, accelerator, main: bool) -> None:
    """Checkpoint ``step``: every process gathers the state, the main one writes, and all wait until it has."""
    trainer, weights = checkpoints.state()
    if main:
        save_checkpoint(checkpoints.run_dir, step, model, trainer, checkpoints.keep, weights)
    if accelerator is not None:
        accelerator.wait_for_everyone()
