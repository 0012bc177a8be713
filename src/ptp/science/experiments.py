"""The registry of experiments: one per claim of the paper (SCIENCE.md), each a list of variants that differ from
each other in one setting and share everything else (teacher, data, steps, seeds, evaluation).

=============== ============================================================================================
name            what varies
=============== ============================================================================================
dependence      O-PTP, independent, C-PTP and mode chain, each distilled for temperature 0, 0.7, 1.0, 1.5
window          window length N = 4, 8, 16, 32
embedding       every u embedding of ``ptp.model.embeddings`` in both bin orders, the feature codes also in every layer
beta            Beta(b, b) placement of u inside its bin in training, b = 0.3, 1, 3
size            LoRA rank 8, 32, 128 and separate drafters of two sizes trained from scratch
teacher_free    ``ptp train --objective ptp`` against ``--objective ar`` from the same model on the same text
reads_u         a first slot trained alone: independent, u at the input, u in every layer, each also with a faster u
=============== ============================================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ptp.model.embeddings import EMBEDDING_KINDS, FEATURE_KINDS
from ptp.sampling import ORDERS
from ptp.science.config import ExperimentConfig, Variant
from ptp.train.config import DistillConfig

TEMPERATURES = (0.0, 0.7, 1.0, 1.5)
WINDOW_LENGTHS = (4, 8, 16, 32)
BETAS = (0.3, 1.0, 3.0)
LORA_RANKS = (8, 32, 128)
#: How each mode is named in tables and plots (docs/method.md, Drafters).
MODE_NAMES = {"one_hot": "O-PTP", "independent": "independent", "categorical": "C-PTP", "mode_chain": "mode chain"}


@dataclass(frozen=True)
class Experiment:
    """One claim, measured by its variants."""

    name: str
    claim: str
    """What the paper says, in one sentence (SCIENCE.md has the numbers)."""
    kind: str
    """``distill`` (drafters distilled from the teacher, then evaluated and benchmarked) or ``train`` (models
    trained on text, ``ptp train``)."""
    variants: Callable[[ExperimentConfig], list[Variant]]
    x_label: str = ""
    """The plot's horizontal axis when the variants have a position on it."""
    min_seeds: int = 1
    """Seeds the claim needs for error bars (``results.md`` says so when a run has fewer)."""
    bench: bool = True
    """Whether each run also decodes the held-out Spec-Bench questions with the engine; an experiment about what the
    drafter learns, measured on held-out windows alone, skips it."""


def _dependence(config: ExperimentConfig) -> list[Variant]:
    return [
        Variant(f"{mode}-T{t:g}", {"mode": mode}, temperature=t, group=MODE_NAMES[mode], x=t)
        for t in TEMPERATURES
        for mode in MODE_NAMES
    ]


def _window(config: ExperimentConfig) -> list[Variant]:
    return [Variant(f"N{n}", {"window_length": n}, group="O-PTP", x=n) for n in WINDOW_LENGTHS]


def _embedding(config: ExperimentConfig) -> list[Variant]:
    at_input = [
        Variant(f"{kind}-{order}", {"embedding": kind, "bin_order": order}, group=f"{order} order")
        for order in ORDERS
        for kind in EMBEDDING_KINDS
    ]
    every_layer = [
        Variant(
            f"{kind}-{order}-every-layer",
            {"embedding": kind, "bin_order": order, "u_every_layer": True},
            group=f"{order} order, u in every layer",
        )  # fmt: skip
        for order in ORDERS
        for kind in FEATURE_KINDS
    ]
    return at_input + every_layer


def _beta(config: ExperimentConfig) -> list[Variant]:
    return [Variant(f"beta{b:g}", {"beta": b}, group="O-PTP", x=b) for b in BETAS]


