"""The typed configuration of a PTP drafter: its settings (:class:`DrafterSettings`, declared here once for every
place that chooses them), and :class:`PTPConfig`, saved as ``ptp_config.json`` next to the PEFT adapter."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ptp.model.embeddings import EMBEDDING_KINDS, FEATURE_KINDS
from ptp.sampling import DEFAULT_SAMPLING, SamplingConfig

MODES = ("one_hot", "categorical", "independent", "mode_chain")
#: Modes whose slots output a distribution and draft by Pick with their own u (the others draft the argmax).
PICK_MODES = ("categorical", "mode_chain")
CONFIG_NAME = "ptp_config.json"
FORMAT_VERSION = 1


@dataclass
class DrafterSettings:
    """The settings that define a drafter's architecture (docs/method.md, Drafters and Architecture), declared once:
    an adapter records them (:class:`PTPConfig`), a distillation run chooses them (:class:`ptp.train.DistillConfig`),
    and training on text takes its defaults from them (:class:`ptp.train.pretrain.PretrainConfig`)."""

    mode: str = "one_hot"
    """``one_hot`` (O-PTP: slot k sees u_k, outputs the token), ``categorical`` (C-PTP: slot k sees u_<k, outputs a
    distribution), ``independent`` (the baseline: O-PTP with an uninformative constant u), or ``mode_chain`` (slots see
    no u and output the teacher's distribution given that the earlier tokens of their group are the modes, then draft
    by Pick with their own u; docs/method.md, Extensions)."""
    embedding: str = "binary"
    """How u becomes an input vector; one of :data:`ptp.model.embeddings.EMBEDDING_KINDS`."""
    embedding_size: int = 24
    """Number of features of the u embedding (bits, levels, frequencies, interpolation intervals)."""
    window_length: int = 16
    """N: auxiliary slots per window in training; the longest group of drafts the decoder asks for."""
    lora_rank: int = 32
    """Rank of the gated LoRA adapter."""
    lora_alpha: float = 64.0
    """LoRA scaling numerator (the update is scaled by alpha / rank)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input during training."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get the adapter: PEFT's ``all-linear`` or a list of module names."""
    first_slot_token: bool = False
    """The first slot of each window (decoding: of each group) also receives the embedding of its current token, the
    token its group follows, which training and decoding both know, added to embed(u). An extension of the paper
    (docs/method.md, Extensions): without it a slot sees u alone and must rebuild that token through attention."""
    u_every_layer: bool = False
    """u enters every decoder layer of the slots, not only their input embedding: before each layer the slots' hidden
    states receive a linear map of u's features, one map per layer, each starting at zero (an extension, docs/method.md,
    Extensions: the layers that decide a token can compare u with the distribution they are forming). Needs a feature
    code of u (``binary``, ``float_bits``, ``thermometer`` or ``cosine``)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.embedding not in EMBEDDING_KINDS:
            raise ValueError(f"embedding must be one of {EMBEDDING_KINDS}, got {self.embedding!r}")
        for name in ("embedding_size", "window_length", "lora_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("first_slot_token", "u_every_layer"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.u_every_layer and self.embedding not in FEATURE_KINDS:
            raise ValueError(f"u_every_layer needs a feature code of u, one of {FEATURE_KINDS}; got {self.embedding!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")


#: The names of the drafter settings, in their order.
DRAFTER_FIELDS = tuple(f.name for f in fields(DrafterSettings))


def drafter_settings(config: DrafterSettings) -> dict:
    """The drafter settings of ``config`` (a :class:`PTPConfig` or a run config), by name."""
    return {name: getattr(config, name) for name in DRAFTER_FIELDS}


@dataclass
class PTPConfig(DrafterSettings):
    """Everything that defines a drafter besides its weights: its :class:`DrafterSettings`, and what it was trained
    for and on."""

    train_base: bool = False
    """The base model's own weights train too (a separate drafter, docs/method.md, Architecture, or a model trained
    without a teacher, docs/method.md, Inverse training); they are saved with the adapter (in ``base/``) and loaded
    from there. False: the base is frozen (it is the teacher)."""
    sampling: SamplingConfig = field(default_factory=lambda: DEFAULT_SAMPLING)
    """The sampling configuration the drafter was trained for (the default of ``generate``)."""
    acceptance_histogram: list[float] | None = None
    """Fraction of evaluation windows whose correct prefix was n, for n = 0..N; the decoder's budget uses it."""
    base_model: dict = field(default_factory=dict)
    """What the adapter was built on: ``model_type``, ``hidden_size``, ``vocab_size``, ``name_or_path``."""

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig.from_dict(self.sampling)
        super().__post_init__()
        if not isinstance(self.train_base, bool):
            raise ValueError(f"train_base must be true or false, got {self.train_base!r}")
        if self.acceptance_histogram is not None and len(self.acceptance_histogram) != self.window_length + 1:
            raise ValueError(
                f"acceptance_histogram needs window_length + 1 = {self.window_length + 1} entries, "
                f"got {len(self.acceptance_histogram)}"
            )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict) -> PTPConfig:
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"ptp_config.json has format_version {version}; this ptp-lm reads {FORMAT_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys in ptp_config.json: {sorted(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        """The text of ``ptp_config.json``."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, directory: str | Path) -> None:
        path = Path(directory) / CONFIG_NAME
        path.write_text(self.to_json())

    @classmethod
    def load(cls, directory: str | Path) -> PTPConfig:
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {directory} is not a PTP adapter directory")
        return cls.from_dict(read_json_object(path))


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path``; ValueError naming the file if it is not one."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"{path} is corrupt ({reason}): save or copy the adapter again") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} is corrupt (not a JSON object): save or copy the adapter again")
    return data
