"""Held-out evaluation of a drafter on fixed windows: during distillation (:func:`evaluate`), and of a saved adapter on
a data directory without training (:func:`evaluate_adapter`, ``ptp evaluate``).

:func:`evaluate_adapter` loads the adapter as :func:`ptp.train.distill` would have it at the end of a run, rebuilds
the evaluation rows by distill's rules (the same prompt split for the same ``eval_fraction`` and ``seed``, the same
packing) and runs the same :func:`evaluate`: with distill's settings it reproduces the evaluation distill wrote.
``write_histogram`` stores the resulting histogram in the adapter's ``ptp_config.json``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from ptp.data.dataset import Dataset, atomic_write_bytes, load_dataset
from ptp.data.packing import PackedRows, pack_documents, split_by_prompt
from ptp.data.prompts import load_tokenizer
from ptp.model.config import CONFIG_NAME, PTPConfig
from ptp.model.ptp import BASE_DIRECTORY, PTPModel, check_drafter
from ptp.sampling import SamplingConfig
from ptp.train.checkpoint import default_run_dir
from ptp.train.config import DistillConfig, objective, on_chain
from ptp.train.losses import accumulate, batch_metrics, summarize, window_loss, window_metrics
from ptp.train.runtime import (
    autocast_step,
    check_device,
    load_causal_lm,
    reduce_sums,
    resolve_row_length,
    set_lora_dropout,
    use_bf16,
)
from ptp.train.sharding import is_sharded
from ptp.train.teacher import run_windows
from ptp.train.windows import evaluation_starts

SPLITS = ("eval", "all")


@torch.no_grad()
def evaluate(
    model: PTPModel,
    rows: PackedRows,
    sampling: SamplingConfig,
    *,
    windows_per_row: int = DistillConfig.windows_per_row,
    batch_size: int = DistillConfig.batch_size,
    objective: str = "cross_entropy",
    decay: float = DistillConfig.position_decay,
    chain: bool = False,
    out_of_set: str = DistillConfig.out_of_set,
    seed: int = DistillConfig.seed,
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
    set_lora_dropout(model, False)
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
            batch = run_windows(model, chunk, starts, sampling, generator=generator, out_of_set=out_of_set,
                                teacher_targets=objective != "cross_entropy", chain=chain, teacher=teacher)  # fmt: skip
            loss = window_loss(batch, objective, sampling, decay, chain).float()
        if position >= count:  # a repeated batch, run only to take part in the sharded model's collectives
            continue
        loss_sum += loss
        batches += 1
        total = accumulate(total, batch_metrics(batch, model.config.mode, sampling))
    total = reduce_sums(accelerator, {**(total or empty), "loss": loss_sum, "batches": batches})
    set_lora_dropout(model, training)
    summary = summarize(total)
    summary["loss"] = float(total["loss"]) / max(float(total["batches"]), 1.0)
    return summary


def first_rows(rows: PackedRows, count: int, hint: str) -> PackedRows:
    """The first ``count`` rows, which must hold a completion token (``hint``: what to do otherwise)."""
    rows = rows.select(range(min(count, len(rows))))
    if len(rows) == 0 or not bool(rows.targets.any()):
        raise ValueError(f"the evaluation rows hold no completion token; {hint}")
    return rows


def check_windows(evaluation: dict, hint: str) -> dict:
    """``evaluation``, unless it saw no window."""
    if evaluation["windows"] == 0:
        raise ValueError(f"the evaluation rows hold no window; {hint}")
    return evaluation


def evaluate_adapter(
    model,
    adapter: str | os.PathLike,
    data: str | os.PathLike | Dataset,
    *,
    drafter_model=None,
    split: str = "eval",
    rows: int = 256,
    windows_per_row: int = DistillConfig.windows_per_row,
    eval_fraction: float = DistillConfig.eval_fraction,
    row_length: int | None = DistillConfig.row_length,
    batch_size: int = DistillConfig.batch_size,
    loss: str | None = DistillConfig.loss,
    position_decay: float = DistillConfig.position_decay,
    chain_loss: bool | None = DistillConfig.chain_loss,
    seed: int = DistillConfig.seed,
    device: str | None = None,
    precision: str = "auto",
    tokenizer=None,
    write_histogram: bool = False,
    allow_foreign_data: bool = DistillConfig.allow_foreign_data,
) -> dict:
    """Evaluate the drafter in ``adapter`` on held-out windows of ``data``: the mean correct prefix, its histogram
    over 0..N, accuracy per position, loss and the number of windows (see :func:`evaluate`).

    Args:
        model: the base model (teacher): an object, or a directory or name ``AutoModelForCausalLM`` loads. None only
            for an adapter that holds its own base (``base/``) and is its own teacher.
        adapter: the adapter directory.
        data: a data directory from ``ptp pregenerate`` (or a loaded :class:`Dataset`).
        drafter_model: a separate drafter's base (object, directory or name); not needed when the adapter holds it in
            ``base/``, then ``model`` is the teacher.
        split: ``eval``: the prompts distill holds out for ``eval_fraction`` and ``seed``; ``all``: every document.
        rows: evaluate the first this many packed rows of the split (distill's ``eval_rows``).
        windows_per_row, eval_fraction, row_length, batch_size, loss, position_decay, chain_loss, seed: as in
            :class:`ptp.train.DistillConfig`, with its defaults; with the run's values the numbers equal distill's
            final evaluation.
            ``loss`` None: ``forward_kl`` for C-PTP, else ``cross_entropy``.
        device: ``cpu``, ``cuda`` or None (CUDA if available).
        precision: ``float32``, ``bf16`` or ``auto`` (bf16 on CUDA).
        tokenizer: checked against the data's (default: loaded from ``model`` when it is a path).
        write_histogram: store the histogram in ``adapter``'s ptp_config.json (atomically).
        allow_foreign_data: as in :class:`ptp.train.DistillConfig`: evaluate on data sampled under another
            configuration than the adapter's (its tokens are then scored in the adapter's bins, as distill trained
            them with the same flag).

    Returns:
        The evaluation plus ``adapter``, ``data``, ``split`` and ``rows`` (rows evaluated).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
    check_device(device)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bf16 = use_bf16(precision, device)
    adapter = Path(adapter)
    config = PTPConfig.load(adapter)  # FileNotFoundError for a directory that is not an adapter
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    if not allow_foreign_data:
        dataset.check_sampling(
            config.sampling,
            f"the adapter {adapter} was trained for",
            "Its drafts would be scored against the wrong bins: evaluate on data pregenerated under the adapter's "
            "sampling configuration, or pass allow_foreign_data as distill did.",
        )

    if model is None and not config.train_base:
        raise ValueError(f"{adapter} is an adapter without a base model of its own: pass the base model")
    if tokenizer is None and isinstance(model, (str, Path)):
        tokenizer = load_tokenizer(model)  # only to check it against the data's
    drafter, teacher = _load_drafter(model, adapter, config, drafter_model, device, bf16)
    dataset.check_model(drafter if teacher is None else teacher)
    dataset.check_tokenizer(tokenizer)
    row_length = resolve_row_length(row_length, teacher, drafter)
    chosen = _split_rows(dataset, split, eval_fraction, seed, row_length, rows)
    evaluation = evaluate(
        drafter,
        chosen,
        config.sampling,
        windows_per_row=windows_per_row,
        batch_size=batch_size,
        objective=objective(config.mode, loss),
        chain=on_chain(config.mode, chain_loss),
        decay=position_decay,
        seed=seed,
        bf16=bf16,
        teacher=teacher,
    )
    check_windows(evaluation, "use more data, more rows or a longer row_length")
    if write_histogram:
        store_histogram(adapter, evaluation["histogram"])
    return {**evaluation, "adapter": str(adapter), "data": str(dataset.path), "split": split, "rows": len(chosen)}


