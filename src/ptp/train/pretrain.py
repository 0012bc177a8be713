"""Training a causal LM on text from a config: plain next-token pretraining (``objective="ar"``, how the project
makes its own small teachers) or inverse autoregressive C-PTP training (``objective="ptp"``, :mod:`ptp.train.inverse`).

``pretrain(config)`` reads text (the standard-library corpus, text files, or JSONL ``{"text"}``), trains a byte-level
BPE tokenizer unless one is given, builds a Hugging Face model from an architecture config (Llama by default) or
continues a checkpoint, trains it on rows cut from the text (:func:`train_rows`, over the training loop of
:mod:`ptp.train.loop`), reports the held-out loss, and saves a normal model directory (safetensors, plus the
tokenizer) that ``AutoModelForCausalLM`` and ``AutoTokenizer`` load. :func:`train_autoregressive` is the plain
next-token objective on packed rows, also used directly to train small teachers.

Like ``ptp distill`` it writes atomic checkpoints (:mod:`ptp.train.checkpoint`: the model, optimizer and scheduler
state, the losses so far) to ``<out>.run``, resumes the newest exactly (``resume``), and runs as DDP under
``accelerate launch`` / ``torchrun``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ptp.data.packing import PackedRows, document_mask
from ptp.model.attention import attention_bias
from ptp.model.config import DrafterSettings
from ptp.train.checkpoint import ADAPTER, check_writable, default_run_dir, newest_checkpoint, remove_stale
from ptp.train.loop import Checkpoints, train_loop, warmup_cosine
from ptp.train.losses import next_token_loss, next_token_targets
from ptp.train.runtime import autocast_step, progress_bar, reduce_sums, run_processes, use_bf16

ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2")


OBJECTIVES = ("ar", "ptp")
#: The tokenizer a run trains, in its run directory.
TOKENIZER = "tokenizer"


@dataclass
class PretrainConfig:
    """A training run on text (``ptp train --objective ar|ptp``)."""

    objective: str = "ar"
    """``ar``: next-token loss only; ``ptp``: inverse autoregressive C-PTP training plus the next-token loss."""
    data: str = "stdlib"
    """``stdlib`` (the running interpreter's standard library, training split), a text file, a directory of
    ``*.py``/``*.txt``/``*.md`` files, or a JSONL file of ``{"text": ...}``."""
    out: str = ""
    """Model directory to write."""
    init_from: str | None = None
    """Continue training this model directory instead of building a fresh model (its tokenizer is used). A ``ptp``
    model directory continues with ``ptp`` and keeps its own window length, u embedding and LoRA rank."""
    tokenizer: str | None = None
    """Tokenizer directory; None: train a byte-level BPE on the training text."""
    vocab_size: int = 8192
    """Vocabulary of the BPE trained when no tokenizer is given."""
    architecture: str = "llama"
    """Model family of a fresh model: llama, qwen2, mistral or gpt2."""
    hidden_size: int = 384
    """Width of a fresh model."""
    num_layers: int = 6
    """Decoder layers of a fresh model."""
    num_heads: int = 6
    """Attention heads of a fresh model."""
    num_kv_heads: int = 2
    """Key/value heads of a fresh model (grouped-query attention)."""
    intermediate_size: int = 1024
    """Width of the MLP of a fresh model."""
    context: int = 1024
    """max_position_embeddings of a fresh model."""
    row_length: int = 512
    """Tokens per training row; text is cut into chunks of this length."""
    batch_size: int = 32
    """Rows per step and process."""
    steps: int = 1000
    """Optimizer steps."""
    max_time: float | None = None
    """Stop after this many seconds of training (then evaluate and save as after the last step); None: no limit."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, then cosine decay)."""
    warmup_steps: int = 100
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay."""
    held_out_fraction: float = 0.05
    """Of the text (by module for ``stdlib``, by file otherwise) kept out of training for the held-out loss."""
    seed: int = 0
    """Seed of the initialisation and of the training order."""
    precision: str = "auto"
    """``float32`` or ``bf16`` (autocast; CUDA); ``auto``: bf16 on CUDA, else float32."""
    device: str | None = None
    """``cpu`` or ``cuda``; None: CUDA when available."""
    progress: bool = True
    """Show a progress bar (main process only)."""
    window_length: int = DrafterSettings.window_length
    """``ptp``: the drafter setting (:class:`ptp.model.config.DrafterSettings`): the tokens the model samples per
    call."""
    windows_per_row: int = 16
    """``ptp``: windows per training row; each costs N small sequential passes for the u recovery."""
    embedding: str = DrafterSettings.embedding
    """``ptp``: the drafter setting (:class:`ptp.model.config.DrafterSettings`)."""
    embedding_size: int = DrafterSettings.embedding_size
    """``ptp``: the drafter setting (:class:`ptp.model.config.DrafterSettings`)."""
    lora_rank: int = DrafterSettings.lora_rank
    """``ptp``: the drafter setting (:class:`ptp.model.config.DrafterSettings`); the base trains too, the adapter
    lets slots differ from tokens. Its alpha is twice the rank."""
    next_token_weight: float = 1.0
    """``ptp``: weight of the next-token loss next to the slot cross-entropy."""
    compare_to: str | None = None
    """``ptp``: an ``ar`` model directory with the same tokenizer; the held-out evaluation then also reports its
    perplexity and how many leading tokens of our parallel samples agree with its plain sampling."""
    run_dir: str | None = None
    """Checkpoints (and the trained tokenizer); default: ``<out>.run`` next to the model directory."""
    checkpoint_interval: int | None = None
    """Write a checkpoint every this many steps; None or 0: only after the last step."""
    keep_checkpoints: int = 2
    """Checkpoints kept (the newest)."""
    resume: bool = False
    """Continue from the newest checkpoint of ``run_dir``, exactly as the run would have gone on; the config must
    not differ from the checkpoint's in a field that changes the result."""

    def run_path(self) -> Path:
        return default_run_dir(self.out, self.run_dir)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        if self.precision not in ("auto", "float32", "bf16"):
            raise ValueError(f"precision must be auto, float32 or bf16, got {self.precision!r}")
        names = ("vocab_size", "hidden_size", "num_layers", "num_heads", "row_length", "batch_size", "steps",
                 "keep_checkpoints")  # fmt: skip
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_interval is not None and self.checkpoint_interval < 0:
            raise ValueError(f"checkpoint_interval must be >= 0 or None, got {self.checkpoint_interval}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be > 0 seconds (or None), got {self.max_time!r}")
        if self.row_length > self.context:
            raise ValueError(f"row_length {self.row_length} exceeds the model context {self.context}")


def read_text_corpus(data: str, held_out_fraction: float) -> tuple[list[str], list[str]]:
    """(train texts, held-out texts) from ``data`` (see :attr:`PretrainConfig.data`)."""
    from ptp.data.stdlib import stdlib_corpus

    if data == "stdlib":
        return stdlib_corpus(held_out_fraction)
    path = Path(data)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".py", ".txt", ".md") and p.is_file())
        texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    elif path.is_file() and path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f"{path}:{number}: expected a JSON object with a string 'text'")
                texts.append(record["text"])
    elif path.is_file():
        texts = [path.read_text(encoding="utf-8", errors="replace")]
    else:
        raise FileNotFoundError(f"training text {data} does not exist")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError(f"no text found in {data}")
    held = max(1, round(held_out_fraction * len(texts))) if len(texts) > 1 and held_out_fraction > 0 else 0
    return texts[held:], texts[:held]


