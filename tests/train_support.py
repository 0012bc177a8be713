"""Helpers of the data and training tests: tiny teachers, pregenerated data directories, quick distill configs."""

from __future__ import annotations

from pathlib import Path

import torch

import ptp
from conftest import tiny_base
from ptp.data import Document, PregenerateConfig, pregenerate
from ptp.train import DistillConfig

#: A sampling configuration with every part of S switched on, so that bins depend on top-k and top-p too.
SAMPLING = ptp.SamplingConfig(temperature=0.9, top_k=40, top_p=0.95)


def reference(model, input_ids, attention_mask=None, *, auxiliaries, sampling=SAMPLING, eos_token_id=None):
    """``ptp.sample_autoregressive`` under a SamplingConfig: the ground truth that every sampler must equal."""
    return ptp.sample_autoregressive(
        model,
        input_ids,
        attention_mask,
        auxiliaries=auxiliaries,
        max_new_tokens=auxiliaries.shape[1],
        sampling=sampling,
        eos_token_id=eos_token_id,
    )


def random_prompts(count: int, length: int = 5, seed: int = 0, vocab: int = 96) -> list[list[int]]:
    """Token-id prompts that avoid the special ids 0..2."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, length + 1, (count,), generator=generator).tolist()
    return [torch.randint(3, vocab, (n,), generator=generator).tolist() for n in lengths]


def make_data(
    path: Path, model=None, *, prompts: int = 6, n_per_prompt: int = 3, max_new_tokens: int = 12, **options
) -> Path:
    """A small pregenerated data directory from a tiny random Llama (no EOS, so completions have full length)."""
    model = model if model is not None else tiny_base("llama")
    config = PregenerateConfig(
        n_per_prompt=n_per_prompt,
        max_new_tokens=max_new_tokens,
        sampling=options.pop("sampling", SAMPLING),
        batch_size=options.pop("batch_size", 8),
        prompts_per_shard=options.pop("prompts_per_shard", 2),
        eos_token_id=options.pop("eos_token_id", []),
        **options,
    )
    return pregenerate(model, random_prompts(prompts), path, config, progress=False)


def quick_config(data: Path, out: Path, **overrides) -> DistillConfig:
    """A distillation run of a few CPU steps on tiny rows."""
    options = dict(
        data=str(data),
        out=str(out),
        window_length=4,
        lora_rank=4,
        windows_per_row=6,
        batch_size=2,
        row_length=48,
        max_steps=4,
        warmup_steps=1,
        learning_rate=1e-2,
        eval_interval=0,
        eval_fraction=0.2,
        eval_rows=4,
        log_interval=1,
        checkpoint_interval=2,
        progress=False,
        device="cpu",
    )
    options.update(overrides)
    return DistillConfig(**options)


def documents(*specs: tuple[list[int], int]) -> list[Document]:
    """Documents from ``(tokens, prompt_length)`` pairs, numbered as their own prompts."""
    return [Document(torch.tensor(tokens), prompt, i) for i, (tokens, prompt) in enumerate(specs)]
