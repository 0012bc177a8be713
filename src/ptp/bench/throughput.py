"""Batched sampling throughput: new tokens per second of ``ptp pregenerate`` against ``transformers.generate``.

Distillation trains on the teacher's own samples, so the speed of sampling many sequences at once bounds how much
data a drafter can see. This benchmark samples ``n_per_prompt`` completions of each prompt in batches of
``batch_size`` two ways, on the same prompts, model and sampling configuration:

- ``engine``: :func:`ptp.data.pregenerate` itself (the decoding engine in plain mode: a fixed-size cache, on a GPU a
  captured step, finished rows leaving the batch), writing a throw-away data directory;
- ``hf``: ``model.generate`` of ``transformers`` on the same length-sorted batches (its own random numbers: the
  tokens differ, the work is the same kind).

With ``profile``, the first batch of each method also runs under ``torch.profiler`` and the table of its most
expensive operators is written beside the results: where a step's time goes.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ptp.bench.timing import environment, synchronize
from ptp.data.pregeneration import PregenerateConfig, pregenerate, sampling_speed
from ptp.decode.inputs import left_pad, stop_tokens
from ptp.runtime import operator_table, profiler_activities, resolve_device, resolve_dtype
from ptp.sampling import DEFAULT_SAMPLING, SamplingConfig

METHODS = ("engine", "hf")


@dataclass
class ThroughputConfig:
    """What ``ptp bench-throughput`` measures."""

    prompts: str
    """A prompt file or directory as ``ptp pregenerate`` reads it (JSONL chats or text)."""
    out: str
    """Directory for ``throughput.json`` (and the profiles)."""
    model: str | None = None
    """The model directory; none: the default teacher."""
    random_weights: bool = False
    """Build the model from its ``config.json`` with random weights (a speed measurement needs no trained model)."""
    methods: str = "engine,hf"
    """Comma-separated, from ``engine`` and ``hf``."""
    max_prompts: int = 256
    """Prompts taken from the file at most (its first ones)."""
    n_per_prompt: int = 1
    """Completions sampled per prompt."""
    batch_size: int = 256
    """Sequences per generation call."""
    max_new_tokens: int = 256
    """Length limit of each completion (a completion also ends at EOS)."""
    sampling: SamplingConfig = field(default_factory=lambda: DEFAULT_SAMPLING)
    """The sampling configuration of both methods."""
    device: str = "auto"
    """``cpu``, ``cuda``, or ``auto``: CUDA when available."""
    dtype: str = "auto"
    """``auto`` (bfloat16 on CUDA, float32 on the CPU), ``float32``, ``bfloat16`` or ``float16``."""
    warmup: bool = True
    """Run one batch of each method untimed first (CUDA graphs are captured and kernels chosen then)."""
    compile: bool = False
    """The engine's sampling step compiled with ``torch.compile`` (``ptp pregenerate --compile``); the warm-up batch
    compiles the shapes of a full batch."""
    profile: bool = False
    """Write a ``torch.profiler`` table of each method's first batch."""
    seed: int = 0
    """Seed of the auxiliaries (and of the random weights)."""

    def __post_init__(self) -> None:
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig.from_dict(self.sampling)
        unknown = [m for m in self.method_list() if m not in METHODS]
        if unknown or not self.method_list():
            raise ValueError(f"methods must be a comma-separated list of {', '.join(METHODS)}, got {self.methods!r}")
        for name in ("max_prompts", "n_per_prompt", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


def load_teacher(config: ThroughputConfig, device: torch.device, dtype: torch.dtype):
    """The model (trained or random weights) and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ptp.data.prompts import load_tokenizer

    path = config.model
    if path is None:
        from ptp.default_model import teacher_dir

        path = str(teacher_dir())
    if not Path(path).exists():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if config.random_weights:
        torch.manual_seed(config.seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
    return model.eval(), load_tokenizer(path, required=False)


def _hf_batches(model, prompts: list[list[int]], config: ThroughputConfig, eos, pad: int) -> int:
    """``model.generate`` over the length-sorted batches ``pregenerate`` would make; returns the new tokens."""
    rows = sorted((p for p in prompts for _ in range(config.n_per_prompt)), key=len)
    s = config.sampling
    new_tokens = 0
    for start in range(0, len(rows), config.batch_size):
        ids, mask = left_pad(rows[start : start + config.batch_size], pad)
        out = model.generate(
            input_ids=ids.to(model.device),
            attention_mask=mask.long().to(model.device),
            max_new_tokens=config.max_new_tokens,
            do_sample=s.do_sample,
            temperature=s.temperature if s.do_sample else None,
            top_k=s.top_k or 0,
            top_p=s.top_p or 1.0,
            eos_token_id=eos or None,
            pad_token_id=pad,
        )
        new = out[:, ids.shape[1] :]
        # Tokens up to and including the first EOS count, as pregeneration keeps them.
        ended = torch.isin(new, torch.tensor(eos, dtype=torch.int64, device=new.device))
        before_end = (ended.long().cumsum(dim=1) - ended.long()) == 0
        new_tokens += int(before_end.sum())
    return new_tokens


def _engine_batches(model, prompts: list[list[int]], config: ThroughputConfig, eos, tokenizer) -> int:
    """``pregenerate`` into a throw-away directory; returns the new tokens it sampled (as its shards record them)."""
    options = PregenerateConfig(n_per_prompt=config.n_per_prompt, max_new_tokens=config.max_new_tokens,
                                sampling=config.sampling, batch_size=config.batch_size,
                                prompts_per_shard=len(prompts), seed=config.seed, eos_token_id=eos,
                                compile=config.compile)  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        pregenerate(model, prompts, Path(out) / "data", options, tokenizer=tokenizer, progress=False)
        return sampling_speed(Path(out) / "data")["new_tokens"]


def run_throughput(config: ThroughputConfig) -> dict:
    """Measure every method; writes ``throughput.json`` (and ``profile-<method>.txt``) to ``config.out``."""
    from ptp.data.prompts import encode_prompts, read_prompts

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_teacher(config, device, dtype)
    vocab = model.get_output_embeddings().weight.shape[0]
    prompts = encode_prompts(read_prompts(config.prompts)[: config.max_prompts], tokenizer, vocab_size=vocab)
    eos, pad = stop_tokens(model, tokenizer)
    pad = pad if pad is not None else 0
    run = {
        "engine": lambda rows: _engine_batches(model, rows, config, eos, tokenizer),
        "hf": lambda rows: _hf_batches(model, rows, config, eos, pad),
    }
    first_batch = prompts[: max(1, config.batch_size // config.n_per_prompt)]
    results = {}
    for method in config.method_list():
        if config.warmup:
            run[method](first_batch)
        if config.profile:
            _profile(lambda m=method: run[m](first_batch), device, out / f"profile-{method}.txt")
        synchronize(device)
        start = time.perf_counter()
        new_tokens = run[method](prompts)
        synchronize(device)
        seconds = time.perf_counter() - start
        results[method] = {"new_tokens": new_tokens, "seconds": round(seconds, 3),
                           "tokens_per_s": round(new_tokens / seconds, 1)}  # fmt: skip
        if device.type == "cuda":
            results[method]["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
    report = {
        "config": {**asdict(config), "sampling": config.sampling.to_dict()},
        "sequences": len(prompts) * config.n_per_prompt,
        "results": results,
        "environment": environment(device),
    }
    (out / "throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _profile(work, device: torch.device, path: Path) -> None:
    """Run ``work()`` under ``torch.profiler`` and write its operator table, most expensive first."""
    from torch.profiler import profile

    with profile(activities=profiler_activities(device)) as prof:
        work()
        synchronize(device)
    path.write_text(operator_table(prof, device))


def describe(report: dict) -> str:
    """One line per method: new tokens per second, and the engine's ratio to ``transformers``."""
    lines = [f"{report['sequences']} sequences on {report['environment']['device_name']}"]
    results = report["results"]
    for method, r in results.items():
        lines.append(f"{method:>7}: {r['new_tokens']} new tokens in {r['seconds']:.2f} s = {r['tokens_per_s']:,.0f}/s")
    if "engine" in results and "hf" in results:
        lines.append(f"engine / hf: {results['engine']['tokens_per_s'] / results['hf']['tokens_per_s']:.2f}x")
    return "\n".join(lines)
