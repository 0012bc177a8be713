"""One run of a distillation experiment: a variant at a seed, distilled, evaluated on held-out windows and run by
the engine on Spec-Bench, each phase resumable.

A run's directory (``<out>/<variant>/seed-<seed>/``) holds ``adapter/`` and its run directory ``adapter.run/``
(checkpoints, the metrics log), ``distilled.json`` once the distillation reached its last step, ``evaluation.json``
(the window evaluation), ``bench/`` (the ``ptp bench`` output, for the experiments that decode) and finally
``result.json``, which also carries the run's learning curve (its held-out evaluations during training). A rerun
skips the phases whose file exists, continues a stopped distillation from its newest checkpoint
(``DistillConfig.resume``), and refuses a directory whose runs were made with other settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from ptp.bench import BenchConfig, run_bench
from ptp.data.dataset import read_metadata
from ptp.sampling import SamplingConfig
from ptp.science.config import ExperimentConfig, Variant
from ptp.science.drafters import drafter_parameters, scratch_drafter
from ptp.train import DistillConfig, distill, evaluate_adapter
from ptp.train.checkpoint import RESUMABLE_CHANGES, list_checkpoints
from ptp.train.distillation import METRICS_LOG

RESULT = "result.json"
DISTILLED = "distilled.json"
EVALUATION = "evaluation.json"


def run_directory(config: ExperimentConfig, variant: Variant, seed: int) -> Path:
    return Path(config.out) / variant.name / f"seed-{seed}"


def distill_config(config: ExperimentConfig, variant: Variant, seed: int, teacher: str) -> DistillConfig:
    """The variant's distillation at ``seed``: the experiment's base settings, then the variant's, then the run's
    own paths, seed, steps, device and precision."""
    root = run_directory(config, variant, seed)
    settings = {**config.base_settings(config.distill_config), **variant.settings}
    if variant.temperature is not None:
        recorded = data_sampling(config.data)
        sampling = at_temperature(recorded, variant.temperature)
        settings["sampling"] = {k: v for k, v in sampling.to_dict().items() if k != "order"}
        settings["allow_foreign_data"] = not sampling.same_distribution(recorded)
    if variant.drafter_size is not None:
        drafters = Path(config.out) / "drafters"
        settings["drafter_model"] = str(scratch_drafter(teacher, variant.drafter_size, drafters / variant.drafter_size))
        settings["train_drafter_base"] = True
    settings.update(model=teacher, data=config.data, out=str(root / "adapter"), run_dir=None, seed=seed,
                    precision=config.precision, device=config.device, progress=config.progress)  # fmt: skip
    if config.steps is not None:
        settings["max_steps"] = config.steps
    return DistillConfig.from_dict(settings)


def data_sampling(data: str | None) -> SamplingConfig:
    """The sampling configuration a data directory was pregenerated with."""
    if data is None:
        raise ValueError("the experiment needs data: a `ptp pregenerate` directory")
    sampling = read_metadata(Path(data)).get("sampling")
    if sampling is None:
        raise ValueError(f"{data} is raw text (no sampling configuration): temperature variants need pregenerated data")
    return SamplingConfig.from_dict(sampling)


def at_temperature(sampling: SamplingConfig, temperature: float) -> SamplingConfig:
    """``sampling`` with another temperature, top-k and top-p kept (0: greedy decoding)."""
    if temperature == 0:
        return SamplingConfig.greedy()
    return replace(sampling, do_sample=True, temperature=float(temperature), order="vocabulary")


def settings_record(distill: DistillConfig) -> dict:
    """What decides a run's numbers: its config without the fields that may change when it resumes."""
    return {k: v for k, v in distill.to_dict().items() if k not in RESUMABLE_CHANGES}


def run_variant(
    config: ExperimentConfig, variant: Variant, seed: int, teacher: str, deadline: float | None, bench: bool = True
):
    """The run's result (``result.json``), made or read back; None when ``deadline`` (a ``time.monotonic()``) came
    before the distillation's last step (its checkpoint is kept for the next invocation). ``bench``: also decode the
    held-out Spec-Bench questions (else the result's ``bench`` is None)."""
    root = run_directory(config, variant, seed)
    run = distill_config(config, variant, seed, teacher)
    record = settings_record(run)
    _check_settings(root, record)
    if (root / RESULT).is_file():
        return json.loads((root / RESULT).read_text())
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(record, indent=1) + "\n")
    if not (root / DISTILLED).is_file():
        steps = _distill(run, deadline)
        if steps < run.max_steps:
            return None
        (root / DISTILLED).write_text(json.dumps({"steps": steps}) + "\n")
    adapter = Path(run.out)
    evaluation = _cached(root / EVALUATION, lambda: _evaluate(config, run, teacher))
    result = {
        "variant": variant.name,
        "seed": seed,
        "settings": record,
        "evaluation": evaluation,
        "curve": learning_curve(run),
        "bench": _bench(config, variant, run, teacher, root / "bench") if bench else None,
        "parameters": drafter_parameters(teacher, adapter),
    }
    (root / RESULT).write_text(json.dumps(result, indent=1) + "\n")
    return result


