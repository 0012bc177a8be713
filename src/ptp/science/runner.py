"""``run_experiment``: every variant of an experiment at every seed, then the tables and the plot.

The runs go variant by variant, seed by seed, each resumable (:mod:`ptp.science.runs`,
:mod:`ptp.science.teacher_free`). The report covers every run of the experiment found in ``out``, also those made
by other invocations (``variants`` lets several processes share one output directory, or one GPU run take some
variants and the next the rest); ``results.json`` says whether every variant and seed is there (``complete``).
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

from ptp.science import report, runs, teacher_free
from ptp.science.config import ExperimentConfig, Variant
from ptp.science.experiments import experiment, select

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def run_experiment(name: str, config: ExperimentConfig) -> dict:
    """Run the experiment ``name`` (one of :data:`ptp.science.EXPERIMENTS`) and write ``results.json``,
    ``results.md`` and ``<name>.png`` to ``config.out``; returns what ``results.json`` holds.

    ``failures`` in the result lists every run whose engine output differed from one-token decoding; ``complete``
    is False when ``config.max_time`` stopped the runs before every variant and seed was done (rerun to continue).
    """
    spec = experiment(name)
    chosen = select(spec, config)
    if spec.kind == "distill" and config.data is None:
        raise ValueError(f"experiment {name} distils drafters: pass data (a `ptp pregenerate` directory)")
    if spec.kind == "distill" and spec.bench:
        if config.prompts is None:
            raise ValueError(f"experiment {name} runs the engine on Spec-Bench: pass prompts (question.jsonl)")
        if not Path(config.prompts).is_file():
            raise FileNotFoundError(f"prompt file {config.prompts} does not exist")
    teacher = config.teacher()
    deadline = time.monotonic() + config.max_time if config.max_time is not None else None
    run = partial(runs.run_variant, bench=spec.bench) if spec.kind == "distill" else teacher_free.run_variant
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    for variant in chosen:
        for seed in config.seeds:
            run(config, variant, seed, teacher, deadline)
    return write_results(name, config, teacher)


def _finished(config: ExperimentConfig, variant: Variant) -> list[dict]:
    found = []
    for seed in config.seeds:
        path = runs.run_directory(config, variant, seed) / runs.RESULT
        if path.is_file():
            found.append(json.loads(path.read_text()))
    return found


def write_results(name: str, config: ExperimentConfig, teacher: str) -> dict:
    """Gather the finished runs of every variant in ``config.out`` and write the tables and the plot."""
    spec = experiment(name)
    variants = spec.variants(config)
    out = Path(config.out)
    table, every_run = {}, []
    for variant in variants:
        finished = _finished(config, variant)
        every_run += finished
        table[variant.name] = {
            "settings": variant.settings,
            "temperature": variant.temperature,
            "drafter_size": variant.drafter_size,
            "group": variant.group,
            "seeds": [r["seed"] for r in finished],
            **report.aggregate(spec.kind, finished),
            "runs": finished,
        }
    results = {
        "experiment": name,
        "claim": spec.claim,
        "kind": spec.kind,
        "bench": spec.kind == "distill" and spec.bench,
        "min_seeds": spec.min_seeds,
        "teacher": teacher,
        "config": config.to_dict(),
        "complete": all(len(v["seeds"]) == len(config.seeds) for v in table.values()),
        "failures": report.failures(every_run),
        "variants": table,
        "files": {"json": str(out / RESULTS_JSON), "markdown": str(out / RESULTS_MD), "plot": str(out / f"{name}.png")},
    }
    report.plot(results, variants, spec.x_label, out / f"{name}.png")
    (out / RESULTS_MD).write_text(report.markdown(results), encoding="utf-8")
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results