def text_rows(token_lists: list[list[int]], row_length: int, eos: int | None) -> PackedRows:
    """Documents (EOS-terminated) laid end to end and cut into rows of ``row_length`` tokens; each row is one
    attention span (position ids restart per row), and every token of it is a training target."""
    stream = []
    for tokens in token_lists:
        stream.extend(tokens + ([eos] if eos is not None else []))
    count = len(stream) // row_length
    if count == 0:
        raise ValueError(f"the text holds {len(stream)} tokens, fewer than one row of {row_length}")
    tokens = torch.tensor(stream[: count * row_length], dtype=torch.int64).view(count, row_length)
    positions = torch.arange(row_length).expand(count, -1).contiguous()
    return PackedRows(tokens, torch.zeros_like(tokens), positions, torch.ones_like(tokens, dtype=torch.bool))


def inverse_config(config: PretrainConfig):
    """The C-PTP model configuration of a ``ptp`` run: categorical slots, base weights trained, S at T = 1; the other
    drafter settings keep their defaults."""
    from ptp.model.config import PTPConfig
    from ptp.train.inverse import TEXT_SAMPLING

    return PTPConfig(mode="categorical", train_base=True, window_length=config.window_length,
                     embedding=config.embedding, embedding_size=config.embedding_size, lora_rank=config.lora_rank,
                     lora_alpha=2.0 * config.lora_rank, sampling=TEXT_SAMPLING)  # fmt: skip