def learning_curve(run: DistillConfig) -> list[dict]:
    """The held-out evaluations the distillation logged, in order: step, tokens per call, accuracy per slot."""
    lines = (run.run_path() / METRICS_LOG).read_text().splitlines()
    records = (json.loads(line) for line in lines if line.strip())
    return [
        {"step": r["step"], "tokens_per_call": r["tokens_per_call"], "accuracy": r["accuracy"]}
        for r in records
        if r.get("split") == "eval"
    ]


def _check_settings(root: Path, record: dict) -> None:
    path = root / "settings.json"
    if not path.is_file():
        return
    earlier = json.loads(path.read_text())
    differ = [f"{k}: {earlier.get(k)!r} then, {v!r} now" for k, v in record.items() if earlier.get(k) != v]
    if differ:
        raise ValueError(f"{root} holds a run with other settings ({'; '.join(differ)}); use another out directory")


def _cached(path: Path, compute) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.write_text(json.dumps(value, indent=1) + "\n")
    return value


def _distill(run: DistillConfig, deadline: float | None) -> int:
    """Distil (resuming from the newest checkpoint if there is one); the steps done in total."""
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        return 0  # not started this time; the next invocation continues where the last one stopped
    resume = bool(list_checkpoints(run.run_path()))
    return distill(replace(run, resume=resume, max_time=left)).steps


def _evaluate(config: ExperimentConfig, run: DistillConfig, teacher: str) -> dict:
    """Held-out windows of the run's own split (uniform u's): correct prefix, per-slot accuracy, histogram."""
    return evaluate_adapter(
        teacher, run.out, run.data, rows=config.eval_rows, windows_per_row=run.windows_per_row,
        eval_fraction=run.eval_fraction, row_length=run.row_length, batch_size=run.batch_size, loss=run.loss,
        position_decay=run.position_decay, chain_loss=run.chain_loss, seed=run.seed, device=run.device,
        precision=run.precision, allow_foreign_data=run.allow_foreign_data,
    )  # fmt: skip


def _bench(config: ExperimentConfig, variant: Variant, run: DistillConfig, teacher: str, out: Path) -> dict:
    """The engine on the held-out Spec-Bench questions next to one-token decoding (``ar``), with the sampling
    configuration the drafter was distilled for; tokens per call overall and per category, the cost of a call, and
    whether every output equals ``ar``'s (it must)."""
    if variant.drafter_size is not None:
        method, adapter = "drafter", {"drafter_adapter": run.out}
    elif run.mode == "independent":
        method, adapter = "independent", {"independent_adapter": run.out}
    else:
        method, adapter = "ptp", {"adapter": run.out}
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    bench = BenchConfig(
        prompts=config.prompts, out=str(out), model=teacher, methods=("ar", method), **adapter,
        max_questions=config.questions, max_new_tokens=config.max_new_tokens, repeats=config.repeats,
        warmup=config.warmup, device=device, dtype=config.bench_dtype, progress=config.progress,
        resume=(out / "settings.json").is_file(),
    )  # fmt: skip
    summary = run_bench(bench)
    ours, ar = summary["methods"][method], summary["methods"]["ar"]
    ms, ar_ms = ours["all"]["ms_per_call"], ar["all"]["ms_per_call"]
    return {
        "method": method,
        "tokens_per_call": ours["all"]["tau"],
        "categories": {name: stats["tau"] for name, stats in ours["categories"].items()},
        "ms_per_call": ms,
        "ar_ms_per_call": ar_ms,
        "call_cost": ms / ar_ms if ms and ar_ms else None,
        "speedup_over_ar": ours["all"]["speedup_over_ar"],
        "matches_ar": ours["all"]["matches_ar"],
        "ar_mismatches": ours["ar_mismatches"],
        "sampling": summary["config"]["sampling"],
        "summary": str(out / "summary.json"),
    }