#: The settings of a distillation run that :func:`evaluate_adapter` takes, by its argument name (and the run's
#: DistillConfig field where it differs).
RUN_SETTINGS = {"rows": "eval_rows", "windows_per_row": None, "eval_fraction": None, "row_length": None,
                "batch_size": None, "loss": None, "seed": None, "position_decay": None, "chain_loss": None}  # fmt: skip


def run_settings(adapter: str | os.PathLike, run_config: str | os.PathLike | None = None) -> tuple[Path | None, dict]:
    """The evaluation settings of the distillation run that wrote ``adapter``, so that :func:`evaluate_adapter` with
    them reproduces the run's final evaluation.

    Args:
        run_config: the run's ``config.json`` (default: ``<adapter>.run/config.json``, when it exists; a given path
            must exist).
    Returns:
        ``(path, settings)``: the file read (None if none) and the :func:`evaluate_adapter` arguments it sets.
    """
    path = Path(run_config) if run_config is not None else default_run_dir(str(adapter), None) / "config.json"
    if not path.is_file():
        if run_config is not None:
            raise FileNotFoundError(f"no run configuration at {path}")
        return None, {}
    run = json.loads(path.read_text())["config"]  # distill's resolved DistillConfig
    settings = {k: run[field or k] for k, field in RUN_SETTINGS.items() if run.get(field or k) is not None}
    return path, settings


