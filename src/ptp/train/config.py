"""The typed configuration of a distillation run, loadable from a JSON file plus ``key=value`` overrides."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ptp.model.config import PICK_MODES, DrafterSettings
from ptp.sampling import ORDERS, SamplingConfig
from ptp.train.checkpoint import default_run_dir

LOSSES = ("cross_entropy", "forward_kl", "reverse_kl")
OUT_OF_SET = ("stop", "error")
PRECISIONS = ("auto", "float32", "bf16")


@dataclass
class DistillConfig(DrafterSettings):
    """Everything that defines a distillation run (docs/method.md, Distillation): the drafter's settings
    (:class:`ptp.model.config.DrafterSettings`: ``mode``, ``embedding``, ``embedding_size``, ``window_length``,
    ``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ``first_slot_token``) and the fields below."""

    # ----------------------------------------------------------------------------------------------- inputs
    model: str = ""
    """Base model (teacher): a directory or a name ``AutoModelForCausalLM`` loads; empty: the default model's
    teacher (:func:`ptp.default_model.teacher_dir`)."""
    data: str = ""
    """Data directory written by ``ptp pregenerate`` (or :func:`ptp.data.write_text_dataset`)."""
    out: str = ""
    """Adapter directory to write; ``PTPModel.from_pretrained(model, out)`` loads it."""
    run_dir: str | None = None
    """Checkpoints, metrics log and resolved config; default: ``<out>.run`` next to the adapter."""
    # ---------------------------------------------------------------------------------------------- drafter
    drafter_model: str | None = None
    """A separate drafter (docs/method.md, Architecture): a smaller causal LM with the teacher's vocabulary (a
    directory or name) that reads the context itself; ``model`` is then only the teacher that gives the bins. None:
    the teacher's own network drafts through its gated LoRA."""
    init_adapter: str | None = None
    """Start from a saved drafter (an adapter directory) instead of a fresh one: continue distilling it for more
    steps or on new data. Its drafter settings (mode, embedding, window length, LoRA) must equal this config's, except
    that a lower LoRA rank (and another alpha) grows into this config's (:meth:`ptp.PTPModel.load_adapter`: it drafts
    as the saved drafter did until training moves the new ranks) and ``first_slot_token`` may be switched on; the
    optimizer and the schedule start anew (``resume`` continues a stopped run instead)."""
    train_drafter_base: bool = False
    """With ``drafter_model``: its own weights train too (and are saved with the adapter), not only the LoRA and
    the u embedding. A drafter trained from scratch needs it."""
    # ------------------------------------------------------------------------------------------- objective
    loss: str | None = None
    """``cross_entropy`` (O-PTP and the baseline; also valid for C-PTP), ``forward_kl`` or ``reverse_kl``
    (C-PTP only). None: cross_entropy, or forward_kl for C-PTP."""
    position_decay: float = 1.0
    """gamma: slot j of a window has loss weight gamma^j (1: all equal)."""
    chain_loss: bool | None = None
    """Train a slot only where every earlier token of its window is the teacher's mode (argmax) at its position: the
    slot learns the teacher's distribution given that its group follows the modes, not a mixture over what the
    earlier tokens may have been (docs/method.md, Extensions). None: on for ``mode_chain`` drafters only; on for the
    independent baseline it makes the matching baseline, whose argmax drafts are the teacher's greedy chain."""
    beta: float = 1.0
    """u = left + (right - left) * Beta(beta, beta) in training; beta < 1 favours bin edges. Evaluation: uniform."""
    sampling: dict | None = None
    """The sampling configuration S of the bins (``SamplingConfig`` fields but ``order``). None: the data's. Must
    equal the data's unless ``allow_foreign_data``; required for raw text."""
    bin_order: str = "vocabulary"
    """The order of the bins along [0, 1) that the drafter learns (``ptp.sampling.ORDERS``): ``vocabulary``
    (the paper's) or ``probability`` (descending, so that a small u picks the likely tokens). Decoding uses the
    adapter's order; the data may have been sampled in either."""
    out_of_set: str = "stop"
    """A target outside the kept set of S (possible only for raw or foreign data): ``stop`` ends its window there
    (the slot and the rest of the window do not train), ``error`` refuses the batch."""
    allow_foreign_data: bool = False
    """Train on data from another model or tokenizer, or sampled with another S (like raw text)."""
    # ----------------------------------------------------------------------------------------------- batches
    row_length: int | None = None
    """Tokens per packed row. None: the model's context, at most 2048."""
    windows_per_row: int = 64
    """Windows sampled per row; all share the row's one teacher pass."""
    batch_size: int = 4
    """Rows per micro-batch per process."""
    gradient_accumulation: int = 1
    """Micro-batches per optimizer step."""
    # -------------------------------------------------------------------------------------------- optimizer
    max_steps: int = 1000
    """Optimizer steps."""
    max_time: float | None = None
    """Stop after this many seconds of training (checked after each step; the run then ends as after its last step:
    evaluation, checkpoint, adapter). None: no limit. The learning-rate schedule still spans ``max_steps``."""
    learning_rate: float = 5e-4
    """Peak AdamW learning rate."""
    u_learning_rate: float | None = None
    """Peak learning rate of u's own parameters (the u embedding and, with ``u_every_layer``, its layer maps), which
    start at zero and must grow, while the LoRA changes the teacher's own computation and should move slowly; the
    same schedule scales both. None: ``learning_rate``."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int | None = None
    """Linear warm-up steps, then cosine decay to ``min_lr_ratio`` of the peak. None: max_steps / 20, at most 100."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0: off)."""
    # ------------------------------------------------------------------------------------- evaluation, logs
    eval_fraction: float = 0.05
    """Fraction of prompts held out for evaluation (0: evaluate on training rows)."""
    eval_interval: int | None = None
    """Evaluate every this many steps (0: only at the end; None: max_steps / 5); must not exceed max_steps."""
    eval_rows: int = 64
    """Held-out rows used per evaluation at most."""
    log_interval: int = 10
    """Write training metrics every this many steps."""
    checkpoint_interval: int | None = None
    """Save a resumable checkpoint every this many steps (0: only at the end; None: max_steps / 4)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in the run directory (older ones are deleted)."""
    resume: bool = False
    """Continue from the latest checkpoint in the run directory (same data order, optimizer and RNG state)."""
    # -------------------------------------------------------------------------------------------- execution
    seed: int = 0
    """Seed of the adapter initialisation, the data order, the windows and the auxiliaries."""
    precision: str = "auto"
    """``float32``, ``bf16`` (bf16 base weights and autocast; CUDA), or ``auto`` (bf16 on CUDA, else float32)."""
    float32_bins: bool = False
    """With ``precision`` bf16: the targets' bins come from a float32 copy of the teacher, as the engine's float32
    verification computes them, instead of from the 16-bit pass the slots attend to (on the default teacher a u drawn
    in a 16-bit bin picks another token about 3% of the time: ``ptp ceiling --bins-in bfloat16``). Costs a float32
    copy of the teacher and a second pass over the rows. Not with ``fsdp``."""
    device: str | None = None
    """``cpu``, ``cuda``; None: whatever ``accelerate`` chooses."""
    progress: bool = True
    """Show a progress bar (main process only)."""
    compile: bool = False
    """Compile the drafter's slot pass (forward and backward) with ``torch.compile``: fused kernels, after a
    compilation at the first step (the shapes of a step are fixed). The same computation up to rounding; a run may
    resume with or without it."""
    profile_steps: int = 0
    """Profile this many optimizer steps with ``torch.profiler`` (after two unrecorded ones, in which kernels are
    chosen and a compiled pass compiles) and write their operator table, most expensive first (GPU time on CUDA), to
    ``profile.txt`` in the run directory: where a step's time goes. 0: off."""
    fsdp: bool = False
    """Shard the frozen base and the adapter across the processes with FSDP2 ``fully_shard``, one unit per decoder
    layer, for bases too large for one device (the base is loaded on the CPU and each process keeps its shards on its
    device). Needs more than one process (``accelerate launch`` / ``torchrun``) and no ``drafter_model``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.mode not in PICK_MODES and self.loss not in (None, "cross_entropy"):
            raise ValueError(
                f"loss {self.loss!r} needs mode {' or '.join(PICK_MODES)}; {self.mode!r} trains with cross_entropy"
            )
        if self.chain_loss is not None and not isinstance(self.chain_loss, bool):
            raise ValueError(f"chain_loss must be true, false or null, got {self.chain_loss!r}")
        if self.train_drafter_base and not self.drafter_model:
            raise ValueError("train_drafter_base needs drafter_model (the teacher's own weights never train)")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be > 0 seconds (or None), got {self.max_time!r}")
        if self.fsdp and self.drafter_model:
            raise ValueError("fsdp shards the teacher's own network: it does not support a separate drafter_model")
        if self.fsdp and self.float32_bins:
            raise ValueError("fsdp shards the teacher's own network: it does not support float32_bins")
        if self.float32_bins and self.precision == "float32":
            raise ValueError("float32_bins is for a 16-bit run: with precision float32 the bins are float32 already")
        if self.out_of_set not in OUT_OF_SET:
            raise ValueError(f"out_of_set must be one of {OUT_OF_SET}, got {self.out_of_set!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        positive = (
            "windows_per_row",
            "batch_size",
            "gradient_accumulation",
            "max_steps",
            "log_interval",
            "eval_rows",
            "keep_checkpoints",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        # Unset intervals follow the run's length, so that a short run needs no other setting.
        if self.warmup_steps is None:
            self.warmup_steps = min(100, self.max_steps // 20)
        if self.eval_interval is None:
            self.eval_interval = max(1, self.max_steps // 5)
        if self.checkpoint_interval is None:
            self.checkpoint_interval = max(1, self.max_steps // 4)
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval", "seed", "profile_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if self.eval_interval > self.max_steps:
            raise ValueError(
                f"eval_interval ({self.eval_interval}) is beyond the run (max_steps={self.max_steps}): no evaluation "
                "would happen before the end; lower it or set 0 (evaluate only at the end)"
            )
        if self.checkpoint_interval > self.max_steps:
            raise ValueError(
                f"checkpoint_interval ({self.checkpoint_interval}) is beyond the run (max_steps={self.max_steps}); "
                "lower it or set 0 (checkpoint only at the end)"
            )
        if self.warmup_steps >= self.max_steps and self.max_steps > 1:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})")
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")
        if not 0 < self.position_decay <= 1:
            raise ValueError(f"position_decay must be in (0, 1], got {self.position_decay!r}")
        if not self.learning_rate > 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("learning_rate must be > 0 and min_lr_ratio in [0, 1]")
        if self.u_learning_rate is not None and not self.u_learning_rate > 0:
            raise ValueError(f"u_learning_rate must be > 0 (or None: learning_rate), got {self.u_learning_rate!r}")
        if self.row_length is not None and self.row_length < 2:
            raise ValueError(f"row_length must be >= 2, got {self.row_length!r}")
        if self.bin_order not in ORDERS:
            raise ValueError(f"bin_order must be one of {ORDERS}, got {self.bin_order!r}")
        if self.sampling is not None:
            if isinstance(self.sampling, SamplingConfig):
                ordered = self.sampling.order != "vocabulary"
            else:
                ordered = "order" in self.sampling
            if ordered:
                raise ValueError("set the order of the bins with bin_order, not inside sampling")
            self.sampling_config()  # validates

    @property
    def objective(self) -> str:
        """The loss actually used."""
        return objective(self.mode, self.loss)

    @property
    def on_chain(self) -> bool:
        """Slots train only on their windows' mode chains (``chain_loss`` resolved)."""
        return on_chain(self.mode, self.chain_loss)

    def sampling_config(self) -> SamplingConfig | None:
        if self.sampling is None:
            return None
        if isinstance(self.sampling, SamplingConfig):
            return self.sampling
        return SamplingConfig.from_dict(self.sampling)

    def run_path(self) -> Path:
        return default_run_dir(self.out, self.run_dir)

    def to_dict(self) -> dict:
        data = asdict(self)
        if isinstance(self.sampling, SamplingConfig):
            data["sampling"] = self.sampling.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DistillConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown distillation config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict | None = None) -> DistillConfig:
        """A config from a JSON file (optional) with ``overrides`` (field -> value) applied on top."""
        data = read_config_file(path) if path is not None else {}
        data.update(overrides or {})
        return cls.from_dict(data)


