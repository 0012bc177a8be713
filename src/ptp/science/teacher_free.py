"""One run of the teacher-free experiment (docs/method.md, Inverse training): ``ptp train --objective ar`` or
``--objective ptp`` from the same starting model, on the same text, for the same steps and seed.

The ``ar`` run of a seed comes first: the ``ptp`` run of that seed compares itself against it (``compare_to``):
its held-out perplexity by window position, its next-token perplexity next to the ar model's, and the mean number
of leading tokens where its parallel samples equal the ar model's plain sampling with the same u's. A run's
directory (``<out>/<variant>/seed-<seed>/``) holds ``model/`` (with ``training_summary.json``), its checkpoints in
``model.run/`` and ``result.json``; a rerun skips finished runs and resumes a stopped one from its checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from ptp.science.config import ExperimentConfig, Variant
from ptp.train.checkpoint import RESUMABLE_CHANGES, list_checkpoints
from ptp.train.pretrain import PretrainConfig, pretrain

RESULT = "result.json"
SUMMARY = "training_summary.json"


def model_directory(config: ExperimentConfig, objective: str, seed: int) -> Path:
    return Path(config.out) / objective / f"seed-{seed}" / "model"


def pretrain_config(config: ExperimentConfig, variant: Variant, seed: int, teacher: str) -> PretrainConfig:
    """The variant's training at ``seed``: from the teacher's weights and tokenizer, on the experiment's text."""
    settings = {**config.base_settings(config.train_config), **variant.settings}
    settings.update(data=config.text, out=str(model_directory(config, settings["objective"], seed)), run_dir=None,
                    init_from=teacher, tokenizer=None, seed=seed, precision=config.precision, device=config.device,
                    progress=config.progress)  # fmt: skip
    if settings["objective"] == "ptp":
        settings["compare_to"] = str(model_directory(config, "ar", seed))
    if config.steps is not None:
        settings["steps"] = config.steps
    unknown = set(settings) - set(PretrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown training config keys: {sorted(unknown)}")
    return PretrainConfig(**settings)


def run_variant(config: ExperimentConfig, variant: Variant, seed: int, teacher: str, deadline: float | None):
    """The run's result (``result.json``), made or read back; None when ``deadline`` came first."""
    run = pretrain_config(config, variant, seed, teacher)
    out = Path(run.out)
    root = out.parent
    record = {k: v for k, v in asdict(run).items() if k not in RESUMABLE_CHANGES}
    if (root / RESULT).is_file():
        result = json.loads((root / RESULT).read_text())
        if result["settings"] != record:
            raise ValueError(f"{root} holds a run with other settings; use another out directory")
        return result
    summary = _summary(out)
    if summary is None or summary["steps"] < run.steps:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        if run.compare_to is not None and not (Path(run.compare_to).parent / RESULT).is_file():
            raise ValueError(f"the ptp run of seed {seed} compares itself with the ar run of that seed: run the ar "
                             "variant first (it is not finished)")  # fmt: skip
        summary = pretrain(replace(run, resume=bool(list_checkpoints(run.run_path())), max_time=left))
        if summary["steps"] < run.steps:
            return None
    evaluation = summary["ptp_evaluation"] or {}
    result = {
        "variant": variant.name,
        "seed": seed,
        "settings": record,
        "steps": summary["steps"],
        "held_out_perplexity": summary["held_out_perplexity"],
        "perplexity_by_position": evaluation.get("perplexity_by_position"),
        "slot_perplexity": evaluation.get("perplexity"),
        "next_token_perplexity": evaluation.get("next_token_perplexity", summary["held_out_perplexity"]),
        "ar_perplexity": evaluation.get("teacher_perplexity"),
        "agreement_with_ar": evaluation.get("teacher_agreement"),
        "summary": str(out / SUMMARY),
    }
    (root / RESULT).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _summary(out: Path) -> dict | None:
    path = out / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None
