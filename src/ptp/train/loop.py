"""The training loops: plain functions over the Python API.

:func:`distill` trains a PTP drafter on a data directory: each micro-batch is a set of packed rows, one teacher pass
(no gradient, adapter off) and one pass over the auxiliary slots of many windows per row (adapter on); only the
adapter and the u embedding train. It runs on a CPU, one GPU, or many through ``accelerate launch`` (DDP): every
process takes its own rows of each step, gradients are averaged by DDP. With ``fsdp`` the base and the adapter are
sharded across the processes instead (:mod:`ptp.train.sharding`), for bases too large for one device. Everything
random in a step (window starts, auxiliaries, LoRA dropout) derives from ``(seed, step, process)``, and the data
order from ``(seed, epoch)``, so a resumed run continues exactly as an uninterrupted one.

With ``drafter_model`` the drafter is a separate, smaller model: the teacher (``model``) only gives the bins, the
drafter reads the rows itself and its own base weights may train too (``train_drafter_base``).

:func:`train_autoregressive` is the plain next-token objective on packed rows (used to train small teachers).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ptp.data.dataset import Dataset, load_dataset
from ptp.data.packing import PackedRows, document_mask, pack_documents, split_by_prompt
from ptp.data.prompts import load_tokenizer
from ptp.decode.inputs import context_length
from ptp.model.config import PTPConfig
from ptp.model.ptp import BASE_DIRECTORY, PTPModel, attention_bias, check_drafter
from ptp.sampling import SamplingConfig
from ptp.train.checkpoint import (
    ADAPTER,
    check_resumable,
    check_writable,
    list_checkpoints,
    load_checkpoint,
    remove_stale,
    save_checkpoint,
)
from ptp.train.config import DistillConfig
from ptp.train.losses import (
    cross_entropy_loss,
    draft_tokens,
    forward_kl_loss,
    next_token_loss,
    reverse_kl_loss,
    slot_weights,
    summarize,
    window_metrics,
)
from ptp.train.sharding import (
    clip_gradients,
    full_optimizer_state,
    full_trainable_state,
    is_sharded,
    load_full_optimizer_state,
    shard,
)
from ptp.train.teacher import WindowBatch, run_windows
from ptp.train.windows import evaluation_starts, sample_window_starts

METRICS_LOG = "metrics.jsonl"
RUN_CONFIG = "config.json"
DEFAULT_ROW_LENGTH = 2048
#: DistillConfig fields that are PTPConfig fields: they define the drafter.
DRAFTER_FIELDS = ("mode", "embedding", "embedding_size", "window_length", "lora_rank", "lora_alpha", "lora_dropout",
                  "target_modules", "first_slot_token")  # fmt: skip


@dataclass
class DistillResult:
    """What :func:`distill` produced."""

    adapter: Path
    """The adapter directory (``PTPModel.from_pretrained(base, adapter)``)."""
    run_dir: Path
    """Checkpoints, ``metrics.jsonl`` and the resolved ``config.json``."""
    steps: int
    """Optimizer steps done in total."""
    evaluation: dict
    """The final evaluation: ``correct_prefix``, ``histogram``, ``accuracy`` per position, ``loss``, ``windows``."""
    model: PTPModel
    """The trained model (on the training device; with ``fsdp``, its parameters are this process's shards)."""
    main_process: bool = True
    """Whether this is the main process (under ``accelerate`` / ``torchrun`` every process gets a result)."""


# ----------------------------------------------------------------------------------------------------- helpers
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


def _set_lora_dropout(model: nn.Module, training: bool) -> None:
    """Train mode for LoRA dropout only: the base stays in eval mode, so the teacher pass is the base model's."""
    model.eval()
    if training:
        for name, module in model.named_modules():
            if "lora_dropout" in name:
                module.train()


def autocast_step(device: torch.device, bf16: bool):
    """bf16 autocast for one step's forward and loss, never longer: autocast keeps its bf16 copies of the weights
    until its context exits, so a context spanning optimizer steps would run every forward on stale weights."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def window_loss(batch: WindowBatch, objective: str, sampling: SamplingConfig, decay: float) -> torch.Tensor:
    """The training loss of a batch of windows (``objective``: cross_entropy, forward_kl or reverse_kl)."""
    weights = slot_weights(batch.valid, batch.windows.window_length, decay)
    if objective == "cross_entropy":
        return cross_entropy_loss(batch.logits, batch.tokens, weights)
    temperature = sampling.temperature if sampling.do_sample else 1.0
    divergence = forward_kl_loss if objective == "forward_kl" else reverse_kl_loss
    return divergence(batch.logits, batch.teacher_logits, weights, temperature)


def batch_metrics(batch: WindowBatch, mode: str, sampling: SamplingConfig) -> dict:
    """:func:`window_metrics` of a batch, with drafts made as the decoder makes them."""
    drafts = draft_tokens(batch.logits.detach(), batch.u, mode, sampling)
    exists = batch.windows.starts >= 0
    return window_metrics(drafts == batch.tokens, batch.valid, exists, batch.windows.window_length)


def _add(total: dict | None, sums: dict) -> dict:
    if total is None:
        return {k: v.detach().clone() for k, v in sums.items()}
    return {k: total[k] + sums[k].detach() for k in total}


def _reduce(accelerator, sums: dict) -> dict:
    if accelerator is None or accelerator.num_processes == 1:
        return sums
    return {k: accelerator.reduce(v, reduction="sum") for k, v in sums.items()}


def _past(deadline: float | None, accelerator) -> bool:
    """Whether the time limit has passed, as one decision for all processes (the main process's clock)."""
    if deadline is None:
        return False
    past = torch.tensor([float(time.monotonic() >= deadline)])
    if accelerator is not None and accelerator.num_processes > 1:
        past = accelerator.gather(past.to(accelerator.device))[0]  # the main process decides for all
    return bool(past)


def _average_gradients(accelerator, parameters: list[nn.Parameter]) -> None:
    """What DDP does to the gradients, as one all-reduce: each parameter's gradient becomes its mean over the
    processes (a parameter without one counts as zero). Works for losses of several forward passes."""
    if accelerator is None or accelerator.num_processes == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = accelerator.reduce(torch.cat([g.flatten() for g in grads]), reduction="mean")
    for parameter, piece in zip(parameters, flat.split([g.numel() for g in grads]), strict=True):
        parameter.grad = piece.view_as(parameter).clone()


def _gradient_sync(accelerator, forward, last: bool):
    """Gradients are averaged across processes on the last micro-batch of a step only: DDP's ``no_sync`` before it,
    FSDP2's ``set_requires_gradient_sync``."""
    if is_sharded(forward):
        forward.set_requires_gradient_sync(last)
        return contextlib.nullcontext()
    if last or accelerator is None or accelerator.num_processes == 1:
        return contextlib.nullcontext()
    return accelerator.no_sync(forward)


def newest_checkpoint(run_dir: Path, config: dict, resume: bool) -> dict | None:
    """The state of the run's newest checkpoint (its directory under ``"path"``) when resuming, None for a fresh run.

    ValueError if there is nothing to resume, if the config differs from the checkpoint's in a field that changes the
    result, or if a fresh run would mix its checkpoints with an earlier run's.
    """
    checkpoints = list_checkpoints(run_dir)
    if not resume:
        if checkpoints:
            raise ValueError(f"{run_dir} already holds checkpoints of a run: pass resume, or choose another run_dir")
        return None
    if not checkpoints:
        raise ValueError(f"nothing to resume: {run_dir} holds no checkpoint")
    state = load_checkpoint(checkpoints[-1])
    check_resumable(state["config"], config)
    return {**state, "path": checkpoints[-1]}


# -------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(
    model: PTPModel,
    rows: PackedRows,
    sampling: SamplingConfig,
    *,
    windows_per_row: int = 64,
    batch_size: int = 4,
    objective: str = "cross_entropy",
    decay: float = 1.0,
    out_of_set: str = "stop",
    seed: int = 0,
    bf16: bool = False,
    accelerator=None,
    teacher=None,
) -> dict:
    """Correct prefix, its histogram, accuracy per position and loss on fixed windows with uniform auxiliaries.

    ``teacher``: a separate teacher whose bins the drafter ``model`` predicts (None: the model's own base).

    The windows and u's depend only on ``seed`` and the rows, so evaluations along a run are comparable. Under
    ``accelerate`` each process takes every ``num_processes``-th batch and the sums are added across processes. A
    model sharded with FSDP needs every process in every forward call: processes left without a batch in the last
    round run the first batch again and drop its result.
    """
    training = any(m.training for m in model.modules())
    _set_lora_dropout(model, False)
    device = model.device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    total, loss_sum, batches = None, torch.zeros((), device=device), torch.zeros((), device=device)
    window_length = model.config.window_length
    empty = window_metrics(
        torch.zeros(1, window_length, dtype=torch.bool, device=device),
        torch.zeros(1, window_length, dtype=torch.bool, device=device),
        torch.zeros(1, 1, dtype=torch.bool, device=device),
        window_length,
    )
    count = math.ceil(len(rows) / batch_size)
    rounds = math.ceil(count / world) * world if is_sharded(model) else count
    for position in range(rank, rounds, world):
        number = position if position < count else 0
        start = number * batch_size
        chunk = rows.select(range(start, min(start + batch_size, len(rows)))).to(device)
        starts = evaluation_starts(chunk, windows_per_row, seed + number)
        generator = torch.Generator(device).manual_seed(seed * 31 + number)
        with autocast_step(device, bf16):
            batch = run_windows(
                model,
                chunk,
                starts,
                sampling,
                generator=generator,
                out_of_set=out_of_set,
                teacher_targets=objective != "cross_entropy",
                teacher=teacher,
            )
            loss = window_loss(batch, objective, sampling, decay).float()
        if position >= count:  # a repeated batch, run only to take part in the sharded model's collectives
            continue
        loss_sum += loss
        batches += 1
        total = _add(total, batch_metrics(batch, model.config.mode, sampling))
    total = _reduce(accelerator, {**(total or empty), "loss": loss_sum, "batches": batches})
    _set_lora_dropout(model, training)
    summary = summarize(total)
    summary["loss"] = float(total["loss"]) / max(float(total["batches"]), 1.0)
    return summary


# ----------------------------------------------------------------------------------------------------- distill
def resolve_sampling(config: DistillConfig, dataset: Dataset) -> SamplingConfig:
    """S for the bins: the data's, or the config's (which must equal the data's unless foreign data are allowed),
    with the config's order of the bins."""
    asked, recorded = config.sampling_config(), dataset.sampling
    if asked is None and recorded is None:
        raise ValueError(f"{dataset.path} is raw text without a sampling configuration; set `sampling` in the config")
    if asked is not None and not config.allow_foreign_data:
        dataset.check_sampling(asked)
    return replace(asked or recorded, order=config.bin_order)


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


def check_device(device: str | None) -> None:
    """``device`` must be 'cpu', 'cuda' (available) or None."""
    if device is not None and device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available")


def use_bf16(precision: str, device: torch.device) -> bool:
    """``bf16``, or ``auto`` on CUDA."""
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def resolve_row_length(row_length: int | None, *models) -> int:
    """Tokens per packed row: ``row_length`` (checked against the models' contexts) or the shortest context, at
    most :data:`DEFAULT_ROW_LENGTH`."""
    limits = [n for n in (context_length(m) for m in models if m is not None) if n]
    limit = min(limits) if limits else None
    row_length = row_length or min(DEFAULT_ROW_LENGTH, limit or DEFAULT_ROW_LENGTH)
    if limit is not None and row_length > limit:
        raise ValueError(f"row_length {row_length} exceeds the base model's context of {limit} positions")
    return row_length


def first_rows(rows: PackedRows, count: int, hint: str) -> PackedRows:
    """The first ``count`` rows, which must hold a completion token (``hint``: what to do otherwise)."""
    rows = rows.select(range(min(count, len(rows))))
    if len(rows) == 0 or not bool(rows.targets.any()):
        raise ValueError(f"the evaluation rows hold no completion token; {hint}")
    return rows


def check_initial_drafter(path: Path, config, sampling: SamplingConfig) -> bool:
    """``init_adapter`` must be a drafter with ``config``'s drafter settings (else its weights would not fit) and
    trained for the distribution of ``sampling``, except that, when its base does not train, its LoRA rank may be
    lower (it grows, :meth:`PTPModel.load_adapter`), ``first_slot_token`` may be switched on (the weights fit; the
    first slots then also receive their token, which training teaches the drafter to use) and the order of the bins
    may change (the drafter relearns which token a u picks). Returns whether the run builds its own drafter and
    loads the saved one into it (else it continues the saved drafter as it is)."""
    if not path.is_dir():
        raise FileNotFoundError(f"init_adapter {path} does not exist")
    saved = PTPConfig.load(path)
    if not saved.sampling.same_distribution(sampling):
        raise ValueError(
            f"init_adapter {path} was trained for {saved.sampling.describe()}, this run for {sampling.describe()}"
        )
    wanted = {name: getattr(config, name) for name in DRAFTER_FIELDS} | {"train_base": config.train_drafter_base}
    frozen_base = not config.train_drafter_base  # a drafter whose base trains is continued as it is
    grows = frozen_base and saved.lora_rank < config.lora_rank
    given = frozen_base and config.first_slot_token and not saved.first_slot_token
    reordered = saved.sampling != sampling
    if reordered and not frozen_base:
        raise ValueError(f"init_adapter {path} learned the bins in {saved.sampling.order} order; a drafter whose "
                         f"base trains cannot switch to {sampling.order} order")  # fmt: skip
    if grows:
        wanted = {k: v for k, v in wanted.items() if k not in ("lora_rank", "lora_alpha")}
    if given:
        wanted.pop("first_slot_token")
    differ = [f"{k}={getattr(saved, k)!r} (config: {v!r})" for k, v in wanted.items() if getattr(saved, k) != v]
    if differ:
        raise ValueError(f"init_adapter {path} was trained with other drafter settings: " + ", ".join(differ))
    return grows or given or reordered


def check_windows(evaluation: dict, hint: str) -> dict:
    """``evaluation``, unless it saw no window."""
    if evaluation["windows"] == 0:
        raise ValueError(f"the evaluation rows hold no window; {hint}")
    return evaluation


@contextlib.contextmanager
def run_processes(config):
    """The run's ``accelerate.Accelerator`` (``config.device``: cpu, cuda or None); several processes under
    ``accelerate launch`` / ``torchrun``. A process group that the run starts is destroyed when the run ends: left to
    the interpreter's exit, its threads can abort the process (gloo) or keep it waiting (NCCL)."""
    from accelerate import Accelerator

    check_device(config.device)
    started = not torch.distributed.is_initialized()
    accelerator = Accelerator(cpu=config.device == "cpu")
    try:
        yield accelerator
    finally:
        if started and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def distill(
    config: DistillConfig,
    *,
    base_model=None,
    drafter_model=None,
    tokenizer=None,
    dataset: Dataset | None = None,
) -> DistillResult:
    """Train a PTP drafter by distillation from its frozen base (docs/method.md, Distillation); see
    :class:`DistillConfig`.

    Args:
        config: the run.
        base_model: the teacher as an object (default: loaded from ``config.model``); it is modified in place.
        drafter_model: the separate drafter's causal LM as an object (default: loaded from
            ``config.drafter_model``, if set); it is modified in place.
        tokenizer: if given, checked against the tokenizer recorded in the data.
        dataset: a loaded data directory (default: ``load_dataset(config.data)``).
    """
    with run_processes(config) as accelerator:
        return _distill(config, accelerator, base_model, drafter_model, tokenizer, dataset)


def _distill(config: DistillConfig, accelerator, base_model, drafter_model, tokenizer, dataset) -> DistillResult:
    device, main = accelerator.device, accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    if config.fsdp and drafter_model is not None:
        raise ValueError("fsdp shards the teacher's own network: it does not support a separate drafter_model")
    if config.fsdp and world == 1:
        raise ValueError(
            "fsdp shards the model across processes and needs more than one: run under `accelerate launch "
            "--num_processes N` or `torchrun --nproc_per_node N`, or drop fsdp"
        )
    # Under fsdp the base is assembled on the CPU and only its shards go to the device.
    place = torch.device("cpu") if config.fsdp else device
    bf16 = use_bf16(config.precision, device)
    if not config.out:
        raise ValueError("no output directory: set `out` in the config")
    out, run_dir = Path(config.out), config.run_path()
    if main:
        check_writable(out.parent, "adapter")
        check_writable(run_dir, "run directory")
        remove_stale(run_dir)

    if dataset is None:
        if not config.data:
            raise ValueError("no data: set `data` in the config (a directory written by `ptp pregenerate`)")
        dataset = load_dataset(config.data)
    sampling = resolve_sampling(config, dataset)
    if tokenizer is None and base_model is None:
        tokenizer = load_tokenizer(config.model)  # only to check it against the data's
    if base_model is None and not config.model:
        raise ValueError("no base model: set `model` in the config (or pass base_model)")
    base = load_causal_lm(config.model if base_model is None else base_model, place, bf16)
    if not config.allow_foreign_data:
        dataset.check_model(base)
        dataset.check_tokenizer(tokenizer)
    separate = drafter_model is not None or bool(config.drafter_model)
    teacher, drafter_base = None, None
    if separate:
        teacher = base.eval()
        # A resumed drafter whose own weights train continues from the checkpoint's weights, not the initial ones.
        saved = list_checkpoints(run_dir)[-1:] if config.resume and config.train_drafter_base else []
        if saved:
            drafter_model = None
        name = str(saved[0] / ADAPTER / BASE_DIRECTORY) if saved else config.drafter_model or ""
        drafter_base = load_causal_lm(name if drafter_model is None else drafter_model, device, bf16)
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)

    row_length = resolve_row_length(config.row_length, base, drafter_base)
    train_docs, eval_docs = split_by_prompt(dataset.documents, config.eval_fraction, config.seed)
    train_rows, packing = pack_documents(train_docs, row_length)
    if len(train_rows) == 0 or not bool(train_rows.targets.any()):
        raise ValueError(f"{dataset.path}: no document has a completion token within row_length={row_length}")
    eval_rows = pack_documents(eval_docs, row_length)[0] if eval_docs else train_rows
    if len(eval_rows) == 0:
        eval_rows = train_rows
    eval_rows = first_rows(eval_rows, config.eval_rows, "use more data or another eval_fraction")

    torch.manual_seed(config.seed)
    start_step, resume_state = 0, newest_checkpoint(run_dir, config.to_dict(), config.resume)
    saved = resume_state["path"] / ADAPTER if resume_state is not None else config.init_adapter
    adapts = saved and resume_state is None and check_initial_drafter(Path(saved), config, sampling)
    if saved and not adapts:
        if config.train_drafter_base:  # the drafter's own weights come from the saved drafter too
            dtype = torch.bfloat16 if bf16 else torch.float32
            model = PTPModel.from_pretrained(None, saved, dtype=dtype, device=device)
        else:
            model = PTPModel.from_pretrained(drafter_base if separate else base, saved)
        start_step = resume_state["step"] if resume_state is not None else 0
    else:
        drafter = PTPConfig(sampling=sampling, train_base=config.train_drafter_base,
                            **{name: getattr(config, name) for name in DRAFTER_FIELDS})  # fmt: skip
        model = PTPModel(drafter_base if separate else base, drafter)
        if adapts:  # a lower-rank drafter grows into this run's rank, or starts receiving its first slots' token
            model.load_adapter(saved)
    if separate:
        check_drafter(teacher, model)
    model.auxiliary_embedding.to(place)
    _set_lora_dropout(model, True)
    if config.fsdp:  # before the optimizer, which must hold the sharded parameters
        shard(model, model.base_model, device, world)
    optimizer = torch.optim.AdamW(
        model.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.max_steps, config.min_lr_ratio)
    )
    if resume_state is not None:
        if config.fsdp:
            load_full_optimizer_state(model, optimizer, resume_state["optimizer"])
        else:
            optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
    forward = accelerator.prepare_model(model) if world > 1 and not config.fsdp else model

    log = MetricsLog(run_dir / METRICS_LOG, truncate_after=start_step) if main else None
    if main and not config.resume:
        record = {
            "config": config.to_dict(),
            "sampling": sampling.to_dict(),
            "packing": packing,
            "row_length": row_length,
            "eval_rows": len(eval_rows),
            "processes": world,
        }
        (run_dir / RUN_CONFIG).write_text(json.dumps(record, indent=1) + "\n")
    bar = _progress(config.max_steps, start_step, config.progress and main)
    evaluate_args = dict(
        windows_per_row=config.windows_per_row,
        batch_size=config.batch_size,
        objective=config.objective,
        decay=config.position_decay,
        out_of_set=config.out_of_set,
        seed=config.seed,
        bf16=bf16,
        accelerator=accelerator,
        teacher=teacher,
    )

    def state() -> tuple[dict, dict | None]:
        """The trainer state, and under fsdp the full trainable weights: gathering them is a collective there, so
        every process calls it (only the main process writes)."""
        if not config.fsdp:
            optimizer_state, weights = optimizer.state_dict(), None
        else:
            optimizer_state, weights = full_optimizer_state(model, optimizer), full_trainable_state(model)
        trainer = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "config": config.to_dict()}
        return trainer, weights

    total, losses, tokens, clock = None, [], torch.zeros((), device=device), time.perf_counter()
    evaluation: dict | None = None
    per_step = config.batch_size * config.gradient_accumulation * world
    divergence = config.objective != "cross_entropy"
    done, deadline = start_step, time.monotonic() + config.max_time if config.max_time else None
    for step in range(start_step, config.max_steps):
        torch.manual_seed(step_seed(config.seed, step, rank))  # LoRA dropout
        generator = torch.Generator(device).manual_seed(step_seed(config.seed, step, rank))
        for micro in range(config.gradient_accumulation):
            position = (step * config.gradient_accumulation + micro) * world + rank
            rows = train_rows.select(
                stream_rows(len(train_rows), config.seed, position * config.batch_size, config.batch_size)
            ).to(device)
            starts = sample_window_starts(rows, config.windows_per_row, generator)
            last = micro == config.gradient_accumulation - 1
            with _gradient_sync(accelerator, forward, last):
                with autocast_step(device, bf16):
                    batch = run_windows(
                        model,
                        rows,
                        starts,
                        sampling,
                        beta=config.beta,
                        generator=generator,
                        out_of_set=config.out_of_set,
                        teacher_targets=divergence,
                        forward=forward,
                        teacher=teacher,
                    )
                    loss = window_loss(batch, config.objective, sampling, config.position_decay)
                (loss / config.gradient_accumulation).backward()
            losses.append(loss.detach().float())
            tokens += (rows.document >= 0).sum()
            total = _add(total, {**batch_metrics(batch, config.mode, sampling), "out_of_set": batch.out_of_set.float()})
        if config.max_grad_norm > 0:
            clip = clip_gradients if config.fsdp else torch.nn.utils.clip_grad_norm_
            clip(model.trainable_parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        final = done == config.max_steps or _past(deadline, accelerator)

        if done % config.log_interval == 0 or final:
            sums = _reduce(
                accelerator,
                {
                    **total,
                    "loss": torch.stack(losses).sum(),
                    "batches": torch.tensor(float(len(losses)), device=device),
                    "tokens": tokens.float(),
                },
            )
            elapsed = time.perf_counter() - clock
            summary = summarize(sums)
            record = {
                "step": done,
                "split": "train",
                "loss": float(sums["loss"]) / float(sums["batches"]),
                "correct_prefix": summary["correct_prefix"],
                "accuracy": summary["accuracy"],
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": float(sums["tokens"]) / elapsed,
                "out_of_set": int(sums["out_of_set"]),
                "rows_seen": done * per_step,
            }
            if log:
                log.write(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", prefix=f"{record['correct_prefix']:.2f}")
            total, losses, tokens, clock = None, [], torch.zeros((), device=device), time.perf_counter()
        bar.update(1)

        if final or (config.eval_interval and done % config.eval_interval == 0):
            evaluation = evaluate(model, eval_rows, sampling, **evaluate_args)
            if log:
                log.write({"step": done, "split": "eval", **evaluation})
            clock = time.perf_counter()
        if final or (config.checkpoint_interval and done % config.checkpoint_interval == 0):
            trainer, weights = state()
            if main:
                save_checkpoint(run_dir, done, model, trainer, config.keep_checkpoints, weights)
            accelerator.wait_for_everyone()
        if final:
            break
    bar.close()

    if evaluation is None:  # resumed after the last step: nothing trained, evaluate what there is
        evaluation = evaluate(model, eval_rows, sampling, **evaluate_args)
    check_windows(evaluation, "use more data or a larger eval_fraction")
    model.config.acceptance_histogram = evaluation["histogram"]
    model.config.sampling = sampling
    weights = full_trainable_state(model) if config.fsdp else None
    if main:
        model.save_pretrained(out, state_dict=weights)
    accelerator.wait_for_everyone()
    return DistillResult(out, run_dir, done, evaluation, model, main)


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


def _progress(total: int, initial: int, enabled: bool, desc: str = "distill"):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled)


# -------------------------------------------------------------------------------------------------- on text rows
def text_logits(model, batch: PackedRows) -> torch.Tensor:
    """A causal LM's logits over packed rows, every document seeing only itself (as in training and evaluation)."""
    allowed = attention_bias(model, document_mask(batch.document))
    return model(input_ids=batch.tokens, attention_mask=allowed, position_ids=batch.positions).logits


def train_autoregressive(model, rows: PackedRows, **options) -> list[float]:
    """Plain next-token training of a causal LM on packed rows (documents isolated); all parameters train.

    ``options`` are those of :func:`train_rows`. Returns the loss of every step.
    """

    def batch_loss(batch: PackedRows, generator: torch.Generator) -> torch.Tensor:
        return next_token_loss(text_logits(model, batch), batch.tokens, batch.document)

    return train_rows(model, rows, batch_loss, **options)


def train_rows(
    model,
    rows: PackedRows,
    batch_loss,
    *,
    steps: int,
    batch_size: int = 8,
    learning_rate: float = 3e-3,
    warmup_steps: int = 20,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    progress: bool = False,
    accelerator=None,
    run_dir: Path | None = None,
    checkpoint_interval: int | None = None,
    keep_checkpoints: int = 2,
    config: dict | None = None,
    resumed: dict | None = None,
    max_time: float | None = None,
    bf16: bool = False,
) -> list[float]:
    """The loop of training on text rows: every parameter that requires a gradient trains on
    ``batch_loss(rows, generator)`` (a scalar), with AdamW and a warm-up then cosine schedule; with ``bf16`` the
    loss of each step is computed under bf16 autocast (the weights and the optimizer stay float32).

    ``generator`` (on the model's device) is seeded per step, for whatever the loss draws (window starts, u's).
    Returns the loss of every step (one host sync per step, for the record).

    Under ``accelerator`` with several processes each takes its own ``batch_size`` rows of a step (as in
    :func:`distill`), gradients are averaged across processes and the recorded loss is their mean. With ``run_dir``
    the main process writes a checkpoint (the model's ``save_pretrained``, optimizer, scheduler, losses so far and
    ``config``) every ``checkpoint_interval`` steps and after the last; ``resumed`` (from :func:`newest_checkpoint`,
    with the model already loaded from it) continues that run exactly. ``max_time`` (seconds) ends the run early
    after the step that passes it, as if that step were the last.
    """
    if steps < 1 or len(rows) == 0:
        raise ValueError("training on rows needs steps >= 1 and at least one row")
    device = model.device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    main = rank == 0
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(min(warmup_steps, steps - 1), steps, 0.1))
    start, losses = 0, []
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        start, losses = resumed["step"], list(resumed["losses"])
    bar = _progress(steps, start, progress and main, desc="train")
    deadline = time.monotonic() + max_time if max_time else None
    for step in range(start, steps):
        torch.manual_seed(step_seed(seed, step, rank))  # dropout, if the model has any
        position = step * world + rank
        batch = rows.select(stream_rows(len(rows), seed, position * batch_size, batch_size)).to(device)
        with autocast_step(device, bf16):
            loss = batch_loss(batch, torch.Generator(device).manual_seed(step_seed(seed, step, rank)))
        loss.backward()
        _average_gradients(accelerator, parameters)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(_reduce(accelerator, {"loss": loss.detach().float()})["loss"]) / world)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        final = done == steps or _past(deadline, accelerator)
        if run_dir is not None and (final or (checkpoint_interval and done % checkpoint_interval == 0)):
            if main:
                state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "losses": losses,
                         "config": config or {}}  # fmt: skip
                save_checkpoint(run_dir, done, model, state, keep_checkpoints)
            if accelerator is not None:
                accelerator.wait_for_everyone()
        if final:
            break
    bar.close()
    model.eval()
    return losses
