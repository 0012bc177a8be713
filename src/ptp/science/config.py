"""The typed inputs of an experiment: :class:`ExperimentConfig` (what every experiment shares: teacher, data,
Spec-Bench questions, the base distillation settings, seeds, output directory) and :class:`Variant` (one arm of an
experiment: a name and the settings it changes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ptp.train.config import PRECISIONS, read_config_file


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: the runs it makes differ from the others' only in ``settings``."""

    name: str
    """Its directory under the experiment's output and its row in the tables."""
    settings: dict
    """Fields of :class:`ptp.train.DistillConfig` (of :class:`ptp.train.pretrain.PretrainConfig` for the
    teacher-free experiment) set on top of the experiment's base settings."""
    temperature: float | None = None
    """Distil for (and decode at) the data's sampling configuration with this temperature (0: greedy) instead of
    the data's own; the same token sequences, other bins. None: the data's configuration."""
    drafter_size: str | None = None
    """A separate drafter trained from scratch, ``HIDDENxLAYERS`` (a Llama with the teacher's vocabulary and
    context), instead of the teacher's own network with a gated LoRA. None: the teacher drafts."""
    group: str = ""
    """The series the variant belongs to in the plot (a mode, an embedding, ...)."""
    x: float | None = None
    """Its position on the plot's horizontal axis within the series (a temperature, a window length, ...)."""


@dataclass
class ExperimentConfig:
    """Everything an experiment takes besides its list of variants (``ptp experiment NAME``)."""

    out: str
    """Output directory: one sub-run per variant and seed, ``results.json``, ``results.md`` and ``<name>.png``.
    Rerunning the same command there skips what is finished and resumes what was stopped."""
    model: str | None = None
    """The teacher: a model directory or name. None: the default model (SmolLM2-135M-Instruct)."""
    data: str | None = None
    """The data directory of ``ptp pregenerate`` (the distillation experiments)."""
    prompts: str | None = None
    """Spec-Bench's ``question.jsonl`` (or ``{"prompt"}`` JSONL), the held-out questions of the engine's run (the
    distillation experiments; the drafters never train on them)."""
    questions: int | None = 80
    """Spec-Bench questions benchmarked per run, spread evenly over the categories' order (None: all)."""
    distill_config: str | None = None
    """JSON file of :class:`ptp.train.DistillConfig` fields every variant starts from (e.g.
    ``recipes/default/distill.json``)."""
    train_config: str | None = None
    """JSON file of :class:`ptp.train.pretrain.PretrainConfig` fields (the teacher-free experiment)."""
    overrides: dict = field(default_factory=dict)
    """Fields set on top of ``distill_config`` (or ``train_config``) for every variant (``--set key=value``)."""
    text: str = "stdlib"
    """The teacher-free experiment's text, as ``ptp train --data`` reads it."""
    steps: int | None = None
    """Optimizer steps of every run (``max_steps`` / ``steps``); None: the base settings'."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per variant and seed (the seed of the drafter's initialisation, data order, split and windows);
    the tables report the mean and the standard deviation over the seeds."""
    variants: tuple[str, ...] | None = None
    """Run only these variants (by name); None: all. Several processes may share ``out`` with disjoint variants."""
    drafter_sizes: tuple[str, ...] = ("192x4", "384x6")
    """The separate drafters of the ``size`` experiment, ``HIDDENxLAYERS``, trained from scratch."""
    eval_rows: int = 64
    """Held-out packed rows of the window evaluation (``ptp.train.evaluate_adapter``)."""
    max_new_tokens: int = 256
    """New tokens per Spec-Bench turn."""
    repeats: int = 1
    """Timed generations per turn in the engine's run (the median counts)."""
    warmup: int = 1
    """Untimed generations per method before the timing."""
    device: str | None = None
    """``cpu`` or ``cuda``; None: CUDA when available."""
    precision: str = "auto"
    """Training precision: ``float32``, ``bf16`` or ``auto`` (bf16 on CUDA)."""
    bench_dtype: str = "float32"
    """The engine's dtype on Spec-Bench: float32, where every output must equal one-token decoding."""
    max_time: float | None = None
    """Seconds this invocation may train; a run still training then saves a checkpoint and the experiment stops
    with partial results (rerun the command to continue). None: no limit."""
    progress: bool = True
    """Progress bars of the runs."""

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out is required: the experiment's output directory")
        self.seeds = tuple(self.seeds)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be integers >= 0, got {list(self.seeds)}")
        if self.variants is not None:
            self.variants = tuple(self.variants)
        self.drafter_sizes = tuple(self.drafter_sizes)
        for size in self.drafter_sizes:
            parse_size(size)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("steps", "questions"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 (or None), got {value!r}")
        if self.eval_rows < 1 or self.max_new_tokens < 1 or self.repeats < 1 or self.warmup < 0:
            raise ValueError("eval_rows, max_new_tokens and repeats must be >= 1 and warmup >= 0")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be > 0 seconds (or None), got {self.max_time!r}")

    def teacher(self) -> str:
        """The teacher's path or name (the default model's directory, converted on first use, when unset)."""
        if self.model is not None:
            return self.model
        from ptp.default_model import teacher_dir

        return str(teacher_dir())

    def base_settings(self, path: str | None) -> dict:
        """The JSON object of ``path`` (None: empty) with :attr:`overrides` on top."""
        settings = read_config_file(path) if path is not None else {}
        return {**settings, **self.overrides}

    def to_dict(self) -> dict:
        return asdict(self)


def parse_size(size: str) -> tuple[int, int]:
    """``"192x4"`` -> ``(192, 4)``: a separate drafter's hidden size and layers."""
    hidden, sep, layers = size.partition("x")
    if not sep or not hidden.isdigit() or not layers.isdigit() or int(hidden) < 2 or int(layers) < 1:
        raise ValueError(f"drafter size {size!r}: expected HIDDENxLAYERS, e.g. 192x4")
    return int(hidden), int(layers)