def inverse_loss(model, config: PretrainConfig):
    """The per-batch loss of a ``ptp`` run for :func:`train_rows`."""
    from ptp.train.inverse import inverse_batch, window_starts

    def batch_loss(batch: PackedRows, generator: torch.Generator, forward) -> torch.Tensor:
        starts = window_starts(batch, config.windows_per_row, generator)
        return inverse_batch(model, batch, starts, next_token_weight=config.next_token_weight, generator=generator,
                             forward=forward).loss  # fmt: skip

    return batch_loss


def build_model(config: PretrainConfig, vocab_size: int, special: dict):
    """A fresh randomly initialised causal LM of the configured family and size."""
    from transformers import AutoConfig, AutoModelForCausalLM

    shared = dict(vocab_size=vocab_size, tie_word_embeddings=True, **special)
    if config.architecture == "gpt2":
        model_config = AutoConfig.for_model(
            "gpt2", n_embd=config.hidden_size, n_layer=config.num_layers, n_head=config.num_heads,
            n_inner=config.intermediate_size, n_positions=config.context, **shared,
        )  # fmt: skip
    else:
        model_config = AutoConfig.for_model(
            config.architecture, hidden_size=config.hidden_size, num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
            intermediate_size=config.intermediate_size, max_position_embeddings=config.context, **shared,
        )  # fmt: skip
    torch.manual_seed(config.seed)
    return AutoModelForCausalLM.from_config(model_config, dtype=torch.float32)


@torch.no_grad()
def held_out_loss(model, rows: PackedRows, batch_size: int, bf16: bool) -> float:
    """Mean next-token loss over rows (nats per counted target token), documents isolated as in training."""
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = rows.select(list(range(start, min(start + batch_size, len(rows))))).to(model.device)
        with autocast_step(model.device, bf16):
            logits = text_logits(model, batch)
        n = int(next_token_targets(batch.document).sum())  # the batch's loss is a mean over its counted targets
        total += float(next_token_loss(logits.float(), batch.tokens, batch.document)) * n
        count += n
    return total / max(count, 1)


def text_logits(model, batch: PackedRows, forward=None) -> torch.Tensor:
    """A causal LM's logits over packed rows, every document seeing only itself (as in training and evaluation);
    ``forward``: the module to call (e.g. the model's DDP wrapper; default: the model)."""
    allowed = attention_bias(model, document_mask(batch.document))
    network = model if forward is None else forward
    return network(input_ids=batch.tokens, attention_mask=allowed, position_ids=batch.positions).logits