def _load_drafter(model, adapter: Path, config: PTPConfig, drafter_model, device: torch.device, bf16: bool):
    """The adapter's drafter and its separate teacher (None when the drafter's own base is the teacher)."""
    base = None if model is None else load_causal_lm(model, device, bf16)
    separate = config.train_base or drafter_model is not None
    dtype = torch.bfloat16 if bf16 else torch.float32
    try:
        if config.train_base:
            if drafter_model is not None:
                raise ValueError(f"{adapter} holds its own drafter base ({BASE_DIRECTORY}/): pass no drafter model")
            drafter = PTPModel.from_pretrained(None, adapter, dtype=dtype, device=device)
        else:
            drafter_base = base if drafter_model is None else load_causal_lm(drafter_model, device, bf16)
            drafter = PTPModel.from_pretrained(drafter_base, adapter)
    except ValueError as error:
        hint = "" if separate else " (a separate drafter's adapter needs its base: pass the drafter model)"
        raise ValueError(f"{error}{hint}") from error
    teacher = base if separate else None
    if teacher is not None:
        check_drafter(teacher, drafter)
    return drafter, teacher


def _split_rows(dataset: Dataset, split: str, eval_fraction: float, seed: int, row_length: int, rows: int):
    """The first ``rows`` packed rows of the split: distill's held-out prompts (``eval``) or every document."""
    _, eval_docs = split_by_prompt(dataset.documents, eval_fraction, seed)
    documents = eval_docs if split == "eval" else dataset.documents
    if not documents:
        prompts = len({d.prompt_index for d in dataset.documents})
        raise ValueError(
            f"the eval split of {dataset.path} is empty: eval_fraction={eval_fraction} holds out no prompt of "
            f"{prompts}; use split 'all' or a larger eval_fraction"
        )
    return first_rows(
        pack_documents(documents, row_length)[0],
        rows,
        f"no document of the {split} split has a completion token within row_length={row_length}",
    )


def store_histogram(adapter: str | os.PathLike, histogram: list[float]) -> None:
    """Replace the acceptance histogram in ``adapter``'s ptp_config.json (atomically; the rest stays)."""
    config = PTPConfig.load(adapter)
    config.acceptance_histogram = list(histogram)
    config.__post_init__()  # checks the histogram's length against the window length
    atomic_write_bytes(Path(adapter) / CONFIG_NAME, config.to_json().encode())