def _size(config: ExperimentConfig) -> list[Variant]:
    base = config.base_settings(config.distill_config)
    # alpha / rank stays the base settings' ratio, so that the ranks differ in capacity, not in step size.
    ratio = base.get("lora_alpha", DistillConfig.lora_alpha) / base.get("lora_rank", DistillConfig.lora_rank)
    lora = [
        Variant(f"lora-r{r}", {"lora_rank": r, "lora_alpha": ratio * r}, group="gated LoRA on the teacher")
        for r in LORA_RANKS
    ]
    separate = [
        Variant(f"drafter-{size}", {}, drafter_size=size, group="separate drafter") for size in config.drafter_sizes
    ]
    return lora + separate


#: How much faster than the base learning rate u's own parameters learn in the reads_u variants marked "fast u".
FAST_U = 4.0


def _reads_u(config: ExperimentConfig) -> list[Variant]:
    """Slot 1 alone (window length 1), which with its group's token as input starts as the teacher at that
    position: drafting without u it can at best take the teacher's mode, so only a drafter that reads u passes the
    ``independent`` variant."""
    base = config.base_settings(config.distill_config)
    fast = FAST_U * base.get("learning_rate", DistillConfig.learning_rate)
    first = {"window_length": 1, "first_slot_token": True}
    where = {"input": {"mode": "one_hot"}, "every-layer": {"mode": "one_hot", "u_every_layer": True}}
    return [
        Variant("independent", {**first, "mode": "independent"}, group="ignores u"),
        *(Variant(name, {**first, **settings}, group=f"u at {name}") for name, settings in where.items()),
        *(
            Variant(f"{name}-fast-u", {**first, **settings, "u_learning_rate": fast}, group=f"u at {name}")
            for name, settings in where.items()
        ),
    ]


def _teacher_free(config: ExperimentConfig) -> list[Variant]:
    return [Variant("ar", {"objective": "ar"}, group="ar"), Variant("ptp", {"objective": "ptp"}, group="ptp")]


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            "dependence",
            "drafts conditioned on the u's (O-PTP, C-PTP) accept more tokens per call than independent "
            "multi-token prediction, the more so the more random the sampling",
            "distill",
            _dependence,
            "temperature",
            min_seeds=3,
        ),
        Experiment(
            "window",
            "longer windows draft longer correct prefixes (toy data: N = 16 gives 13.9, N = 100 gives 45)",
            "distill",
            _window,
            "window length N",
        ),
        Experiment(
            "embedding",
            "every u embedding learns; structured codes (the binary expansion) train faster",
            "distill",
            _embedding,
        ),
        Experiment(
            "beta",
            "the Beta(b, b) placement of u inside its bin in training hardly matters",
            "distill",
            _beta,
            "b",
        ),
        Experiment(
            "size",
            "larger drafters accept more tokens per call; separate small drafters trained from scratch scale "
            "with their size",
            "distill",
            _size,
        ),
        Experiment(
            "reads_u",
            "a drafter reads u: a first slot that starts as the teacher and is trained alone rises above the "
            "teacher's own mode rate, which no drafter that ignores u can pass",
            "distill",
            _reads_u,
            bench=False,
        ),
        Experiment(
            "teacher_free",
            "inverse autoregressive training reaches the perplexity of ar training on the same data (19.88 vs "
            "19.81) and its parallel samples agree with ar sampling over many leading tokens",
            "train",
            _teacher_free,
            "window position",
        ),
    )
}


def experiment(name: str) -> Experiment:
    """The registered experiment ``name``; ValueError naming the choices otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def select(experiment: Experiment, config: ExperimentConfig) -> list[Variant]:
    """The variants of ``experiment`` to run: all, or those ``config.variants`` names (ValueError for others)."""
    variants = experiment.variants(config)
    if config.variants is None:
        return variants
    names = [v.name for v in variants]
    unknown = [n for n in config.variants if n not in names]
    if unknown:
        raise ValueError(f"experiment {experiment.name} has no variant {unknown}; its variants: {names}")
    return [v for v in variants if v.name in config.variants]