def read_config_file(path: str | Path) -> dict:
    """The JSON object of a config file; FileNotFoundError or a ValueError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"config file {path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a JSON object")
    return data


def objective(mode: str, loss: str | None = None) -> str:
    """The loss a drafter of ``mode`` trains and is evaluated with: ``loss``, else forward_kl for the drafters that
    pick with u (C-PTP, mode chain) and cross_entropy otherwise."""
    return loss or ("forward_kl" if mode in PICK_MODES else "cross_entropy")


def on_chain(mode: str, chain_loss: bool | None = None) -> bool:
    """Whether a drafter of ``mode`` trains on its windows' mode chains: ``chain_loss``, else for mode_chain only."""
    return chain_loss if chain_loss is not None else mode == "mode_chain"


def parse_overrides(items: list[str], cls=DistillConfig) -> dict:
    """``["key=value", ...]`` to a dict typed by the dataclass fields (values are JSON, or plain strings)."""
    names = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    result = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise ValueError(f"override {item!r}: expected key=value with key one of {sorted(names)}")
        result[key] = _parse_value(text, hints[key])
    return result


def _parse_value(text: str, hint):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    accepted = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) else (hint,)
    if str in accepted and not isinstance(value, str) and value is not None and not isinstance(value, (list, dict)):
        value = text
    if float in accepted and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value