def train_autoregressive(model, rows: PackedRows, **options) -> list[float]:
    """Plain next-token training of a causal LM on packed rows (documents isolated); all parameters train.

    ``options`` are those of :func:`train_rows`. Returns the loss of every step.
    """

    def batch_loss(batch: PackedRows, generator: torch.Generator, forward) -> torch.Tensor:
        return next_token_loss(text_logits(model, batch, forward), batch.tokens, batch.document)

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
    """Training on text rows: every parameter that requires a gradient trains on ``batch_loss(rows, generator,
    forward)`` (a scalar; see :data:`ptp.train.loop.BatchLoss`), with AdamW and a warm-up then cosine schedule; with
    ``bf16`` the loss of each step is computed under bf16 autocast (the weights and the optimizer stay float32).
    Returns the loss of every step (one host sync per step, for the record).

    Under ``accelerator`` with several processes each takes its own ``batch_size`` rows of a step (as in
    :func:`ptp.train.distill`), gradients are averaged across processes and the recorded loss is their mean. With
    ``run_dir`` the main process writes a checkpoint (the model's ``save_pretrained``, optimizer, scheduler, losses so
    far and ``config``) every ``checkpoint_interval`` steps and after the last; ``resumed`` (from
    :func:`ptp.train.checkpoint.newest_checkpoint`, with the model already loaded from it) continues that run exactly.
    ``max_time`` (seconds) ends the run early after the step that passes it, as if that step were the last.
    """
    if steps < 1 or len(rows) == 0:
        raise ValueError("training on rows needs steps >= 1 and at least one row")
    world = accelerator.num_processes if accelerator else 1
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(min(warmup_steps, steps - 1), steps, 0.1))
    start, losses = 0, []
    if resumed is not None:
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        start, losses = resumed["step"], list(resumed["losses"])
    main = accelerator is None or accelerator.is_main_process
    bar = progress_bar(steps, start, progress and main, "train")
    last: list[torch.Tensor] = []

    def after_step(done: int, final: bool) -> None:
        losses.append(float(reduce_sums(accelerator, {"loss": last.pop().detach().float()})["loss"]) / world)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")

    def state() -> tuple[dict, None]:
        trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "losses": losses,
                   "config": config or {}}  # fmt: skip
        return trainer, None

    checkpoints = None if run_dir is None else Checkpoints(Path(run_dir), checkpoint_interval, keep_checkpoints, state)
    train_loop(model, rows, batch_loss, optimizer, scheduler, steps=steps, start=start, batch_size=batch_size,
               seed=seed, bf16=bf16, max_grad_norm=max_grad_norm, accelerator=accelerator, max_time=max_time,
               after_batch=lambda batch, loss: last.append(loss), after_step=after_step,
               checkpoints=checkpoints)  # fmt: skip
    bar.close()
    model.eval()
    return losses


def pretrain(config: PretrainConfig) -> dict | None:
    """Run the pretraining; returns the run's summary (also written to ``<out>/training_summary.json``).

    Under ``accelerate launch`` / ``torchrun`` every process trains on its own rows of each step (the batch is
    ``batch_size`` rows per process); only the main process evaluates, writes the model and returns the summary, the
    others return None. Checkpoints go to ``config.run_path()``; ``config.resume`` continues the newest exactly.
    """
    with run_processes(config) as accelerator:
        return _pretrain(config, accelerator)


