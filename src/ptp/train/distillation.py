"""Distillation of a PTP drafter from its frozen base (``ptp distill``; docs/method.md, Distillation).

:func:`distill` sets up a run and hands it to the training loop (:func:`ptp.train.loop.train_loop`): each
micro-batch is a set of packed rows, one teacher pass (no gradient, adapter off) and one pass over the auxiliary
slots of many windows per row (adapter on); only the adapter and the u embedding train. It runs on a CPU, one GPU,
or many through ``accelerate launch`` (DDP); with ``fsdp`` the base and the adapter are sharded across the processes
instead (:mod:`ptp.train.sharding`), for bases too large for one device.

With ``drafter_model`` the drafter is a separate, smaller model: the teacher (``model``) only gives the bins, the
drafter reads the rows itself and its own base weights may train too (``train_drafter_base``).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ptp.data.dataset import Dataset, load_dataset
from ptp.data.packing import PackedRows, pack_documents, split_by_prompt
from ptp.data.prompts import load_tokenizer
from ptp.model.config import PTPConfig, drafter_settings
from ptp.model.ptp import BASE_DIRECTORY, PTPModel, check_drafter
from ptp.sampling import SamplingConfig
from ptp.train.checkpoint import ADAPTER, check_writable, list_checkpoints, newest_checkpoint, remove_stale
from ptp.train.config import DistillConfig
from ptp.train.evaluation import check_windows, evaluate, first_rows
from ptp.train.loop import Checkpoints, train_loop, warmup_cosine
from ptp.train.losses import accumulate, batch_metrics, summarize, window_loss
from ptp.train.runtime import (
    MetricsLog,
    Profile,
    load_causal_lm,
    progress_bar,
    reduce_sums,
    resolve_row_length,
    run_processes,
    set_lora_dropout,
    use_bf16,
)
from ptp.train.sharding import full_optimizer_state, full_trainable_state, load_full_optimizer_state, shard
from ptp.train.teacher import run_windows
from ptp.train.windows import sample_window_starts

METRICS_LOG = "metrics.jsonl"
RUN_CONFIG = "config.json"
PROFILE = "profile.txt"


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


@dataclass
class _Models:
    """The networks of a run: the teacher's base; for a separate drafter the frozen teacher and the drafter's own
    causal LM; with ``float32_bins`` in a 16-bit run a frozen float32 copy of the teacher that gives the bins."""

    base: torch.nn.Module
    teacher: torch.nn.Module | None = None
    drafter_base: torch.nn.Module | None = None

    @property
    def separate(self) -> bool:
        return self.drafter_base is not None


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
    device, main, world = accelerator.device, accelerator.is_main_process, accelerator.num_processes
    _check_processes(config, drafter_model, world)
    bf16 = use_bf16(config.precision, device)
    out, run_dir = _output(config, main)
    dataset = dataset if dataset is not None else _load_data(config)
    sampling = resolve_sampling(config, dataset)
    models = _load_models(config, dataset, accelerator, bf16, base_model, drafter_model, tokenizer)
    row_length = resolve_row_length(config.row_length, models.base, models.drafter_base)
    train_rows, eval_rows, packing = _pack(config, dataset, row_length)

    torch.manual_seed(config.seed)
    resume_state = newest_checkpoint(run_dir, config.to_dict(), config.resume)
    model, start_step = _drafter(config, sampling, resume_state, models, device, bf16)
    # Under fsdp the base was assembled on the CPU and only its shards go to the device.
    model.auxiliary_embedding.to(torch.device("cpu") if config.fsdp else device)
    set_lora_dropout(model, True)
    if config.fsdp:  # before the optimizer, which must hold the sharded parameters
        shard(model, model.base_model, device, world)
    optimizer, scheduler = _optimizer(config, model, resume_state)

    if main:  # the run's first file, written once data and models have passed their checks
        run_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run_dir / METRICS_LOG, truncate_after=start_step) if main else None
    if main and not config.resume:
        record = {"config": config.to_dict(), "sampling": sampling.to_dict(), "packing": packing,
                  "row_length": row_length, "eval_rows": len(eval_rows), "processes": world}  # fmt: skip
        (run_dir / RUN_CONFIG).write_text(json.dumps(record, indent=1) + "\n")
    evaluate_args = dict(windows_per_row=config.windows_per_row, batch_size=config.batch_size,
                         objective=config.objective, decay=config.position_decay, chain=config.on_chain,
                         out_of_set=config.out_of_set,
                         seed=config.seed, bf16=bf16, accelerator=accelerator, teacher=models.teacher)  # fmt: skip
    steps = _Steps(config, model, sampling, eval_rows, evaluate_args, accelerator, scheduler, log, start_step)
    profile = Profile(run_dir / PROFILE, config.profile_steps) if config.profile_steps and main else None
    done = train_loop(
        model, train_rows, steps.batch_loss, optimizer, scheduler, steps=config.max_steps, start=start_step,
        batch_size=config.batch_size, accumulation=config.gradient_accumulation, seed=config.seed, bf16=bf16,
        max_grad_norm=config.max_grad_norm, accelerator=accelerator, max_time=config.max_time,
        after_batch=steps.after_batch, after_step=steps.after_step, compile=config.compile, profile=profile,
        checkpoints=Checkpoints(run_dir, config.checkpoint_interval, config.keep_checkpoints,
                                lambda: _trainer_state(config, model, optimizer, scheduler)),
    )  # fmt: skip
    steps.bar.close()

    evaluation = steps.evaluation
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


class _Steps:
    """What a distillation step computes and records: the loss of a micro-batch of windows, the training metrics
    summed between log records, and the evaluations at the interval and after the last step."""

    def __init__(self, config, model, sampling, eval_rows, evaluate_args, accelerator, scheduler, log, start):
        self.config, self.model, self.sampling, self.eval_rows = config, model, sampling, eval_rows
        self.evaluate_args, self.accelerator, self.scheduler, self.log = evaluate_args, accelerator, scheduler, log
        self.teacher = evaluate_args["teacher"]  # a separate drafter's teacher, or None
        self.device = accelerator.device
        self.per_step = config.batch_size * config.gradient_accumulation * accelerator.num_processes
        self.bar = progress_bar(config.max_steps, start, config.progress and accelerator.is_main_process, "distill")
        self.evaluation: dict | None = None
        self.pending = None  # the windows of the micro-batch whose loss was just computed
        self._reset()

    def _reset(self) -> None:
        self.total, self.losses = None, []
        self.tokens, self.clock = torch.zeros((), device=self.device), time.perf_counter()

    def batch_loss(self, rows: PackedRows, generator: torch.Generator, forward) -> torch.Tensor:
        config = self.config
        starts = sample_window_starts(rows, config.windows_per_row, generator)
        self.pending = run_windows(self.model, rows, starts, self.sampling, beta=config.beta, generator=generator,
                                   out_of_set=config.out_of_set, teacher_targets=config.objective != "cross_entropy",
                                   chain=config.on_chain, forward=forward, teacher=self.teacher)  # fmt: skip
        return window_loss(self.pending, config.objective, self.sampling, config.position_decay, config.on_chain)

    def after_batch(self, rows: PackedRows, loss: torch.Tensor) -> None:
        batch, self.pending = self.pending, None
        self.losses.append(loss.detach().float())
        self.tokens += (rows.document >= 0).sum()
        metrics = batch_metrics(batch, self.config.mode, self.sampling)
        self.total = accumulate(self.total, {**metrics, "out_of_set": batch.out_of_set.float()})

    def after_step(self, done: int, final: bool) -> None:
        config = self.config
        if done % config.log_interval == 0 or final:
            record = self._train_record(done)
            if self.log:
                self.log.write(record)
            self.bar.set_postfix(loss=f"{record['loss']:.3f}", prefix=f"{record['correct_prefix']:.2f}")
            self._reset()
        self.bar.update(1)
        if final or (config.eval_interval and done % config.eval_interval == 0):
            self.evaluation = evaluate(self.model, self.eval_rows, self.sampling, **self.evaluate_args)
            if self.log:
                self.log.write({"step": done, "split": "eval", **self.evaluation})
            self.clock = time.perf_counter()

    def _train_record(self, done: int) -> dict:
        """The training metrics since the last record, summed over the processes (a collective)."""
        sums = reduce_sums(self.accelerator, {**self.total, "loss": torch.stack(self.losses).sum(),
                                              "batches": torch.tensor(float(len(self.losses)), device=self.device),
                                              "tokens": self.tokens.float()})  # fmt: skip
        summary = summarize(sums)
        return {
            "step": done,
            "split": "train",
            "loss": float(sums["loss"]) / float(sums["batches"]),
            "correct_prefix": summary["correct_prefix"],
            "accuracy": summary["accuracy"],
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": float(sums["tokens"]) / (time.perf_counter() - self.clock),
            "out_of_set": int(sums["out_of_set"]),
            "rows_seen": done * self.per_step,
        }


# ------------------------------------------------------------------------------------------------------- setup
def _check_processes(config: DistillConfig, drafter_model, world: int) -> None:
    if config.fsdp and drafter_model is not None:
        raise ValueError("fsdp shards the teacher's own network: it does not support a separate drafter_model")
    if config.fsdp and world == 1:
        raise ValueError(
            "fsdp shards the model across processes and needs more than one: run under `accelerate launch "
            "--num_processes N` or `torchrun --nproc_per_node N`, or drop fsdp"
        )


def _output(config: DistillConfig, main: bool) -> tuple[Path, Path]:
    """The adapter directory and the run directory, checked writable (by the main process)."""
    if not config.out:
        raise ValueError("no output directory: set `out` in the config")
    out, run_dir = Path(config.out), config.run_path()
    if main:
        check_writable(out.parent, "adapter")
        check_writable(run_dir, "run directory")
        remove_stale(run_dir)
    return out, run_dir


def _load_data(config: DistillConfig) -> Dataset:
    if not config.data:
        raise ValueError("no data: set `data` in the config (a directory written by `ptp pregenerate`)")
    return load_dataset(config.data)


def resolve_sampling(config: DistillConfig, dataset: Dataset) -> SamplingConfig:
    """S for the bins: the data's, or the config's (which must equal the data's unless foreign data are allowed),
    with the config's order of the bins."""
    asked, recorded = config.sampling_config(), dataset.sampling
    if asked is None and recorded is None:
        raise ValueError(f"{dataset.path} is raw text without a sampling configuration; set `sampling` in the config")
    if asked is not None and not config.allow_foreign_data:
        dataset.check_sampling(asked)
    return replace(asked or recorded, order=config.bin_order)


def _load_models(config: DistillConfig, dataset: Dataset, accelerator, bf16: bool, base_model, drafter_model,
                 tokenizer) -> _Models:  # fmt: skip
    """The teacher's base (checked against the data) and, for a separate drafter, the drafter's causal LM."""
    device = accelerator.device
    name = config.model
    if base_model is None and not name:
        from ptp.default_model import teacher_dir

        name = str(teacher_dir())
    if tokenizer is None and base_model is None:
        tokenizer = load_tokenizer(name)  # only to check it against the data's
    place = torch.device("cpu") if config.fsdp else device
    separate = drafter_model is not None or bool(config.drafter_model)
    precise = bf16 and config.float32_bins  # the bins from a float32 teacher
    source = name if base_model is None else base_model
    if precise and not separate:  # the float32 copy first: an object base turns 16-bit in place below
        teacher = load_causal_lm(source if base_model is None else copy.deepcopy(base_model), device, False)
    base = load_causal_lm(source, place, bf16 and not (precise and separate))
    if not config.allow_foreign_data:
        dataset.check_model(base)
        dataset.check_tokenizer(tokenizer)
    if not separate:
        if not precise:
            return _Models(base)
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        return _Models(base, teacher.eval())
    teacher = base.eval()
    # A resumed drafter whose own weights train continues from the checkpoint's weights, not the initial ones.
    saved = list_checkpoints(config.run_path())[-1:] if config.resume and config.train_drafter_base else []
    if saved:
        drafter_model = None
    name = str(saved[0] / ADAPTER / BASE_DIRECTORY) if saved else config.drafter_model or ""
    drafter_base = load_causal_lm(name if drafter_model is None else drafter_model, device, bf16)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return _Models(base, teacher, drafter_base)


def _pack(config: DistillConfig, dataset: Dataset, row_length: int) -> tuple[PackedRows, PackedRows, dict]:
    """Training rows, evaluation rows (of the held-out prompts, else of the training rows) and the packing stats."""
    train_docs, eval_docs = split_by_prompt(dataset.documents, config.eval_fraction, config.seed)
    train_rows, packing = pack_documents(train_docs, row_length)
    if len(train_rows) == 0 or not bool(train_rows.targets.any()):
        raise ValueError(f"{dataset.path}: no document has a completion token within row_length={row_length}")
    eval_rows = pack_documents(eval_docs, row_length)[0] if eval_docs else train_rows
    if len(eval_rows) == 0:
        eval_rows = train_rows
    eval_rows = first_rows(eval_rows, config.eval_rows, "use more data or another eval_fraction")
    return train_rows, eval_rows, packing


def _drafter(config: DistillConfig, sampling: SamplingConfig, resume_state: dict | None, models: _Models,
             device: torch.device, bf16: bool) -> tuple[PTPModel, int]:  # fmt: skip
    """The drafter to train and the step it starts at: the checkpoint's when resuming, a saved one to continue
    (``init_adapter``), or a fresh one (which may load a saved drafter of lower rank or without its first slots'
    token)."""
    drafter_base = models.drafter_base if models.separate else models.base
    saved = resume_state["path"] / ADAPTER if resume_state is not None else config.init_adapter
    adapts = saved and resume_state is None and check_initial_drafter(Path(saved), config, sampling)
    start_step = 0
    if saved and not adapts:
        if config.train_drafter_base:  # the drafter's own weights come from the saved drafter too
            dtype = torch.bfloat16 if bf16 else torch.float32
            model = PTPModel.from_pretrained(None, saved, dtype=dtype, device=device)
        else:
            model = PTPModel.from_pretrained(drafter_base, saved)
        start_step = resume_state["step"] if resume_state is not None else 0
    else:
        drafter = PTPConfig(sampling=sampling, train_base=config.train_drafter_base, **drafter_settings(config))
        model = PTPModel(drafter_base, drafter)
        if adapts:  # a lower-rank drafter grows into this run's rank, or starts receiving its first slots' token
            model.load_adapter(saved)
    if models.separate:
        check_drafter(models.teacher, model)
    return model, start_step


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
    wanted = drafter_settings(config) | {"train_base": config.train_drafter_base}
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


def _optimizer(config: DistillConfig, model: PTPModel, resume_state: dict | None):
    """AdamW over the trainable parameters with warm-up and cosine decay, restored from the checkpoint if resuming;
    u's parameters form a group of their own at ``u_learning_rate`` when it is set."""
    parameters = model.trainable_parameters()
    if config.u_learning_rate is not None:
        own = {id(p) for p in model.auxiliary_embedding.parameters()}
        parameters = [
            {"params": [p for p in parameters if id(p) not in own]},
            {"params": [p for p in parameters if id(p) in own], "lr": config.u_learning_rate},
        ]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, config.max_steps, config.min_lr_ratio)
    )
    if resume_state is not None:
        if config.fsdp:
            load_full_optimizer_state(model, optimizer, resume_state["optimizer"])
        else:
            optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
    return optimizer, scheduler


def _trainer_state(config: DistillConfig, model: PTPModel, optimizer, scheduler) -> tuple[dict, dict | None]:
    """The trainer state of a checkpoint, and under fsdp the full trainable weights: gathering them is a collective
    there, so every process calls it (only the main process writes)."""
    if not config.fsdp:
        optimizer_state, weights = optimizer.state_dict(), None
    else:
        optimizer_state, weights = full_optimizer_state(model, optimizer), full_trainable_state(model)
    trainer = {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "config": config.to_dict()}
    return trainer, weights