def _pretrain(config: PretrainConfig, accelerator) -> dict | None:
    device, main, world = accelerator.device, accelerator.is_main_process, accelerator.num_processes
    out, run_dir = Path(config.out), config.run_path()
    if main:
        check_writable(out, "model output directory")
        check_writable(run_dir, "run directory")
        remove_stale(run_dir)
    resumed = newest_checkpoint(run_dir, asdict(config), config.resume)
    bf16 = use_bf16(config.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 runs use TF32 tensor cores
    train_texts, held_texts = read_text_corpus(config.data, config.held_out_fraction)
    if main:  # the run's first files, written once the text has been read
        run_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(config, accelerator, run_dir, resumed, train_texts)
    model, ptp_model = _model(config, tokenizer, resumed, device)
    encode = lambda texts: tokenizer(texts, add_special_tokens=False).input_ids if texts else []
    rows = text_rows(encode(train_texts), config.row_length, tokenizer.eos_token_id)
    held_rows = text_rows(encode(held_texts), config.row_length, tokenizer.eos_token_id) if held_texts else None
    started = time.perf_counter()
    options = dict(steps=config.steps, batch_size=config.batch_size, learning_rate=config.learning_rate,
                   warmup_steps=config.warmup_steps, weight_decay=config.weight_decay, seed=config.seed,
                   progress=config.progress, accelerator=accelerator, run_dir=run_dir,
                   checkpoint_interval=config.checkpoint_interval, keep_checkpoints=config.keep_checkpoints,
                   config=asdict(config), resumed=resumed, max_time=config.max_time, bf16=bf16)  # fmt: skip
    if ptp_model is None:
        losses = train_autoregressive(model, rows, **options)
    else:
        losses = train_rows(ptp_model, rows, inverse_loss(ptp_model, config), **options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    if not main:  # the others wait until the main process has evaluated and saved, then all leave together
        accelerator.wait_for_everyone()
        return None
    held = held_out_loss(model, held_rows, config.batch_size, bf16) if held_rows is not None else None
    evaluation = _evaluate_text(config, ptp_model, held_rows, len(tokenizer), device)
    if ptp_model is None:
        model.save_pretrained(str(out))
    else:
        ptp_model.save_pretrained(out)
    tokenizer.save_pretrained(str(out))
    trained_steps = len(losses) - (resumed["step"] if resumed is not None else 0)
    summary = {
        "config": asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_rows": len(rows),
        "processes": world,
        "steps": len(losses),
        "train_tokens_seen": len(losses) * world * config.batch_size * config.row_length,
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "held_out_loss": held,
        "held_out_perplexity": math.exp(min(held, 700.0)) if held is not None else None,
        "loss_curve": [round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4) for i in range(0, len(losses), 50)],
        "ptp_evaluation": evaluation,
        "training_seconds": seconds,
        "tokens_per_second": trained_steps * world * config.batch_size * config.row_length / max(seconds, 1e-9),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    return summary


def _tokenizer(config: PretrainConfig, accelerator, run_dir: Path, resumed: dict | None, train_texts: list[str]):
    """The run's tokenizer: the given one (or the continued model's), else a BPE trained once by the main process on
    the training text, which the other processes and a resumed run read back."""
    from transformers import AutoTokenizer

    from ptp.data.tokenizer import train_bpe

    if config.init_from is not None or config.tokenizer is not None:
        return AutoTokenizer.from_pretrained(config.tokenizer or config.init_from)
    trained = str(run_dir / TOKENIZER)
    if accelerator.is_main_process and resumed is None:
        train_bpe(train_texts, config.vocab_size).save_pretrained(trained)
    accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(trained)


def _model(config: PretrainConfig, tokenizer, resumed: dict | None, device: torch.device):
    """The causal LM to train on the device, and for a ``ptp`` run the PTPModel around it (else None): continued
    from the checkpoint when resuming, from ``init_from``, or built fresh."""
    from transformers import AutoModelForCausalLM

    from ptp.model.config import CONFIG_NAME
    from ptp.model.ptp import PTPModel

    ptp_model = None
    source = resumed["path"] / ADAPTER if resumed is not None else config.init_from  # the weights to start from
    if source is not None:
        if (Path(source) / CONFIG_NAME).is_file():
            if config.objective != "ptp":
                raise ValueError(f"{source} is a ptp-trained model; continue it with objective 'ptp'")
            ptp_model = PTPModel.from_pretrained(None, source)
            model = ptp_model.base_model
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    else:
        special = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        model = build_model(config, len(tokenizer), special)
    if config.objective == "ptp" and ptp_model is None:
        ptp_model = PTPModel(model, inverse_config(config))
    model.to(device)
    if ptp_model is not None:
        ptp_model.to(device)
    return model, ptp_model


def _evaluate_text(config: PretrainConfig, ptp_model, held_rows: PackedRows | None, vocab: int, device):
    """A ``ptp`` model's held-out evaluation (:func:`ptp.train.inverse.evaluate_text`), next to ``compare_to``'s
    plain sampling if given; None for an ``ar`` run or without held-out text."""
    if ptp_model is None or held_rows is None:
        return None
    from transformers import AutoModelForCausalLM

    from ptp.train.inverse import evaluate_text

    teacher = None
    if config.compare_to is not None:
        teacher = AutoModelForCausalLM.from_pretrained(config.compare_to, dtype=torch.float32).to(device).eval()
        if teacher.get_output_embeddings().weight.shape[0] != vocab:
            raise ValueError(f"{config.compare_to} has another vocabulary than this model's tokenizer")
    return evaluate_text(ptp_model, held_rows, teacher=teacher, windows_per_row=config.windows_per_row,
                         batch_size=config.batch_size, seed=config.seed)  # fmt: skip
